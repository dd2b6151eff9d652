//! In-process SFTP v3 server on russh-sftp's protocol types.
//!
//! The filesystem handler implements [`russh_sftp::server::Handler`]; the
//! request loop is ours so that (a) the channel is always drained into a
//! bounded buffer (docs/ssh-server-notes.md N1), (b) the subsystem ends with
//! exit-status 0 + EOF + close (N2), (c) oversized packets are consumed
//! instead of desynchronising the stream, and (d) READ/WRITE, the hot path,
//! avoid extra copies.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, Metadata};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use russh::server::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File as SftpFile, FileAttributes, Handle, Name, OpenFlags, Packet,
    Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::passwd::NameMaps;

/// Largest request packet accepted (limits@openssh.com advertises less).
pub const MAX_PACKET: u32 = 512 * 1024 + 1024;
/// Advertised max packet length.
pub const LIMIT_PACKET: u64 = 256 * 1024;
/// Advertised max read/write length.
pub const LIMIT_RW: u64 = 255 * 1024;
/// READs the writer runs ahead of the reply it is sending (bounds read memory).
const READ_AHEAD: usize = 32;
/// Weight of a queued READ in the reply backlog.
const READ_WEIGHT: usize = 64;
/// Bytes of unsent replies after which a client is deemed not to read them.
const REPLY_BACKLOG: usize = 64 * 1024 * 1024;
/// Entries per READDIR reply.
const DIR_BATCH: usize = 100;

const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_STATUS: u8 = 101;
const FXP_DATA: u8 = 103;

/// Serve the sftp subsystem on a session channel until the client is done.
pub(crate) async fn serve_channel(
    mut rx: ChannelReadHalf,
    tx: Arc<ChannelWriteHalf<Msg>>,
    home: &Path,
    early: Vec<Bytes>,
    early_eof: bool,
    peer: std::net::SocketAddr,
    backlog: crate::queue::Backlog,
) {
    // (1) Reader: drains the channel into the connection's accounted queue
    // and never waits on the request loop (queue.rs: no channel reader
    // waits on anything but the channel).
    let (qtx, drain) = backlog.queue::<Bytes>();
    for b in early {
        let n = b.len();
        let _ = qtx.push(b, n);
    }
    let pump = tokio::spawn(async move {
        let mut qtx = (!early_eof).then_some(qtx);
        loop {
            match rx.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    let n = data.len();
                    if let Some(q) = &qtx
                        && q.push(data, n).is_err()
                    {
                        qtx = None;
                    }
                }
                Some(ChannelMsg::Eof) => qtx = None,
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
    });
    let pump_r = tokio_util::io::StreamReader::new(futures_util::stream::unfold(
        drain,
        |mut d| async move { d.recv().await.map(|b| (Ok::<_, std::io::Error>(b), d)) },
    ));

    // (2) Writer: responses go out in request order from their own task.
    //
    // Root cause of the psftp upload stall (issue 13): russh grants the
    // client more channel window as soon as data *arrives*, and then its
    // session loop awaits a bounded send of that data to us; so the only
    // backpressure russh has is to stop its whole loop. This loop used to
    // await a bounded reply queue whenever the writer was behind, and the
    // writer waits for window from the client — a CHANNEL_WINDOW_ADJUST that
    // only the session loop can read. A client that pipelines many WRITEs
    // and runs a small receive window (PuTTY's psftp, FileZilla, WinSCP)
    // closed the cycle: writer waits for window -> request loop waits for
    // the writer -> the 32 MiB pump buffer fills -> the session loop waits
    // for the pump -> the window adjust is never read. Forever.
    //
    // The fix: the request loop never waits on output. Replies go into an
    // unbounded queue (each reply is small and caused by input already
    // consumed); READs are queued as *specifications* and the writer starts
    // at most READ_AHEAD of them, so read memory stays bounded while the
    // writer waits for window. The queue's bytes are counted; a client that
    // leaves more than REPLY_BACKLOG bytes of replies unread is ended (no
    // waiting, so no cycle), which no working client comes near.
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Reply>();
    let backlog = Arc::new(AtomicUsize::new(0));
    let wbacklog = backlog.clone();
    let wtx = tx.clone();
    let writer = tokio::spawn(async move {
        let mut ok = true;
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut reads = 0usize;
        let mut open = true;
        loop {
            // Start queued READs, up to the read-ahead bound.
            while open && reads < READ_AHEAD {
                match out_rx.try_recv() {
                    Ok(r) => {
                        if matches!(r, Reply::Read(..)) {
                            reads += 1;
                        }
                        pending.push_back(Pending::start(r));
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => open = false,
                }
            }
            let next = match pending.pop_front() {
                Some(p) => p,
                None if open => match out_rx.recv().await {
                    Some(r) => {
                        if matches!(r, Reply::Read(..)) {
                            reads += 1;
                        }
                        pending.push_back(Pending::start(r));
                        continue;
                    }
                    None => break,
                },
                None => break,
            };
            let (b, weight) = match next {
                Pending::Ready(b) => {
                    let w = b.len();
                    (b, w)
                }
                Pending::Read(id, h) => {
                    reads -= 1;
                    (read_reply(id, h.await), READ_WEIGHT)
                }
            };
            wbacklog.fetch_sub(weight, Ordering::Relaxed);
            if ok && wtx.data_bytes(b).await.is_err() {
                ok = false;
            }
        }
        ok
    });
    let queue_reply = |r: Reply| -> bool {
        let weight = r.weight();
        if backlog.fetch_add(weight, Ordering::Relaxed) + weight > REPLY_BACKLOG {
            warn!("sftp: client leaves over {REPLY_BACKLOG} bytes of replies unread; ending");
            return false;
        }
        out_tx.send(r).is_ok()
    };

    // (3) Request loop.
    let mut fs = FsHandler::new(home.to_path_buf());
    fs.peer = Some(peer);
    let mut input = std::pin::pin!(pump_r);
    while let Ok(len) = input.read_u32().await {
        if len == 0 {
            continue;
        }
        if len > MAX_PACKET {
            // Consume the body so the stream stays in sync, answer with an error.
            let mut head = [0u8; 5];
            if input.read_exact(&mut head).await.is_err() {
                break;
            }
            let id = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
            let mut rest = u64::from(len) - 5;
            let mut sink = vec![0u8; 64 * 1024];
            while rest > 0 {
                let n = usize::try_from(rest.min(64 * 1024)).unwrap_or(64 * 1024);
                if input.read_exact(&mut sink[..n]).await.is_err() {
                    break;
                }
                rest -= n as u64;
            }
            warn!("sftp: packet of {len} bytes refused");
            if !queue_reply(Reply::Ready(status_bytes(
                id,
                StatusCode::BadMessage,
                "packet too long",
            ))) {
                break;
            }
            continue;
        }
        let mut buf = BytesMut::zeroed(len as usize);
        if input.read_exact(&mut buf).await.is_err() {
            break;
        }
        let bytes = buf.freeze();
        let reply = fs.process(bytes).await;
        if let Some(r) = reply
            && !queue_reply(r)
        {
            break;
        }
    }
    drop(out_tx);
    let delivered = writer.await.unwrap_or(false);
    pump.abort();
    fs.close_all();
    // (docs/ssh-server-notes.md N2) exit-status 0, EOF, close: scp/sftp then exit 0.
    if delivered {
        let _ = tx.exit_status(0).await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
    }
    debug!("sftp session ended");
}

fn status_bytes(id: u32, code: StatusCode, msg: &str) -> Bytes {
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

fn put_str(b: &mut BytesMut, s: &[u8]) {
    b.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    b.put_slice(s);
}

fn get_str(b: &mut Bytes) -> Option<Bytes> {
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_u32() as usize;
    if b.remaining() < n {
        return None;
    }
    Some(b.split_to(n))
}

fn get_string(b: &mut Bytes) -> Option<String> {
    get_str(b).map(|s| String::from_utf8_lossy(&s).into_owned())
}

fn encode(p: Packet) -> Bytes {
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

fn message_of(code: StatusCode) -> &'static str {
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

fn err(code: StatusCode) -> StatusReply {
    StatusReply::new(code).with_message(message_of(code))
}

fn ok_status(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Success".into(),
        language_tag: "en".into(),
    }
}

/// File attributes built from `st_mode` (not from `Metadata::is_dir`, which
/// loses fifos, sockets and devices — docs/ssh-server-notes.md N6).
pub fn attrs_of(m: &Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(m.size()),
        uid: Some(m.uid()),
        user: None,
        gid: Some(m.gid()),
        group: None,
        permissions: Some(m.mode()),
        atime: Some(clamp_time(m.atime())),
        mtime: Some(clamp_time(m.mtime())),
    }
}

fn clamp_time(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

/// `ls -l` style mode string (like BSD strmode, without the trailing space).
pub fn mode_string(mode: u32) -> String {
    let t = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(match (mode & 0o100 != 0, mode & 0o4000 != 0) {
        (true, true) => 's',
        (false, true) => 'S',
        (true, false) => 'x',
        (false, false) => '-',
    });
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(match (mode & 0o010 != 0, mode & 0o2000 != 0) {
        (true, true) => 's',
        (false, true) => 'S',
        (true, false) => 'x',
        (false, false) => '-',
    });
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(match (mode & 0o001 != 0, mode & 0o1000 != 0) {
        (true, true) => 't',
        (false, true) => 'T',
        (true, false) => 'x',
        (false, false) => '-',
    });
    s
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Civil date (UTC) from a unix time: (year, month 1-12, day, hour, minute).
fn civil(t: i64) -> (i64, usize, i64, i64, i64) {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        usize::try_from(m).unwrap_or(1),
        d,
        secs / 3600,
        (secs % 3600) / 60,
    )
}

/// OpenSSH `ls_file` style long name:
/// `-rw-r--r--    1 work     work         1234 Jan  5 12:00 name`.
pub fn longname(name: &str, m: &Metadata, names: &NameMaps, now: i64) -> String {
    let user = names.user(m.uid());
    let group = names.group(m.gid());
    let mtime = m.mtime();
    let (y, mo, d, h, mi) = civil(mtime);
    let month = MONTHS[(mo.clamp(1, 12)) - 1];
    const SIX_MONTHS: i64 = 365 * 24 * 3600 / 2;
    let date = if mtime > now - SIX_MONTHS && mtime <= now + 3600 {
        format!("{month} {d:>2} {h:02}:{mi:02}")
    } else {
        format!("{month} {d:>2}  {y}")
    };
    format!(
        "{}  {:>3} {:<8} {:<8} {:>8} {} {}",
        mode_string(m.mode()),
        m.nlink(),
        user,
        group,
        m.size(),
        date,
        name
    )
}

enum OpenHandle {
    File {
        file: Arc<File>,
        /// As opened (for the audit trail).
        path: PathBuf,
        /// Opened for writing.
        write: bool,
    },
    Dir {
        path: PathBuf,
        iter: Option<std::fs::ReadDir>,
        dots_sent: bool,
    },
}

/// A response, possibly still to be read from disk.
pub enum Reply {
    /// Encoded and ready.
    Ready(Bytes),
    /// A READ to answer (request id, what to read); the writer starts it.
    Read(u32, ReadSpec),
}

impl Reply {
    /// Bytes this reply holds while queued.
    fn weight(&self) -> usize {
        match self {
            Reply::Ready(b) => b.len(),
            Reply::Read(..) => READ_WEIGHT,
        }
    }
}

/// A READ request not yet started.
pub struct ReadSpec {
    file: Arc<File>,
    offset: u64,
    len: usize,
}

/// A reply in the writer's read-ahead window.
enum Pending {
    Ready(Bytes),
    Read(u32, ReadJob),
}

impl Pending {
    fn start(r: Reply) -> Pending {
        match r {
            Reply::Ready(b) => Pending::Ready(b),
            Reply::Read(id, spec) => Pending::Read(id, spec.start()),
        }
    }
}

impl ReadSpec {
    /// Run the blocking read.
    fn start(self) -> ReadJob {
        let ReadSpec { file, offset, len } = self;
        tokio::task::spawn_blocking(move || {
            let mut buf = BytesMut::zeroed(13 + len);
            let mut got = 0usize;
            while got < len {
                match file.read_at(&mut buf[13 + got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        if got == 0 {
                            return Err(e);
                        }
                        break;
                    }
                }
            }
            buf.truncate(13 + got);
            Ok((buf, got))
        })
    }
}

/// A blocking read: the buffer with 13 header bytes reserved, and the count.
pub type ReadJob = tokio::task::JoinHandle<std::io::Result<(BytesMut, usize)>>;

fn read_reply(
    id: u32,
    r: Result<std::io::Result<(BytesMut, usize)>, tokio::task::JoinError>,
) -> Bytes {
    let (mut buf, got) = match r {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            let s = status_of(&e);
            return status_bytes(
                id,
                s.status_code,
                s.error_message.as_deref().unwrap_or("Failure"),
            );
        }
        Err(_) => return status_bytes(id, StatusCode::Failure, "Failure"),
    };
    if got == 0 {
        return status_bytes(id, StatusCode::Eof, "End of file");
    }
    let total = u32::try_from(9 + got).unwrap_or(u32::MAX);
    let dlen = u32::try_from(got).unwrap_or(u32::MAX);
    buf[0..4].copy_from_slice(&total.to_be_bytes());
    buf[4] = FXP_DATA;
    buf[5..9].copy_from_slice(&id.to_be_bytes());
    buf[9..13].copy_from_slice(&dlen.to_be_bytes());
    buf.freeze()
}

/// The filesystem handler, rooted at nothing (absolute paths are served as
/// they are; relative paths are relative to `home`).
pub struct FsHandler {
    home: PathBuf,
    names: NameMaps,
    handles: HashMap<String, OpenHandle>,
    next: u64,
    /// The connection's peer: file operations go to the audit trail.
    pub peer: Option<std::net::SocketAddr>,
}

/// The attributes a SETSTAT changes, for the audit trail.
fn attrs_audit(a: &FileAttributes) -> serde_json::Value {
    serde_json::json!({
        "size": a.size,
        "mode": a.permissions.map(|m| format!("{:o}", m & 0o7777)),
        "uid": a.uid,
        "gid": a.gid,
        "mtime": a.mtime,
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

fn lexical_normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

impl FsHandler {
    /// A handler whose relative paths start at `home`.
    pub fn new(home: PathBuf) -> Self {
        FsHandler {
            home,
            names: NameMaps::load(),
            handles: HashMap::new(),
            next: 0,
            peer: None,
        }
    }

    /// Records a file operation of this connection.
    fn audit(&self, kind: &str, detail: serde_json::Value) {
        if let Some(peer) = self.peer {
            crate::audit::emit(peer, kind, detail);
        }
    }

    /// Records a closed file: `sftp.write`/`sftp.read` with its path and
    /// size at close.
    fn audit_closed(&self, h: &OpenHandle) {
        if let OpenHandle::File { file, path, write } = h {
            let size = file.metadata().map(|m| m.len()).ok();
            let kind = if *write { "sftp.write" } else { "sftp.read" };
            self.audit(
                kind,
                serde_json::json!({ "path": path.to_string_lossy(), "size": size }),
            );
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        if p.is_empty() {
            self.home.clone()
        } else if p.starts_with('/') {
            PathBuf::from(p)
        } else {
            self.home.join(p)
        }
    }

    fn add(&mut self, h: OpenHandle) -> String {
        self.next += 1;
        let s = self.next.to_string();
        self.handles.insert(s.clone(), h);
        s
    }

    fn file(&self, handle: &str) -> Result<Arc<File>, StatusReply> {
        match self.handles.get(handle) {
            Some(OpenHandle::File { file, .. }) => Ok(file.clone()),
            _ => Err(err(StatusCode::Failure).with_message("Invalid handle")),
        }
    }

    fn close_all(&mut self) {
        for h in self.handles.values() {
            self.audit_closed(h);
        }
        self.handles.clear();
    }

    fn canonical(&self, p: &str) -> PathBuf {
        let abs = self.path(p);
        match std::fs::canonicalize(&abs) {
            Ok(c) => c,
            Err(_) => lexical_normalize(&abs),
        }
    }

    fn expand(&self, p: &str) -> PathBuf {
        if p == "~" {
            return self.home.clone();
        }
        if let Some(rest) = p.strip_prefix("~/") {
            return self.home.join(rest);
        }
        if let Some(rest) = p.strip_prefix('~') {
            let (user, tail) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            if let Some(e) = crate::passwd::user_by_name(user) {
                return PathBuf::from(e.home).join(tail);
            }
        }
        self.path(p)
    }

    fn name_reply(id: u32, path: &Path) -> Name {
        let s = path.display().to_string();
        Name {
            id,
            files: vec![SftpFile {
                filename: s.clone(),
                longname: s,
                attrs: FileAttributes::default(),
            }],
        }
    }

    /// Handle one raw request packet (type byte first); `None` = no reply.
    pub async fn process(&mut self, mut bytes: Bytes) -> Option<Reply> {
        let ty = *bytes.first()?;
        if ty == FXP_READ || ty == FXP_WRITE {
            let mut b = bytes.slice(1..);
            if b.remaining() < 4 {
                return None;
            }
            let id = b.get_u32();
            let r = if ty == FXP_READ {
                self.start_read(b).map(|job| Reply::Read(id, job))
            } else {
                self.fast_write(id, b).await.map(Reply::Ready)
            };
            return Some(match r {
                Ok(r) => r,
                Err(e) => Reply::Ready(status_bytes(
                    id,
                    e.status_code,
                    e.error_message.as_deref().unwrap_or("Failure"),
                )),
            });
        }
        let packet = match Packet::try_from(&mut bytes) {
            Ok(p) => p,
            Err(e) => {
                warn!("sftp: bad request: {e}");
                return Some(Reply::Ready(status_bytes(
                    0,
                    StatusCode::BadMessage,
                    "Bad message",
                )));
            }
        };
        Some(Reply::Ready(encode(self.dispatch(packet).await)))
    }

    async fn dispatch(&mut self, packet: Packet) -> Packet {
        use russh_sftp::server::Handler as _;
        let id = packet.get_request_id();
        macro_rules! wrap {
            ($e:expr) => {
                match $e.await {
                    Ok(p) => p.into(),
                    Err(e) => {
                        let StatusReply {
                            status_code,
                            error_message,
                            ..
                        } = e;
                        Packet::Status(Status {
                            id,
                            status_code,
                            error_message: error_message
                                .unwrap_or_else(|| message_of(status_code).into()),
                            language_tag: "en".into(),
                        })
                    }
                }
            };
        }
        match packet {
            Packet::Init(p) => wrap!(self.init(p.version, p.extensions)),
            Packet::Open(p) => wrap!(self.open(p.id, p.filename, p.pflags, p.attrs)),
            Packet::Close(p) => wrap!(self.close(p.id, p.handle)),
            Packet::Read(p) => wrap!(self.read(p.id, p.handle, p.offset, p.len)),
            Packet::Write(p) => wrap!(self.write(p.id, p.handle, p.offset, p.data)),
            Packet::Lstat(p) => wrap!(self.lstat(p.id, p.path)),
            Packet::Fstat(p) => wrap!(self.fstat(p.id, p.handle)),
            Packet::SetStat(p) => wrap!(self.setstat(p.id, p.path, p.attrs)),
            Packet::FSetStat(p) => wrap!(self.fsetstat(p.id, p.handle, p.attrs)),
            Packet::OpenDir(p) => wrap!(self.opendir(p.id, p.path)),
            Packet::ReadDir(p) => wrap!(self.readdir(p.id, p.handle)),
            Packet::Remove(p) => wrap!(self.remove(p.id, p.filename)),
            Packet::MkDir(p) => wrap!(self.mkdir(p.id, p.path, p.attrs)),
            Packet::RmDir(p) => wrap!(self.rmdir(p.id, p.path)),
            Packet::RealPath(p) => wrap!(self.realpath(p.id, p.path)),
            Packet::Stat(p) => wrap!(self.stat(p.id, p.path)),
            Packet::Rename(p) => wrap!(self.rename(p.id, p.oldpath, p.newpath)),
            Packet::ReadLink(p) => wrap!(self.readlink(p.id, p.path)),
            Packet::Symlink(p) => wrap!(self.symlink(p.id, p.linkpath, p.targetpath)),
            Packet::Extended(p) => wrap!(self.extended(p.id, p.request, p.data)),
            _ => Packet::error(id, StatusCode::OpUnsupported),
        }
    }

    fn start_read(&mut self, mut b: Bytes) -> Result<ReadSpec, StatusReply> {
        let handle = get_str(&mut b).ok_or_else(|| err(StatusCode::BadMessage))?;
        if b.remaining() < 12 {
            return Err(err(StatusCode::BadMessage));
        }
        let offset = b.get_u64();
        let len = b.get_u32().min(u32::try_from(LIMIT_RW).unwrap_or(u32::MAX)) as usize;
        let file = self.file(&String::from_utf8_lossy(&handle))?;
        Ok(ReadSpec { file, offset, len })
    }

    async fn fast_write(&mut self, id: u32, mut b: Bytes) -> Result<Bytes, StatusReply> {
        let handle = get_str(&mut b).ok_or_else(|| err(StatusCode::BadMessage))?;
        if b.remaining() < 8 {
            return Err(err(StatusCode::BadMessage));
        }
        let offset = b.get_u64();
        let data = get_str(&mut b).ok_or_else(|| err(StatusCode::BadMessage))?;
        let file = self.file(&String::from_utf8_lossy(&handle))?;
        tokio::task::spawn_blocking(move || file.write_all_at(&data, offset))
            .await
            .map_err(|_| err(StatusCode::Failure))?
            .map_err(|e| status_of(&e))?;
        Ok(status_bytes(id, StatusCode::Ok, "Success"))
    }

    fn apply_attrs(
        &self,
        path: &Path,
        file: Option<&File>,
        a: &FileAttributes,
    ) -> std::io::Result<()> {
        if let Some(size) = a.size {
            match file {
                Some(f) => f.set_len(size)?,
                None => std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)?
                    .set_len(size)?,
            }
        }
        if let Some(mode) = a.permissions {
            let p = std::fs::Permissions::from_mode(mode & 0o7777);
            match file {
                Some(f) => f.set_permissions(p)?,
                None => std::fs::set_permissions(path, p)?,
            }
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let at = nix::sys::time::TimeVal::new(i64::from(a.atime.unwrap_or(0)), 0);
            let mt = nix::sys::time::TimeVal::new(i64::from(a.mtime.unwrap_or(0)), 0);
            // utimes(2) on the path: works for directories too (ssh-server-notes N6).
            nix::sys::stat::utimes(path, &at, &mt).map_err(std::io::Error::from)?;
        }
        if a.uid.is_some() || a.gid.is_some() {
            match file {
                Some(f) => std::os::unix::fs::fchown(f, a.uid, a.gid)?,
                None => std::os::unix::fs::chown(path, a.uid, a.gid)?,
            }
        }
        Ok(())
    }

    fn statvfs_reply(id: u32, s: &nix::sys::statvfs::Statvfs) -> Packet {
        let mut b = BytesMut::with_capacity(88);
        b.put_u64(s.block_size());
        b.put_u64(s.fragment_size());
        b.put_u64(s.blocks());
        b.put_u64(s.blocks_free());
        b.put_u64(s.blocks_available());
        b.put_u64(s.files());
        b.put_u64(s.files_free());
        b.put_u64(s.files_available());
        b.put_u64(s.filesystem_id());
        let mut flag = 0u64;
        if s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
            flag |= 1;
        }
        if s.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID) {
            flag |= 2;
        }
        b.put_u64(flag);
        b.put_u64(s.name_max());
        Packet::ExtendedReply(ExtendedReply {
            id,
            data: b.to_vec(),
        })
    }
}

impl russh_sftp::server::Handler for FsHandler {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        err(StatusCode::OpUnsupported)
    }

    async fn init(
        &mut self,
        version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        debug!("sftp init, client version {version}");
        let mut v = Version::new();
        for (k, val) in [
            ("posix-rename@openssh.com", "1"),
            ("statvfs@openssh.com", "2"),
            ("fstatvfs@openssh.com", "2"),
            ("hardlink@openssh.com", "1"),
            ("fsync@openssh.com", "1"),
            ("limits@openssh.com", "1"),
            ("expand-path@openssh.com", "1"),
        ] {
            v.extensions.insert(k.into(), val.into());
        }
        Ok(v)
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let path = self.path(&filename);
        let mut o = std::fs::OpenOptions::new();
        let write = pflags.contains(OpenFlags::WRITE) || pflags.contains(OpenFlags::APPEND);
        o.read(pflags.contains(OpenFlags::READ) || !write);
        if write {
            o.write(true);
        }
        if pflags.contains(OpenFlags::APPEND) {
            o.append(true);
        }
        if pflags.contains(OpenFlags::CREATE) {
            if pflags.contains(OpenFlags::EXCLUDE) {
                o.create_new(true);
            } else {
                o.create(true);
            }
        }
        if pflags.contains(OpenFlags::TRUNCATE) {
            o.truncate(true);
        }
        o.mode(attrs.permissions.map_or(0o666, |m| m & 0o7777));
        let file = o.open(&path).map_err(|e| status_of(&e))?;
        let handle = self.add(OpenHandle::File {
            file: Arc::new(file),
            path,
            write,
        });
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(h) => {
                self.audit_closed(&h);
                Ok(ok_status(id))
            }
            None => Err(err(StatusCode::Failure).with_message("Invalid handle")),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let file = self.file(&handle)?;
        let len = len.min(u32::try_from(LIMIT_RW).unwrap_or(u32::MAX)) as usize;
        let mut buf = vec![0u8; len];
        let n = file.read_at(&mut buf, offset).map_err(|e| status_of(&e))?;
        if n == 0 {
            return Err(StatusReply::new(StatusCode::Eof).with_message("End of file"));
        }
        buf.truncate(n);
        Ok(Data { id, data: buf })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let file = self.file(&handle)?;
        file.write_all_at(&data, offset)
            .map_err(|e| status_of(&e))?;
        Ok(ok_status(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let m = std::fs::symlink_metadata(self.path(&path)).map_err(|e| status_of(&e))?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&m),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let m = match self.handles.get(&handle) {
            Some(OpenHandle::File { file, .. }) => file.metadata(),
            Some(OpenHandle::Dir { path, .. }) => std::fs::metadata(path),
            None => return Err(err(StatusCode::Failure).with_message("Invalid handle")),
        }
        .map_err(|e| status_of(&e))?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&m),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let p = self.path(&path);
        self.apply_attrs(&p, None, &attrs)
            .map_err(|e| status_of(&e))?;
        self.audit(
            "sftp.setstat",
            serde_json::json!({ "path": p.to_string_lossy(), "attrs": attrs_audit(&attrs) }),
        );
        Ok(ok_status(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        match self.handles.get(&handle) {
            Some(OpenHandle::File { file, .. }) => {
                let file = file.clone();
                let path = std::fs::read_link(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(file.as_ref())
                ))
                .unwrap_or_default();
                // Times need a path (utimes); everything else uses the fd.
                let mut rest = attrs.clone();
                rest.atime = None;
                rest.mtime = None;
                self.apply_attrs(&path, Some(&file), &rest)
                    .map_err(|e| status_of(&e))?;
                if attrs.atime.is_some() || attrs.mtime.is_some() {
                    let t = std::fs::FileTimes::new()
                        .set_accessed(to_systime(attrs.atime.unwrap_or(0)))
                        .set_modified(to_systime(attrs.mtime.unwrap_or(0)));
                    file.set_times(t).map_err(|e| status_of(&e))?;
                }
                self.audit(
                    "sftp.setstat",
                    serde_json::json!({ "path": path.to_string_lossy(), "attrs": attrs_audit(&attrs) }),
                );
                Ok(ok_status(id))
            }
            Some(OpenHandle::Dir { path, .. }) => {
                let path = path.clone();
                self.apply_attrs(&path, None, &attrs)
                    .map_err(|e| status_of(&e))?;
                Ok(ok_status(id))
            }
            None => Err(err(StatusCode::Failure).with_message("Invalid handle")),
        }
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let p = self.path(&path);
        let iter = std::fs::read_dir(&p).map_err(|e| status_of(&e))?;
        let handle = self.add(OpenHandle::Dir {
            path: p,
            iter: Some(iter),
            dots_sent: false,
        });
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let now = now();
        let names = self.names.clone();
        let Some(OpenHandle::Dir {
            path,
            iter,
            dots_sent,
        }) = self.handles.get_mut(&handle)
        else {
            return Err(err(StatusCode::Failure).with_message("Invalid handle"));
        };
        let mut files = Vec::new();
        if !*dots_sent {
            *dots_sent = true;
            for (n, p) in [(".", path.clone()), ("..", path.join(".."))] {
                if let Ok(m) = std::fs::symlink_metadata(&p) {
                    files.push(SftpFile {
                        filename: n.into(),
                        longname: longname(n, &m, &names, now),
                        attrs: attrs_of(&m),
                    });
                }
            }
        }
        if let Some(it) = iter.as_mut() {
            while files.len() < DIR_BATCH {
                match it.next() {
                    Some(Ok(e)) => {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if let Ok(m) = std::fs::symlink_metadata(e.path()) {
                            files.push(SftpFile {
                                longname: longname(&name, &m, &names, now),
                                attrs: attrs_of(&m),
                                filename: name,
                            });
                        }
                    }
                    Some(Err(_)) => continue,
                    None => {
                        *iter = None;
                        break;
                    }
                }
            }
        }
        if files.is_empty() {
            return Err(StatusReply::new(StatusCode::Eof).with_message("End of file"));
        }
        Ok(Name { id, files })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let p = self.path(&filename);
        std::fs::remove_file(&p).map_err(|e| status_of(&e))?;
        self.audit(
            "sftp.remove",
            serde_json::json!({ "path": p.to_string_lossy() }),
        );
        Ok(ok_status(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .mode(attrs.permissions.map_or(0o777, |m| m & 0o7777))
            .create(self.path(&path))
            .map_err(|e| status_of(&e))?;
        self.audit(
            "sftp.mkdir",
            serde_json::json!({ "path": self.path(&path).to_string_lossy() }),
        );
        Ok(ok_status(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        std::fs::remove_dir(self.path(&path)).map_err(|e| status_of(&e))?;
        self.audit(
            "sftp.rmdir",
            serde_json::json!({ "path": self.path(&path).to_string_lossy() }),
        );
        Ok(ok_status(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let p = if path.is_empty() { "." } else { path.as_str() };
        Ok(Self::name_reply(id, &self.canonical(p)))
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let m = std::fs::metadata(self.path(&path)).map_err(|e| status_of(&e))?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&m),
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        // SFTPv3 rename never overwrites (posix-rename does).
        let (o, n) = (self.path(&oldpath), self.path(&newpath));
        std::fs::symlink_metadata(&o).map_err(|e| status_of(&e))?;
        if std::fs::symlink_metadata(&n).is_ok() {
            return Err(err(StatusCode::Failure));
        }
        std::fs::rename(&o, &n).map_err(|e| status_of(&e))?;
        self.audit(
            "sftp.rename",
            serde_json::json!({ "from": o.to_string_lossy(), "to": n.to_string_lossy() }),
        );
        Ok(ok_status(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let t = std::fs::read_link(self.path(&path)).map_err(|e| status_of(&e))?;
        Ok(Self::name_reply(id, &t))
    }

    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        // OpenSSH sends the arguments reversed: `linkpath` is the target
        // the new link points to, `targetpath` the link to create (ssh-server-notes N6).
        std::os::unix::fs::symlink(&linkpath, self.path(&targetpath)).map_err(|e| status_of(&e))?;
        Ok(ok_status(id))
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> Result<Packet, Self::Error> {
        let mut b = Bytes::from(data);
        let bad = || err(StatusCode::BadMessage);
        match request.as_str() {
            "posix-rename@openssh.com" => {
                let o = get_string(&mut b).ok_or_else(bad)?;
                let n = get_string(&mut b).ok_or_else(bad)?;
                let (o, n) = (self.path(&o), self.path(&n));
                std::fs::rename(&o, &n).map_err(|e| status_of(&e))?;
                self.audit(
                    "sftp.rename",
                    serde_json::json!({ "from": o.to_string_lossy(), "to": n.to_string_lossy() }),
                );
                Ok(ok_status(id).into())
            }
            "hardlink@openssh.com" => {
                let o = get_string(&mut b).ok_or_else(bad)?;
                let n = get_string(&mut b).ok_or_else(bad)?;
                std::fs::hard_link(self.path(&o), self.path(&n)).map_err(|e| status_of(&e))?;
                Ok(ok_status(id).into())
            }
            "statvfs@openssh.com" => {
                let p = get_string(&mut b).ok_or_else(bad)?;
                let s = nix::sys::statvfs::statvfs(&self.path(&p))
                    .map_err(|e| status_of(&std::io::Error::from(e)))?;
                Ok(Self::statvfs_reply(id, &s))
            }
            "fstatvfs@openssh.com" => {
                let h = get_string(&mut b).ok_or_else(bad)?;
                let file = self.file(&h)?;
                let s = nix::sys::statvfs::fstatvfs(file.as_ref())
                    .map_err(|e| status_of(&std::io::Error::from(e)))?;
                Ok(Self::statvfs_reply(id, &s))
            }
            "fsync@openssh.com" => {
                let h = get_string(&mut b).ok_or_else(bad)?;
                let file = self.file(&h)?;
                tokio::task::spawn_blocking(move || file.sync_all())
                    .await
                    .map_err(|_| err(StatusCode::Failure))?
                    .map_err(|e| status_of(&e))?;
                Ok(ok_status(id).into())
            }
            "limits@openssh.com" => {
                let mut r = BytesMut::with_capacity(32);
                r.put_u64(LIMIT_PACKET);
                r.put_u64(LIMIT_RW);
                r.put_u64(LIMIT_RW);
                r.put_u64(256);
                Ok(Packet::ExtendedReply(ExtendedReply {
                    id,
                    data: r.to_vec(),
                }))
            }
            "expand-path@openssh.com" => {
                let p = get_string(&mut b).ok_or_else(bad)?;
                let e = self.expand(&p);
                let c = std::fs::canonicalize(&e).unwrap_or_else(|_| lexical_normalize(&e));
                Ok(Self::name_reply(id, &c).into())
            }
            other => {
                debug!("sftp: unsupported extension {other}");
                Err(err(StatusCode::OpUnsupported))
            }
        }
    }
}

fn to_systime(t: u32) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(t))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(mode_string(0o100644), "-rw-r--r--");
        assert_eq!(mode_string(0o040755), "drwxr-xr-x");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
        assert_eq!(mode_string(0o010600), "prw-------");
        assert_eq!(mode_string(0o041777), "drwxrwxrwt");
        assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
    }

    #[test]
    fn dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0));
        assert_eq!(civil(1_700_000_000), (2023, 11, 14, 22, 13));
    }

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
    fn fifo_attrs_keep_type() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let a = attrs_of(&m);
        assert_eq!(a.permissions.unwrap() & 0o170000, 0o010000);
        let l = longname("f", &m, &NameMaps::default(), now());
        assert!(l.starts_with("prw-------"), "{l}");
    }
}
