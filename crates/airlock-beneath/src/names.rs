//! File names as strings, without loss.
//!
//! A Unix file name is bytes; JSON, URLs, HTML and russh_sftp's packets
//! hold strings. Every name shown by this crate (and by the runner's SFTP
//! server) is [`escape`]d: each byte that is not part of valid UTF-8
//! becomes one private-use character (U+10FE80 + byte − 0x80), and a path
//! from a user is [`unescape`]d back to those bytes before it is looked
//! up. So a name that is not UTF-8 is listed, downloaded, renamed and
//! deleted like any other. A name that already holds one of those 128
//! characters reads as the byte it stands for; nothing else changes.

/// The first escape character's code point, less 0x80.
const ESCAPE_BASE: u32 = 0x10_FE00;

/// `bytes` as a string: UTF-8 as is, any other byte escaped.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for &b in chunk.invalid() {
            out.push(char::from_u32(ESCAPE_BASE + u32::from(b)).unwrap_or('\u{FFFD}'));
        }
    }
    out
}

/// The bytes an [`escape`]d string stands for.
pub fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        match u32::from(c).checked_sub(ESCAPE_BASE) {
            Some(b @ 0x80..=0xFF) => out.push(b as u8),
            _ => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// An [`escape`]d name for people: each escaped byte written `\xNN`,
/// everything else as is (the escapes themselves are private-use
/// characters that fonts do not draw).
pub fn display(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match u32::from(c).checked_sub(ESCAPE_BASE) {
            Some(b @ 0x80..=0xFF) => out.push_str(&format!("\\x{b:02X}")),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_round_trips_any_bytes() {
        for name in [
            &b"plain.txt"[..],
            b"caf\xc3\xa9",
            b"caf\xe9",
            b"\xff\xfe\x80",
            b"a\xf4\x8f\xbf\xbfb",
        ] {
            let s = escape(name);
            assert_eq!(unescape(&s), name, "{s:?}");
        }
        assert_eq!(escape(b"plain"), "plain");
        assert_eq!(escape("café".as_bytes()), "café");
        assert_ne!(escape(b"caf\xe9"), "caf\u{FFFD}");
        assert_eq!(display(&escape(b"caf\xe9 \xff")), "caf\\xE9 \\xFF");
        assert_eq!(display("café"), "café");
    }
}
