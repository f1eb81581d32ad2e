//! Retention (which ended recordings go) and reading a recording's extent from its last Ogg page.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::meta::RecordingId;
use crate::broadcast::ogg::PRE_SKIP;

/// A recording as retention sees it.
pub(super) struct Candidate {
    pub id: RecordingId,
    /// `None` while it runs: never deleted, but its bytes count.
    pub ended_at_ms: Option<u64>,
    pub bytes: u64,
}

/// The recordings to delete, and why: ended ones older than `max_age_ms` (`"age"`), then, oldest first
/// (ids sort by start), ended ones while all together exceed `max_total_bytes` (`"size"`). 0: no limit.
pub(super) fn select(
    recordings: &[Candidate],
    now_ms: u64,
    max_age_ms: u64,
    max_total_bytes: u64,
) -> Vec<(RecordingId, &'static str)> {
    let mut sorted: Vec<&Candidate> = recordings.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut doomed = Vec::new();
    let mut kept = Vec::new();
    for c in sorted {
        match c.ended_at_ms {
            Some(end) if max_age_ms > 0 && now_ms.saturating_sub(end) > max_age_ms => {
                doomed.push((c.id.clone(), "age"))
            }
            _ => kept.push(c),
        }
    }
    if max_total_bytes > 0 {
        let mut total: u64 = kept.iter().map(|c| c.bytes).sum();
        for c in kept {
            if total <= max_total_bytes {
                break;
            }
            if c.ended_at_ms.is_some() {
                total -= c.bytes;
                doomed.push((c.id.clone(), "size"));
            }
        }
    }
    doomed
}

/// How far an Ogg Opus file is valid: the end of its last whole page, in bytes, and its granule position
/// less the pre-skip, in samples. (0, 0) if it cannot be read.
pub(super) fn ogg_extent(path: &Path) -> (u64, u64) {
    const TAIL: u64 = 256 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return (0, 0);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL);
    let mut tail = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut tail).is_err() {
        return (0, 0);
    }
    last_page(&tail).map_or((0, 0), |(end, granule)| {
        (
            start + end as u64,
            granule.saturating_sub(u64::from(PRE_SKIP)),
        )
    })
}

/// The end and granule position of the last whole page in `data`.
fn last_page(data: &[u8]) -> Option<(usize, u64)> {
    let mut at = 0;
    let mut last = None;
    while let Some(i) = data[at..].windows(4).position(|w| w == b"OggS") {
        let page = at + i;
        let Some(header) = data.get(page..page + 27) else {
            break;
        };
        let segments = header[26] as usize;
        let Some(lacing) = data.get(page + 27..page + 27 + segments) else {
            break;
        };
        let end = page + 27 + segments + lacing.iter().map(|&l| l as usize).sum::<usize>();
        if end > data.len() {
            break;
        }
        let mut granule = [0u8; 8];
        granule.copy_from_slice(&header[6..14]);
        let granule = u64::from_le_bytes(granule);
        last = Some((end, granule));
        at = end;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broadcast::ogg::OggStream;

    fn id(n: u64) -> RecordingId {
        format!("{n:020x}").parse().expect("20 hex digits")
    }

    #[test]
    fn retention_deletes_old_then_oldest_ended_until_under_the_limit() {
        let c = |n, end, bytes| Candidate {
            id: id(n),
            ended_at_ms: end,
            bytes,
        };
        let all = [
            c(1, Some(1_000), 100),
            c(2, Some(50_000), 100),
            c(3, Some(60_000), 100),
            c(4, None, 500),
        ];
        assert!(select(&all, 100_000, 0, 0).is_empty(), "no limits");
        assert_eq!(select(&all, 100_000, 60_000, 0), vec![(id(1), "age")]);
        // 800 bytes, limit 650: the oldest ended ones go (2, then 3); the running one never does.
        assert_eq!(
            select(&all, 100_000, 60_000, 650),
            vec![(id(1), "age"), (id(2), "size")]
        );
        assert_eq!(
            select(&all, 100_000, 0, 100),
            vec![(id(1), "size"), (id(2), "size"), (id(3), "size")]
        );
    }

    #[test]
    fn the_extent_is_the_last_whole_page() {
        let mut s = OggStream::new(7);
        let mut data = s.header_pages("t").to_vec();
        data.extend_from_slice(&s.audio_page(312 + 960, &[&[1, 2, 3]]));
        let whole = data.len();
        data.extend_from_slice(&s.audio_page(312 + 1920, &[&[4, 5, 6]])[..20]);
        assert_eq!(last_page(&data), Some((whole, 312 + 960)));
    }
}
