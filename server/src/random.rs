//! Random identifiers the server hands out (session resources, endpoints, entity tags, SRTP keys): hex of the system's
//! random source, and the check that a path segment has the shape of one.

/// `n` random bytes (secrets too: the system's random source).
pub fn bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut buf).expect("the system random source is available");
    buf
}

/// `bytes` random bytes as lowercase hex.
pub fn hex(bytes: usize) -> String {
    self::bytes(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `s` is `chars` lowercase hex digits (what [`hex`] makes of `chars / 2` bytes).
pub fn is_hex(s: &str, chars: usize) -> bool {
    s.len() == chars
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_hex_has_its_shape_and_differs() {
        let (a, b) = (super::hex(16), super::hex(16));
        assert!(super::is_hex(&a, 32) && a != b);
        assert!(!super::is_hex("../../etc/passwd", 16));
        assert!(!super::is_hex("0123456789ABCDEF", 16));
    }
}
