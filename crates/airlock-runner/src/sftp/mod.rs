//! In-process SFTP v3 server on russh-sftp's protocol types.
//!
//! The filesystem handler implements [`russh_sftp::server::Handler`]; the
//! request loop is ours so that (a) the channel is always drained into a
//! bounded buffer (docs/ssh-server-notes.md N1), (b) the subsystem ends with
//! exit-status 0 + EOF + close (N2), (c) oversized packets are consumed
//! instead of desynchronising the stream, and (d) READ/WRITE, the hot path,
//! avoid extra copies.

mod fs;
mod longname;
mod wire;

use std::collections::VecDeque;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use russh::server::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use russh_sftp::protocol::StatusCode;
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tracing::{debug, warn};

pub use fs::{FsHandler, attrs_of};
pub use longname::{longname, mode_string};
pub use wire::status_of;

use crate::passwd::NameMaps;
use wire::{read_reply, status_bytes};

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

/// Serve the sftp subsystem on a session channel until the client is done.
pub(crate) async fn serve_channel(
    mut rx: ChannelReadHalf,
    tx: Arc<ChannelWriteHalf<Msg>>,
    home: &Path,
    early: crate::session::Early,
    peer: std::net::SocketAddr,
    backlog: crate::queue::Backlog,
) {
    // (1) Reader: drains the channel into the connection's accounted queue
    // and never waits on the request loop (queue.rs: no channel reader
    // waits on anything but the channel).
    let (qtx, drain) = backlog.queue::<Bytes>();
    for b in early.data {
        let n = b.len();
        let _ = qtx.push(b, n);
    }
    let pump = tokio::spawn(async move {
        let mut qtx = (!early.eof).then_some(qtx);
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
    let pump_r = tokio_util::io::StreamReader::new(futures_util::StreamExt::map(
        drain.into_stream(),
        Ok::<_, std::io::Error>,
    ));

    // (2) Writer: responses go out in request order from their own task.
    //
    // Root cause of the psftp upload stall: russh grants the
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
    // Reading /etc/passwd and /etc/group is file I/O: on the blocking pool.
    let names = tokio::task::spawn_blocking(NameMaps::load)
        .await
        .unwrap_or_default();
    let mut handler = FsHandler::new(home.to_path_buf(), names);
    handler.peer = Some(peer);
    // Taken while a request runs on the blocking pool; `None` afterwards
    // only if that job panicked (the connection then ends).
    let mut fs = Some(handler);
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
        let Some(mut h) = fs.take() else { break };
        let reply = if FsHandler::is_fast(&bytes) {
            let r = h.process(bytes).await;
            fs = Some(h);
            r
        } else {
            let Some((h, r)) = h.process_blocking(bytes).await else {
                warn!("sftp: a request failed on the blocking pool; ending");
                break;
            };
            fs = Some(h);
            r
        };
        if let Some(r) = reply
            && !queue_reply(r)
        {
            break;
        }
    }
    drop(out_tx);
    let delivered = writer.await.unwrap_or(false);
    pump.abort();
    if let Some(mut h) = fs {
        h.close_all();
    }
    // (docs/ssh-server-notes.md N2) exit-status 0, EOF, close: scp/sftp then exit 0.
    if delivered {
        let _ = tx.exit_status(0).await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
    }
    debug!("sftp session ended");
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
    pub(super) file: Arc<File>,
    pub(super) offset: u64,
    pub(super) len: usize,
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
