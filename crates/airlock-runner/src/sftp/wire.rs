//! SFTP v3 wire encoding: strings, the one STATUS encoder, DATA replies,
//! errno mapping.

use std::io::ErrorKind;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use russh_sftp::protocol::{Packet, StatusCode};
use russh_sftp::server::StatusReply;
use tracing::warn;

pub(super) const FXP_READ: u8 = 5;
pub(super) const FXP_WRITE: u8 = 6;
const FXP_STATUS: u8 = 101;
const FXP_DATA: u8 = 103;
const FXP_NAME: u8 = 104;

/// A STATUS reply, encoded: the one place that encodes a STATUS.
pub(super) fn status_bytes(id: u32, code: StatusCode, msg: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(32 + msg.len());
    let body_len = 1 + 4 + 4 + 4 + msg.len() + 4 + 2;
    b.put_u32(u32::try_from(body_len).unwrap_or(u32::MAX));
    b.put_u8(FXP_STATUS);
    b.put_u32(id);
    b.put_u32(code as u32);
    put_str(&mut b, msg.as_bytes());
    put_str(&mut b, b"en");
    b.freeze()
}

pub(super) fn put_str(b: &mut BytesMut, s: &[u8]) {
    b.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    b.put_slice(s);
}

pub(super) fn get_str(b: &mut Bytes) -> Option<Bytes> {
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_u32() as usize;
    if b.remaining() < n {
        return None;
    }
    Some(b.split_to(n))
}

/// A string field, its bytes kept (see [`escape`]).
pub(super) fn get_string(b: &mut Bytes) -> Option<String> {
    get_str(b).map(|s| escape(&s))
}

// File names are bytes; russh_sftp's packets hold `String`s, decoded
// lossily. So names travel through it escaped (`airlock_beneath::names`,
// the same escape the files pages and `files ls` use), are turned back into
// bytes where a path is used ([`unescape`]) and when a NAME reply is
// encoded ([`name_bytes`]).
pub(super) use airlock_beneath::names::{escape, unescape};

/// A request (type byte first) whose path strings russh_sftp can decode
/// without loss: each of them [`escape`]d. Requests without such names
/// come back as they are.
pub(super) fn escape_request(bytes: Bytes) -> Bytes {
    // How many strings follow the request id before other fields.
    let strings = match bytes.first() {
        // OPEN, LSTAT, SETSTAT, OPENDIR, REMOVE, MKDIR, RMDIR, REALPATH,
        // STAT, READLINK: one path first.
        Some(3 | 7 | 9 | 11 | 13 | 14 | 15 | 16 | 17 | 19) => 1,
        // RENAME, SYMLINK: two.
        Some(18 | 20) => 2,
        _ => return bytes,
    };
    let mut rest = bytes.slice(1..);
    if rest.remaining() < 4 {
        return bytes;
    }
    let id = rest.get_u32();
    let mut fields = Vec::with_capacity(strings);
    for _ in 0..strings {
        match get_str(&mut rest) {
            Some(f) => fields.push(f),
            None => return bytes,
        }
    }
    if fields.iter().all(|f| std::str::from_utf8(f).is_ok()) {
        return bytes;
    }
    let mut out = BytesMut::with_capacity(bytes.len() + 16);
    out.put_u8(bytes[0]);
    out.put_u32(id);
    for f in &fields {
        put_str(&mut out, escape(f).as_bytes());
    }
    out.put_slice(&rest);
    out.freeze()
}

/// A NAME reply with each name and long name as the bytes it stands for
/// (see [`escape`]); attributes as russh_sftp encodes them.
fn name_bytes(n: &russh_sftp::protocol::Name) -> Result<Bytes, String> {
    let mut body = BytesMut::new();
    body.put_u8(FXP_NAME);
    body.put_u32(n.id);
    body.put_u32(u32::try_from(n.files.len()).map_err(|e| e.to_string())?);
    for f in &n.files {
        put_str(&mut body, &unescape(&f.filename));
        put_str(&mut body, &unescape(&f.longname));
        // ATTRS reply = length, type, id, then the attributes.
        let attrs = Bytes::try_from(Packet::Attrs(russh_sftp::protocol::Attrs {
            id: 0,
            attrs: f.attrs.clone(),
        }))
        .map_err(|e| e.to_string())?;
        body.put_slice(attrs.get(9..).ok_or("short ATTRS encoding")?);
    }
    let mut out = BytesMut::with_capacity(4 + body.len());
    out.put_u32(u32::try_from(body.len()).map_err(|e| e.to_string())?);
    out.put_slice(&body);
    Ok(out.freeze())
}

/// The STATUS reply for a handler error (its message, or the code's).
pub(super) fn status_reply_bytes(id: u32, e: &StatusReply) -> Bytes {
    let msg = e
        .error_message
        .as_deref()
        .unwrap_or_else(|| message_of(e.status_code));
    status_bytes(id, e.status_code, msg)
}

/// Encode a reply packet; a STATUS goes through [`status_bytes`].
pub(super) fn encode(p: Packet) -> Bytes {
    if let Packet::Status(s) = &p {
        return status_bytes(s.id, s.status_code, &s.error_message);
    }
    if let Packet::Name(n) = &p {
        return match name_bytes(n) {
            Ok(b) => b,
            Err(e) => {
                warn!("sftp: cannot encode a NAME reply: {e}");
                status_bytes(n.id, StatusCode::Failure, "encoding failure")
            }
        };
    }
    match Bytes::try_from(p) {
        Ok(b) => b,
        Err(e) => {
            warn!("sftp: cannot encode reply: {e}");
            status_bytes(0, StatusCode::Failure, "encoding failure")
        }
    }
}

/// Map an I/O error to an SFTP status (as OpenSSH's sftp-server does).
pub fn status_of(e: &std::io::Error) -> StatusReply {
    let code = match e.raw_os_error() {
        Some(n) => match nix::errno::Errno::from_raw(n) {
            nix::errno::Errno::ENOENT
            | nix::errno::Errno::ENOTDIR
            | nix::errno::Errno::EBADF
            | nix::errno::Errno::ELOOP => StatusCode::NoSuchFile,
            nix::errno::Errno::EPERM | nix::errno::Errno::EACCES | nix::errno::Errno::EFAULT => {
                StatusCode::PermissionDenied
            }
            nix::errno::Errno::ENAMETOOLONG | nix::errno::Errno::EINVAL => StatusCode::BadMessage,
            nix::errno::Errno::ENOSYS => StatusCode::OpUnsupported,
            _ => StatusCode::Failure,
        },
        None => match e.kind() {
            ErrorKind::NotFound => StatusCode::NoSuchFile,
            ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
            ErrorKind::Unsupported => StatusCode::OpUnsupported,
            _ => StatusCode::Failure,
        },
    };
    StatusReply::new(code).with_message(message_of(code))
}

pub(super) fn message_of(code: StatusCode) -> &'static str {
    match code {
        StatusCode::Ok => "Success",
        StatusCode::Eof => "End of file",
        StatusCode::NoSuchFile => "No such file",
        StatusCode::PermissionDenied => "Permission denied",
        StatusCode::Failure => "Failure",
        StatusCode::BadMessage => "Bad message",
        StatusCode::NoConnection => "No connection",
        StatusCode::ConnectionLost => "Connection lost",
        StatusCode::OpUnsupported => "Operation unsupported",
    }
}

/// A handler error with the code's standard message.
pub(super) fn err(code: StatusCode) -> StatusReply {
    StatusReply::new(code).with_message(message_of(code))
}

/// The reply to a READ from its finished blocking read (see
/// `ReadSpec::start`: 13 header bytes reserved in front of the data).
pub(super) fn read_reply(
    id: u32,
    r: Result<std::io::Result<(BytesMut, usize)>, tokio::task::JoinError>,
) -> Bytes {
    let (mut buf, got) = match r {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return status_reply_bytes(id, &status_of(&e)),
        Err(_) => return status_reply_bytes(id, &err(StatusCode::Failure)),
    };
    if got == 0 {
        return status_reply_bytes(id, &err(StatusCode::Eof));
    }
    let total = u32::try_from(9 + got).unwrap_or(u32::MAX);
    let dlen = u32::try_from(got).unwrap_or(u32::MAX);
    buf[0..4].copy_from_slice(&total.to_be_bytes());
    buf[4] = FXP_DATA;
    buf[5..9].copy_from_slice(&id.to_be_bytes());
    buf[9..13].copy_from_slice(&dlen.to_be_bytes());
    buf.freeze()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn errno_mapping() {
        let e = std::io::Error::from_raw_os_error(nix::libc::ENOENT);
        assert_eq!(status_of(&e).status_code, StatusCode::NoSuchFile);
        let e = std::io::Error::from_raw_os_error(nix::libc::EACCES);
        assert_eq!(status_of(&e).status_code, StatusCode::PermissionDenied);
        let e = std::io::Error::from_raw_os_error(nix::libc::EEXIST);
        assert_eq!(status_of(&e).status_code, StatusCode::Failure);
    }

    #[test]
    fn requests_with_byte_names_are_escaped_for_decoding() {
        // STAT id=7 path="caf\xe9"
        let mut raw = BytesMut::new();
        raw.put_u8(17);
        raw.put_u32(7);
        put_str(&mut raw, b"caf\xe9");
        let mut escaped = escape_request(raw.freeze());
        #[allow(clippy::panic)]
        let Packet::Stat(p) = Packet::try_from(&mut escaped).unwrap() else {
            panic!("not a STAT");
        };
        assert_eq!(p.id, 7);
        assert_eq!(unescape(&p.path), b"caf\xe9");
        // UTF-8 requests are left alone.
        let mut raw = BytesMut::new();
        raw.put_u8(17);
        raw.put_u32(8);
        put_str(&mut raw, "café".as_bytes());
        let raw = raw.freeze();
        assert_eq!(escape_request(raw.clone()), raw);
    }

    #[test]
    fn name_replies_carry_the_bytes() {
        let n = russh_sftp::protocol::Name {
            id: 3,
            files: vec![russh_sftp::protocol::File {
                filename: escape(b"x\xff"),
                longname: escape(b"-rw x\xff"),
                attrs: russh_sftp::protocol::FileAttributes::default(),
            }],
        };
        let b = encode(Packet::Name(n));
        let needle: &[u8] = b"\x00\x00\x00\x02x\xff";
        assert!(b.windows(needle.len()).any(|w| w == needle), "{b:?}");
        assert_eq!(b[4], FXP_NAME);
    }
}
