//! HTTP range requests on a recording's file (RFC 9110 §14): one `bytes` range, `If-Range` against the
//! strong ETag.

/// What to send of a representation of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranged {
    /// 200, all of it (no Range, a unit other than bytes, several ranges, or an `If-Range` that does not
    /// match).
    Full,
    /// 206, bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 416: a bytes range that is malformed or starts past the end.
    Unsatisfiable,
}

/// Decide from the `Range` header value (if any), the file's length, and whether `If-Range` (if sent)
/// matches.
pub fn ranged(range: Option<&str>, len: u64, if_range_matches: bool) -> Ranged {
    let Some(range) = range else {
        return Ranged::Full;
    };
    if !if_range_matches {
        return Ranged::Full;
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Ranged::Full; // a unit we do not serve is ignored
    };
    if spec.contains(',') {
        return Ranged::Full; // several ranges: served whole (RFC 9110 allows ignoring Range)
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Unsatisfiable;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            Some(n) if n > 0 && len > 0 => Ranged::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            _ => Ranged::Unsatisfiable,
        },
        (first, "") => match number(first) {
            Some(start) if start < len => Ranged::Partial {
                start,
                end: len - 1,
            },
            _ => Ranged::Unsatisfiable,
        },
        (first, last) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start <= end && start < len => Ranged::Partial {
                start,
                end: end.min(len - 1),
            },
            _ => Ranged::Unsatisfiable,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        use Ranged::*;
        assert_eq!(ranged(None, 100, true), Full);
        assert_eq!(
            ranged(Some("bytes=0-9"), 100, true),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            ranged(Some("bytes=90-"), 100, true),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            ranged(Some("bytes=-10"), 100, true),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            ranged(Some("bytes=-500"), 100, true),
            Partial { start: 0, end: 99 }
        );
        assert_eq!(
            ranged(Some("bytes=50-500"), 100, true),
            Partial { start: 50, end: 99 }
        );
        assert_eq!(ranged(Some("bytes=100-"), 100, true), Unsatisfiable);
        assert_eq!(ranged(Some("bytes=200-300"), 100, true), Unsatisfiable);
        assert_eq!(ranged(Some("bytes=9-0"), 100, true), Unsatisfiable);
        assert_eq!(ranged(Some("bytes=abc"), 100, true), Unsatisfiable);
        assert_eq!(ranged(Some("bytes=-0"), 100, true), Unsatisfiable);
        assert_eq!(ranged(Some("bytes=+1-2"), 100, true), Unsatisfiable);
        assert_eq!(ranged(Some("items=0-9"), 100, true), Full);
        assert_eq!(ranged(Some("bytes=0-1,5-6"), 100, true), Full);
        assert_eq!(
            ranged(Some("bytes=0-9"), 100, false),
            Full,
            "If-Range did not match"
        );
        assert_eq!(ranged(Some("bytes=0-"), 0, true), Unsatisfiable);
    }
}
