//! The framed stream that carries uploaded files from the gateway to the
//! runner inside a session (`airlock-runner files unpack`).
//!
//! Multipart uploads do not say how big a file is before it has arrived, so
//! tar (which needs the size up front) does not fit; this format streams:
//! frames of `[tag: u8][len: u32 big-endian][payload]`:
//! `START` (JSON [`FileHeader`]), `DATA` (bytes), `END` (empty) per file, and
//! one `FINISH` (empty) at the very end. A stream that stops before `FINISH`
//! is an incomplete upload: the receiver deletes the partial file.

use serde::{Deserialize, Serialize};

/// The boundary of any `multipart/*` content type. Session downloads
/// answer `multipart/mixed` (one tar archive per requested path), which
/// form-data parsers do not look for themselves.
pub fn multipart_boundary(content_type: &str) -> Option<String> {
    let m: mime::Mime = content_type.parse().ok()?;
    (m.type_() == mime::MULTIPART)
        .then(|| m.get_param(mime::BOUNDARY).map(|b| b.as_str().to_owned()))
        .flatten()
}

/// A file begins; payload is a JSON [`FileHeader`].
pub const START: u8 = 1;
/// File data.
pub const DATA: u8 = 2;
/// The current file is complete.
pub const END: u8 = 3;
/// The whole upload is complete.
pub const FINISH: u8 = 4;

/// Largest payload of one frame.
pub const MAX_FRAME: usize = 1 << 20;

/// Header of one uploaded file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    /// Destination, relative to the home directory.
    pub path: String,
    /// Permission bits (default 0644).
    #[serde(default = "default_mode")]
    pub mode: u32,
}

fn default_mode() -> u32 {
    0o644
}

/// Encodes one frame header (the payload follows).
pub fn frame_header(tag: u8, len: usize) -> [u8; 5] {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [tag, len[0], len[1], len[2], len[3]]
}

/// Encodes a whole frame.
pub fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 5);
    v.extend_from_slice(&frame_header(tag, payload.len()));
    v.extend_from_slice(payload);
    v
}

/// Decodes a frame header.
pub fn parse_header(h: [u8; 5]) -> (u8, usize) {
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    (h[0], usize::try_from(len).unwrap_or(usize::MAX))
}

/// Whether a user-supplied relative path is acceptable: not empty, no `..`,
/// no NUL. Absolute paths are allowed only under `home` and are returned
/// relative to it.
pub fn confine(path: &str, home: &str) -> Result<String, String> {
    if path.contains('\0') {
        return Err(format!("{path:?}: the path contains a NUL byte"));
    }
    let rel = if let Some(rest) = path.strip_prefix(home) {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(format!("{path:?} is outside {home}"));
        }
        rest.trim_start_matches('/')
    } else if path.starts_with('/') {
        return Err(format!(
            "{path:?} is outside {home}; use a path relative to it"
        ));
    } else {
        path
    };
    let rel = rel.trim_start_matches("./");
    let mut parts = Vec::new();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "{path:?} contains '..'; paths must stay inside {home}"
                ));
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_of_mixed() {
        assert_eq!(
            multipart_boundary("multipart/mixed; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(multipart_boundary("text/plain"), None);
    }

    #[test]
    fn frames_round_trip() {
        let f = frame(DATA, b"hello");
        let (tag, len) = parse_header([f[0], f[1], f[2], f[3], f[4]]);
        assert_eq!((tag, len), (DATA, 5));
        assert_eq!(&f[5..], b"hello");
    }

    #[test]
    fn confinement() {
        let h = "/home/work";
        assert_eq!(confine("id_container", h).unwrap(), "id_container");
        assert_eq!(confine("./a//b/", h).unwrap(), "a/b");
        assert_eq!(
            confine("/home/work/id_container", h).unwrap(),
            "id_container"
        );
        assert_eq!(confine("/home/work", h).unwrap(), "");
        assert!(confine("/home/workers/x", h).is_err());
        assert!(confine("/etc/passwd", h).is_err());
        assert!(confine("../etc/passwd", h).is_err());
        assert!(confine("a/../../b", h).is_err());
        assert!(confine("a\0b", h).is_err());
    }
}
