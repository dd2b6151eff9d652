//! Resumable tunnels: the `airlock-resume.v1` WebSocket subprotocol.
//!
//! A resumable tunnel survives its transport breaking: the two ends that
//! own the byte streams (the CLI, next to ssh, and the agent, next to the
//! runner) each keep what they sent until the other acknowledges it, and
//! after a reconnect each says how much it has received so the other
//! resends the rest. Everything between them (the gateway) relays opaque
//! bytes and keeps no state; where the agent runs in the gateway's process
//! (`airlockd up`), its end works on the client's WebSocket directly
//! ([`crate::ws`]), so one task stands between the client and the runner.
//!
//! # Wire format
//!
//! A byte stream of frames `[type: u8][length: u32 BE][payload]`; frame
//! boundaries need not match WebSocket message boundaries.
//!
//! | type | frame | payload |
//! |------|-------|---------|
//! | 1 | `HELLO` | version `1` (u8), tunnel id (16 bytes, zero for a new tunnel), bytes received (u64), flags (u8, bit 0: FIN received), grace period in ms (u32, agent only) |
//! | 2 | `DATA` | stream bytes (at most [`MAX_DATA`]) |
//! | 3 | `ACK` | bytes received (u64), flags (u8, bit 0: FIN received) |
//! | 4 | `FIN` | none: no data follows (resent after every resume until acknowledged) |
//! | 5 | `ERROR` | code (u16), UTF-8 reason: the tunnel is over |
//!
//! Each attachment starts with the client's `HELLO` and the agent's answer
//! (`HELLO`, or `ERROR` when it cannot open or find the tunnel); both then
//! resend from the count the other reported. Counts only grow and must lie
//! within what was sent, so a confused peer is a protocol error, never
//! silent corruption.
//!
//! # Buffers
//!
//! Each end keeps a replay buffer of at most [`Config::buffer`] bytes of
//! unacknowledged data. When it is full, the end stops reading its local
//! stream (backpressure); it never grows and never drops. Receivers
//! acknowledge every [`Config::buffer`]`/4` bytes and, for smaller amounts,
//! after [`ACK_DELAY`], so buffers drain during bulk transfers.
//!
//! A steady state costs a 5-byte header per frame, a small ACK every
//! megabyte, and reference-counted (not copied) buffers for the replay. A
//! DATA payload is not copied on its way through either: the sender hands
//! the transport the header and a slice of the replay buffer
//! ([`Encoded`]), and the receiver's [`Decoder`] passes on slices of what
//! the transport delivered.
//!
//! Receiving never waits on the local stream: DATA goes into a queue that
//! a local writer empties into the local stream, and ACKs count what it
//! has *written* (so the peer's replay buffer bounds the queue). Waiting
//! on the local write instead left the ACKs that follow the data on the
//! link unread while the local write waited, which deadlocks with a local
//! peer that does blocking writes and reads only between them (PuTTY
//! `psftp -proxycmd "airlock proxy S"`: psftp blocks writing an upload to
//! our stdin, whose reading waits for ACKs, which wait behind our write to
//! psftp's stdout, which psftp reads only after its write).
//!
//! # One task
//!
//! An attachment is one task: its four loops (link receiver, link sender,
//! local reader, local writer) are futures polled side by side, none of
//! which waits on another, so the rule above holds while a read or write
//! never crosses to another task (a hand-off between tasks is a wake-up
//! that often moves the work to another worker thread; the plain
//! protocol's relay is one task too). The local loops therefore run only
//! while attached (a
//! detached end neither reads nor writes its local stream; its peer sees
//! backpressure), and they keep their progress (a partly written payload,
//! the read buffers) in the endpoint, since an attachment can end between
//! any two polls. The loops hand work to each other through flags that
//! make the attachment poll them again at once (`Signal`), not through
//! wakers: a task that wakes itself is queued again and often taken over
//! by another worker thread.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The WebSocket subprotocol a client offers to get a resumable tunnel.
pub const SUBPROTOCOL: &str = "airlock-resume.v1";

/// Largest DATA payload we send: as large as a receiver accepts; also the
/// largest read, and so the largest message, of the plain relay
/// ([`crate::relay`]).
pub const MAX_DATA: usize = MAX_FRAME;

/// Largest frame payload we accept.
pub const MAX_FRAME: usize = 1 << 20;

/// Longest a receiver waits before acknowledging a small amount.
pub const ACK_DELAY: Duration = Duration::from_millis(20);

/// How long a detached tunnel waits for its client by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(120);

/// A tunnel's id: 128 random bits, bound to its session by the agent.
pub type TunnelId = [u8; 16];

/// `ERROR` code: no such tunnel (it ended, its grace period ran out, or it
/// belongs to another session).
pub const ERR_UNKNOWN: u16 = 1;
/// `ERROR` code: the agent could not open the session's SSH server.
pub const ERR_CONNECT: u16 = 2;
/// `ERROR` code: the peer broke the protocol.
pub const ERR_PROTOCOL: u16 = 3;
/// `ERROR` code: the other end's local stream failed.
pub const ERR_ABORTED: u16 = 4;

const T_HELLO: u8 = 1;
const T_DATA: u8 = 2;
const T_ACK: u8 = 3;
const T_FIN: u8 = 4;
const T_ERROR: u8 = 5;
const HEADER: usize = 5;
const VERSION: u8 = 1;

/// One protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens an attachment.
    Hello {
        /// The tunnel (zero: a new one).
        id: TunnelId,
        /// Bytes the sender has received so far.
        received: u64,
        /// Whether the sender has received the peer's FIN.
        fin: bool,
        /// The agent's grace period in milliseconds (0 from clients).
        grace_ms: u32,
    },
    /// Stream bytes.
    Data(Bytes),
    /// Bytes received so far.
    Ack {
        /// The count.
        received: u64,
        /// Whether the FIN arrived too.
        fin: bool,
    },
    /// The end of the sender's stream.
    Fin,
    /// The tunnel is over.
    Error {
        /// One of the `ERR_*` codes.
        code: u16,
        /// Why, for people.
        reason: String,
    },
}

impl Frame {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let (ty, len) = match self {
            Frame::Hello { .. } => (T_HELLO, 30),
            Frame::Data(d) => (T_DATA, d.len()),
            Frame::Ack { .. } => (T_ACK, 9),
            Frame::Fin => (T_FIN, 0),
            Frame::Error { reason, .. } => (T_ERROR, 2 + reason.len()),
        };
        out.reserve(HEADER + len);
        out.put_u8(ty);
        out.put_u32(len as u32);
        match self {
            Frame::Hello {
                id,
                received,
                fin,
                grace_ms,
            } => {
                out.put_u8(VERSION);
                out.put_slice(id);
                out.put_u64(*received);
                out.put_u8(u8::from(*fin));
                out.put_u32(*grace_ms);
            }
            Frame::Data(d) => out.put_slice(d),
            Frame::Ack { received, fin } => {
                out.put_u64(*received);
                out.put_u8(u8::from(*fin));
            }
            Frame::Fin => {}
            Frame::Error { code, reason } => {
                out.put_u16(*code);
                out.put_slice(reason.as_bytes());
            }
        }
    }

    /// The encoded frame.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }

    /// The frame for the wire, with a DATA payload passed along uncopied.
    pub fn encoded(self) -> Encoded {
        match self {
            Frame::Data(body) => {
                let mut head = BytesMut::with_capacity(HEADER);
                head.put_u8(T_DATA);
                head.put_u32(body.len() as u32);
                Encoded {
                    head: head.freeze(),
                    body,
                }
            }
            other => Encoded {
                head: other.to_bytes(),
                body: Bytes::new(),
            },
        }
    }
}

/// A frame ready for the wire: its header (with any fixed fields), then its
/// body. They are kept apart so that a DATA payload, a slice of the replay
/// buffer, reaches the transport without being copied into a new buffer.
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    /// The header and every field of a control frame.
    pub head: Bytes,
    /// A DATA frame's payload (empty for other frames).
    pub body: Bytes,
}

impl Encoded {
    /// Bytes that are on the wire already (what a relay passes on, frames
    /// or not).
    pub fn relayed(body: Bytes) -> Self {
        Self {
            head: Bytes::new(),
            body,
        }
    }

    /// Its length on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// Whether it has no bytes (never, for a real frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Both parts in one buffer (a copy of the body).
    pub fn joined(self) -> Bytes {
        if self.body.is_empty() {
            return self.head;
        }
        if self.head.is_empty() {
            return self.body;
        }
        let mut b = BytesMut::with_capacity(self.len());
        b.put_slice(&self.head);
        b.put_slice(&self.body);
        b.freeze()
    }
}

/// Why a tunnel attachment or handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The peer sent something this protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
}

fn protocol(msg: impl Into<String>) -> ResumeError {
    ResumeError::Protocol(msg.into())
}

/// Splits a byte stream into frames.
///
/// DATA payloads are not gathered: each received piece of one comes out as
/// its own [`Frame::Data`], a slice of the buffer it arrived in (DATA is a
/// byte stream, so how it is cut does not matter). Only headers and control
/// frames, a few bytes each, are copied.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Received bytes not decoded yet, in order (none empty).
    chunks: VecDeque<Bytes>,
    /// Their total length.
    len: usize,
    /// Payload bytes of the current DATA frame still to come.
    data_left: usize,
}

impl Decoder {
    /// Adds received bytes.
    pub fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.len += data.len();
            self.chunks.push_back(data);
        }
    }

    /// The first [`HEADER`] bytes, if they are here.
    fn header(&self) -> Option<[u8; HEADER]> {
        if self.len < HEADER {
            return None;
        }
        let mut h = [0u8; HEADER];
        let mut at = 0;
        for chunk in &self.chunks {
            let n = (HEADER - at).min(chunk.len());
            h[at..at + n].copy_from_slice(&chunk[..n]);
            at += n;
            if at == HEADER {
                break;
            }
        }
        Some(h)
    }

    /// Removes `n` bytes (at most what is here) from the front, copied into
    /// one buffer: for headers and control frames only.
    fn take(&mut self, n: usize) -> BytesMut {
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let k = (n - out.len()).min(front.len());
            out.put_slice(&front[..k]);
            front.advance(k);
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
        self.len -= out.len();
        out
    }

    /// The next frame, or the next piece of a DATA frame's payload, if
    /// there is one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ResumeError> {
        loop {
            if self.data_left > 0 {
                let Some(front) = self.chunks.front_mut() else {
                    return Ok(None);
                };
                let n = self.data_left.min(front.len());
                let piece = front.split_to(n);
                if front.is_empty() {
                    self.chunks.pop_front();
                }
                self.len -= n;
                self.data_left -= n;
                return Ok(Some(Frame::Data(piece)));
            }
            let Some(h) = self.header() else {
                return Ok(None);
            };
            let ty = h[0];
            let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
            if len > MAX_FRAME {
                return Err(protocol(format!("a frame of {len} bytes")));
            }
            match (ty, len) {
                (T_DATA, _) => {
                    self.take(HEADER);
                    // An empty DATA frame carries nothing to hand on.
                    self.data_left = len;
                    continue;
                }
                (T_HELLO, 30) | (T_ACK, 9) | (T_FIN, 0) | (T_ERROR, 2..) => {}
                _ => return Err(protocol(format!("bad frame (type {ty}, {len} bytes)"))),
            }
            if self.len < HEADER + len {
                return Ok(None);
            }
            self.take(HEADER);
            let mut p = self.take(len);
            let frame = match ty {
                T_HELLO => {
                    if p.get_u8() != VERSION {
                        return Err(protocol("unknown protocol version"));
                    }
                    let mut id = [0u8; 16];
                    p.copy_to_slice(&mut id);
                    Frame::Hello {
                        id,
                        received: p.get_u64(),
                        fin: p.get_u8() & 1 == 1,
                        grace_ms: p.get_u32(),
                    }
                }
                T_ACK => Frame::Ack {
                    received: p.get_u64(),
                    fin: p.get_u8() & 1 == 1,
                },
                T_FIN => Frame::Fin,
                _ => Frame::Error {
                    code: p.get_u16(),
                    reason: String::from_utf8_lossy(&p).into_owned(),
                },
            };
            return Ok(Some(frame));
        }
    }
}

/// The receiving half of a transport.
pub trait LinkRx: Send {
    /// The next bytes that arrived (possibly none, e.g. for a pong);
    /// `None` at the end.
    fn recv(&mut self) -> impl Future<Output = io::Result<Option<Bytes>>> + Send;
}

/// The sending half of a transport.
pub trait LinkTx: Send {
    /// Sends one encoded frame.
    fn send(&mut self, frame: Encoded) -> impl Future<Output = io::Result<()>> + Send;
    /// Sends a keepalive probe (WebSocket ping); nothing by default.
    fn ping(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }
    /// Ends the sending direction (a stream's shutdown); nothing by
    /// default.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Message transports (a WebSocket, [`crate::pipe`]) put a frame up to this
/// size in one message (its body copied after the header); a larger DATA
/// payload goes in a message of its own, uncopied. Frames need not line up
/// with messages.
pub const JOIN_BELOW: usize = 16 * 1024;

/// [`LinkRx`] over a byte stream.
#[derive(Debug)]
pub struct StreamRx<R> {
    rd: R,
    buf: BytesMut,
    want: usize,
}

impl<R> StreamRx<R> {
    /// Reads frames from `rd`.
    pub fn new(rd: R) -> Self {
        Self {
            rd,
            buf: BytesMut::new(),
            want: SMALL_READ,
        }
    }
}

impl<R: AsyncRead + Unpin + Send> LinkRx for StreamRx<R> {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        // Each read lands in its own part of one buffer and goes on as is
        // (the decoder slices DATA out of it): no copy.
        self.buf.reserve(self.want);
        let n = (&mut self.rd)
            .take(self.want as u64)
            .read_buf(&mut self.buf)
            .await?;
        self.want = next_read_size(n);
        Ok((n > 0).then(|| self.buf.split().freeze()))
    }
}

/// [`LinkTx`] over a byte stream.
#[derive(Debug)]
pub struct StreamTx<W>(pub W);

impl<W: AsyncWrite + Unpin + Send> LinkTx for StreamTx<W> {
    async fn send(&mut self, frame: Encoded) -> io::Result<()> {
        // Header and payload in one vectored write where the stream has one.
        let mut parts = frame.head.chain(frame.body);
        self.0.write_all_buf(&mut parts).await?;
        self.0.flush().await
    }

    async fn shutdown(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

/// Reads start this small (little memory per quiet tunnel)…
const SMALL_READ: usize = 16 * 1024;

/// …and grow to a whole frame's worth once a read brings more than a few
/// keystrokes' worth: a bulk transfer's reads come in whatever the stream
/// holds at the moment, often less than asked, and each read becomes a
/// frame, so falling back to small reads on every short one would cut a
/// transfer into many small frames.
fn next_read_size(got: usize) -> usize {
    if got >= SMALL_READ / 4 {
        MAX_DATA
    } else {
        SMALL_READ
    }
}

/// A transport with its frame decoder.
#[derive(Debug)]
pub struct Link<Rx, Tx> {
    /// Receiving half.
    pub rx: Rx,
    /// Sending half.
    pub tx: Tx,
    dec: Decoder,
}

impl<Rx: LinkRx, Tx: LinkTx> Link<Rx, Tx> {
    /// Wraps the two halves.
    pub fn new(rx: Rx, tx: Tx) -> Self {
        Self {
            rx,
            tx,
            dec: Decoder::default(),
        }
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        self.tx.send(frame.clone().encoded()).await
    }

    /// Receives one frame (`Ok(None)`: the transport ended).
    pub async fn recv(&mut self) -> Result<Option<Frame>, LinkError> {
        recv_frame(&mut self.rx, &mut self.dec, None).await
    }
}

/// Why a link stopped.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The transport failed or fell silent.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ResumeError),
}

async fn recv_frame<Rx: LinkRx>(
    rx: &mut Rx,
    dec: &mut Decoder,
    dead_after: Option<Duration>,
) -> Result<Option<Frame>, LinkError> {
    loop {
        if let Some(f) = dec.next_frame()? {
            return Ok(Some(f));
        }
        let more = match dead_after {
            Some(d) => tokio::time::timeout(d, rx.recv()).await.map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer for {} s", d.as_secs()),
                )
            })??,
            None => rx.recv().await?,
        };
        match more {
            Some(bytes) => dec.push(bytes),
            None => return Ok(None),
        }
    }
}

/// Tuning for an [`Endpoint`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Most unacknowledged bytes kept for replay.
    pub buffer: usize,
    /// Keepalive probes this often (`None`: none).
    pub keepalive: Option<Duration>,
    /// A link that delivers nothing for this long is dead (`None`: never).
    pub dead_after: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            buffer: 4 << 20,
            keepalive: None,
            dead_after: None,
        }
    }
}

impl Config {
    /// The client's settings: pings every 15 s, dead after 45 s of silence.
    pub fn client() -> Self {
        Self {
            keepalive: Some(Duration::from_secs(15)),
            dead_after: Some(Duration::from_secs(45)),
            ..Self::default()
        }
    }
}

/// How an attachment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detach {
    /// Both streams ended and everything was acknowledged: the tunnel is over.
    Done,
    /// The transport broke (or fell silent); a resume can continue.
    Broken(String),
    /// A newer attachment took over.
    Replaced,
    /// This end's local stream failed; the tunnel is over (the peer was told).
    Failed(String),
    /// The peer ended the tunnel with an `ERROR`.
    Refused {
        /// Its code.
        code: u16,
        /// Its reason.
        reason: String,
    },
}

#[derive(Debug, Default)]
struct State {
    // Outgoing: bytes `acked..end` are in `replay`; `next` is the send
    // cursor of the current attachment.
    acked: u64,
    end: u64,
    next: u64,
    replay: VecDeque<Bytes>,
    local_eof: bool,
    fin_acked: bool,
    // Incoming: `received` bytes (and `peer_fin`) were taken from links
    // into the local write queue (what a HELLO reports: the peer resends
    // from there); `written` bytes (and `fin_written`) reached the local
    // stream (what ACKs report: the peer frees its buffer up to there).
    received: u64,
    peer_fin: bool,
    written: u64,
    fin_written: bool,
    ack_sent: u64,
    fin_ack_sent: bool,
    ack_due: Option<Instant>,
    /// Arrived, not yet taken by the local writer.
    inbox: VecDeque<Out>,
    failed: Option<String>,
}

impl State {
    fn done(&self) -> bool {
        self.local_eof && self.fin_acked && self.fin_written && self.fin_ack_sent
    }

    /// Drops what the peer confirmed.
    fn ack(&mut self, upto: u64, fin: bool) -> Result<bool, ResumeError> {
        if upto > self.end {
            return Err(protocol(format!(
                "acknowledged {upto} bytes of {} sent",
                self.end
            )));
        }
        let freed = upto > self.acked;
        while self.acked < upto {
            let Some(front) = self.replay.front_mut() else {
                break;
            };
            let drop = (upto - self.acked).min(front.len() as u64) as usize;
            front.advance(drop);
            self.acked += drop as u64;
            if front.is_empty() {
                self.replay.pop_front();
            }
        }
        if fin && self.local_eof && upto == self.end {
            self.fin_acked = true;
        }
        Ok(freed)
    }

    /// Up to `max` bytes from `next`.
    fn chunk_at(&self, max: usize) -> Bytes {
        let mut off = self.next - self.acked;
        for b in &self.replay {
            if off < b.len() as u64 {
                let start = off as usize;
                let stop = b.len().min(start + max);
                return b.slice(start..stop);
            }
            off -= b.len() as u64;
        }
        Bytes::new()
    }
}

/// What the local writer gets.
#[derive(Debug)]
enum Out {
    Data(Bytes),
    Fin,
}

/// Polls of an attachment's loops in a row while they keep signalling
/// each other; then it yields to other tasks.
const REPOLL_MAX: usize = 32;

/// A wake-up from one loop of an attachment to another ([`Shared::raise`]).
///
/// The loops are futures of one task, so a waker would wake the task from
/// inside its own poll, and tokio answers that by queueing the task again
/// and waking an idle worker thread, which often takes it over: a thread
/// hop (a context switch and a CPU migration) per hand-off, several per
/// megabyte. Instead a raised signal makes the attachment poll its loops
/// again before returning; a waiting loop only checks its flag. Wake-ups
/// from outside (sockets, timers, the cancel token) use wakers as usual.
#[derive(Debug, Default)]
struct Signal(AtomicBool);

impl Signal {
    /// Waits until raised (at once if raised since the last wait).
    async fn wait(&self) {
        std::future::poll_fn(|_| {
            if self.0.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                // `raise` re-polls the attachment: no waker to keep.
                Poll::Pending
            }
        })
        .await;
    }
}

struct Shared {
    state: Mutex<State>,
    wake_tx: Signal,
    wake_reader: Signal,
    wake_writer: Signal,
    /// Set when a loop raised a [`Signal`] during this poll of the
    /// attachment: it is polled again at once.
    kick: AtomicBool,
    current: Mutex<Option<CancellationToken>>,
    cfg: Config,
}

impl Shared {
    /// Wakes the loop waiting on `signal`: another loop of the same
    /// attachment, polled again before the attachment's poll returns.
    fn raise(&self, signal: &Signal) {
        signal.0.store(true, Ordering::Release);
        self.kick.store(true, Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the counters half-updated in a
        // way that matters more than stopping would.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The local stream's two halves and what their loops carry from one
/// attachment to the next; held by the attachment that runs them.
struct Local {
    reader: LocalReader,
    writer: LocalWriter,
}

struct LocalReader {
    rd: Box<dyn AsyncRead + Send + Unpin>,
    slabs: Slabs,
    want: usize,
}

struct LocalWriter {
    wr: Box<dyn AsyncWrite + Send + Unpin>,
    /// What is being written (the rest of a payload, or the end).
    pending: Option<Out>,
    /// Written since the last flush.
    unflushed: bool,
}

/// One end of a resumable tunnel: owns the local stream and the replay
/// buffer, and runs over a sequence of transports ([`Endpoint::attach`]).
/// Dropping it closes the local stream.
pub struct Endpoint {
    shared: Shared,
    local: tokio::sync::Mutex<Local>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("Endpoint")
            .field("sent", &st.end)
            .field("acked", &st.acked)
            .field("received", &st.received)
            .finish()
    }
}

impl Endpoint {
    /// An endpoint over the local stream `rd`/`wr`: what `rd` gives goes to
    /// the peer, `wr` gets what arrives (both while attached).
    pub fn new<R, W>(rd: R, wr: W, cfg: Config) -> Self
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        Self {
            shared: Shared {
                state: Mutex::new(State::default()),
                wake_tx: Signal::default(),
                wake_reader: Signal::default(),
                wake_writer: Signal::default(),
                kick: AtomicBool::new(false),
                current: Mutex::new(None),
                cfg,
            },
            local: tokio::sync::Mutex::new(Local {
                reader: LocalReader {
                    rd: Box::new(rd),
                    slabs: Slabs::default(),
                    want: SMALL_READ,
                },
                writer: LocalWriter {
                    wr: Box::new(wr),
                    pending: None,
                    unflushed: false,
                },
            }),
        }
    }

    /// This end's `HELLO` for tunnel `id`.
    pub fn hello(&self, id: TunnelId, grace: Duration) -> Frame {
        let st = self.shared.lock();
        Frame::Hello {
            id,
            received: st.received,
            fin: st.peer_fin,
            grace_ms: u32::try_from(grace.as_millis()).unwrap_or(u32::MAX),
        }
    }

    /// Whether the peer's stream has ended (its FIN arrived).
    pub fn peer_finished(&self) -> bool {
        self.shared.lock().peer_fin
    }

    /// Whether the tunnel is over.
    pub fn is_done(&self) -> bool {
        self.shared.lock().done()
    }

    /// Bytes (sent, received) so far.
    pub fn counts(&self) -> (u64, u64) {
        let st = self.shared.lock();
        (st.end, st.received)
    }

    /// Runs the tunnel over `link` after the handshake, where the peer
    /// said it had received `peer_received` bytes (and our FIN, if
    /// `peer_fin`). A newer attach replaces this one.
    pub async fn attach<Rx: LinkRx, Tx: LinkTx>(
        &self,
        link: &mut Link<Rx, Tx>,
        peer_received: u64,
        peer_fin: bool,
    ) -> Detach {
        let token = CancellationToken::new();
        if let Some(old) = self
            .shared
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(token.clone())
        {
            old.cancel();
        }
        let mut local = self.local.lock().await;
        if token.is_cancelled() {
            return Detach::Replaced;
        }
        let refused = {
            let mut st = self.shared.lock();
            if peer_received < st.acked {
                Some("the peer lost acknowledged bytes".to_owned())
            } else if let Err(ResumeError::Protocol(e)) = st.ack(peer_received, peer_fin) {
                Some(e)
            } else {
                st.next = peer_received;
                // Our HELLO reported what we took in; ACKs go on from
                // what is written.
                st.ack_sent = st.written;
                st.fin_ack_sent = st.peer_fin;
                st.ack_due = None;
                None
            }
        };
        if let Some(reason) = refused {
            return self.fail_protocol(link, &reason).await;
        }
        self.shared.raise(&self.shared.wake_reader);
        let shared = &self.shared;
        let Link { rx, tx, dec } = link;
        let mut outcome = {
            let Local { reader, writer } = &mut *local;
            let loops = async {
                tokio::select! {
                    d = send_loop(shared, tx) => d,
                    d = recv_loop(shared, rx, dec) => d,
                    never = read_local(shared, reader) => match never {},
                    never = write_local(shared, writer) => match never {},
                    () = token.cancelled() => Detach::Replaced,
                }
            };
            let mut loops = std::pin::pin!(loops);
            // `select!` polls every loop each time: while one raised a signal
            // for another, poll again (see `Signal`).
            std::future::poll_fn(|cx| {
                for _ in 0..REPOLL_MAX {
                    shared.kick.store(false, Ordering::Release);
                    if let Poll::Ready(d) = loops.as_mut().poll(cx) {
                        return Poll::Ready(d);
                    }
                    if !shared.kick.load(Ordering::Acquire) {
                        return Poll::Pending;
                    }
                }
                // Still busy: let other tasks run first.
                cx.waker().wake_by_ref();
                Poll::Pending
            })
            .await
        };
        drop(local);
        // The peer may close right after the last ACK: over is over.
        if matches!(outcome, Detach::Broken(_)) && self.shared.lock().done() {
            outcome = Detach::Done;
        }
        if let Detach::Failed(reason) = &outcome {
            let code = if reason.starts_with("protocol error") {
                ERR_PROTOCOL
            } else {
                ERR_ABORTED
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                link.send(&Frame::Error {
                    code,
                    reason: reason.clone(),
                }),
            )
            .await;
        }
        outcome
    }

    async fn fail_protocol<Rx: LinkRx, Tx: LinkTx>(
        &self,
        link: &mut Link<Rx, Tx>,
        reason: &str,
    ) -> Detach {
        let reason = format!("protocol error: {reason}");
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            link.send(&Frame::Error {
                code: ERR_PROTOCOL,
                reason: reason.clone(),
            }),
        )
        .await;
        Detach::Failed(reason)
    }
}

/// Where the bulk reads of one endpoint land: a few large slabs, read
/// into one after another and reused once every slice of one is gone.
///
/// A read's bytes stay in the replay buffer until the peer acknowledges
/// them, so its buffer cannot be read into again at once. A fresh buffer
/// per read meant fresh pages, which the kernel faults in and clears one
/// by one: ~50,000–100,000 page faults per GiB sent (`bench/chain`,
/// against ~2,000 for the plain protocol, whose read buffer is free again
/// as soon as the message is sent). Here reads fill a slab from front to
/// back (each read a slice of it); a full slab is set aside, and the next
/// one is the oldest set-aside slab whose slices are all gone
/// (`BytesMut::try_reclaim`: its pages are resident already), or a new
/// one. The slabs are let go when the stream goes quiet, so an idle
/// tunnel keeps no megabytes.
#[derive(Debug, Default)]
struct Slabs {
    /// The rest of the slab being read into.
    current: BytesMut,
    /// Whether `current` is a slab (it may have no room left: two reads of
    /// [`MAX_DATA`] fill one exactly).
    slab: bool,
    /// Filled slabs, oldest first (their slices may still be alive).
    spare: VecDeque<BytesMut>,
    /// Slabs allocated so far (for tests).
    #[cfg(test)]
    fresh: usize,
}

/// One slab: two of the largest reads.
const SLAB: usize = 2 * MAX_DATA;

/// Slabs set aside at most: the replay buffer holds `Config::buffer /
/// SLAB` of them (2 by default), the transport a little more.
const SLABS_MAX: usize = 6;

/// Reads go on in the current slab while this much is left of it.
const SLAB_MIN_ROOM: usize = 64 * 1024;

/// A bulk read that waits this long lets the set-aside slabs go (the
/// transfer paused or ended on a large read).
const SLAB_IDLE: Duration = Duration::from_secs(1);

impl Slabs {
    /// Makes `current` the slab the next read goes into (read into its
    /// spare capacity, then `split` the bytes off); how much to read: at
    /// most `want`.
    fn room(&mut self, want: usize) -> usize {
        if self.current.capacity() < SLAB_MIN_ROOM.min(want) {
            let full = std::mem::take(&mut self.current);
            if std::mem::take(&mut self.slab) {
                self.spare.push_back(full);
            }
            let mut next = None;
            for _ in 0..self.spare.len() {
                let Some(mut slab) = self.spare.pop_front() else {
                    break;
                };
                if slab.try_reclaim(SLAB) {
                    next = Some(slab);
                    break;
                }
                self.spare.push_back(slab);
            }
            while self.spare.len() > SLABS_MAX {
                self.spare.pop_front();
            }
            self.current = next.unwrap_or_else(|| {
                #[cfg(test)]
                {
                    self.fresh += 1;
                }
                BytesMut::with_capacity(SLAB)
            });
            self.slab = true;
        }
        want.min(self.current.capacity())
    }

    /// Takes the current slab out for a read ([`Slabs::room`] first).
    fn take(&mut self) -> BytesMut {
        self.slab = false;
        std::mem::take(&mut self.current)
    }

    /// Puts the slab taken for a read back (what was read split off it).
    fn restore(&mut self, slab: BytesMut) {
        self.current = slab;
        self.slab = true;
    }

    /// Whether no slab is held.
    fn is_empty(&self) -> bool {
        self.spare.is_empty() && !self.slab
    }

    /// Lets every slab go (each is freed when its last slice is).
    fn quiet(&mut self) {
        *self = Self::default();
    }
}

/// Reads the local stream into the replay buffer while there is room;
/// after its end, waits for the attachment to end.
async fn read_local(shared: &Shared, local: &mut LocalReader) -> std::convert::Infallible {
    let LocalReader { rd, slabs, want } = local;
    loop {
        let room = loop {
            let (eof, used) = {
                let st = shared.lock();
                (st.local_eof, (st.end - st.acked) as usize)
            };
            if eof {
                return std::future::pending().await;
            }
            if used < shared.cfg.buffer {
                break shared.cfg.buffer - used;
            }
            shared.wake_reader.wait().await;
        };
        // A bulk read goes into the current slab, taken out for the read
        // (a read cancelled with the attachment loses the slab, not data).
        let bulk = *want == MAX_DATA;
        let (mut buf, limit) = if bulk {
            let n = slabs.room((*want).min(room));
            (slabs.take(), n)
        } else {
            let n = (*want).min(room);
            (BytesMut::with_capacity(n), n)
        };
        // Cancelled between polls when the attachment ends: a read that
        // has not completed took nothing.
        let mut limited = (&mut *rd).take(limit as u64);
        let read = limited.read_buf(&mut buf);
        tokio::pin!(read);
        let mut idle = false;
        let read = if slabs.is_empty() && !bulk {
            read.await
        } else {
            tokio::select! {
                r = &mut read => r,
                () = tokio::time::sleep(SLAB_IDLE) => {
                    slabs.quiet();
                    idle = true;
                    read.await
                }
            }
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "tunnel: local read failed; ending the stream");
                0
            }
        };
        let data = buf.split().freeze();
        *want = next_read_size(n);
        // A short read in the middle of a bulk transfer keeps the slabs
        // (dropping them there meant fresh pages for the next slab, which
        // the kernel faults in and clears); only a quiet stream lets them go.
        if bulk && !idle {
            slabs.restore(buf);
        }
        let mut st = shared.lock();
        if n == 0 {
            st.local_eof = true;
        } else {
            st.end += n as u64;
            st.replay.push_back(data);
        }
        drop(st);
        shared.raise(&shared.wake_tx);
    }
}

enum Act {
    Send(Frame),
    Wait(Option<Instant>),
    Done,
    Failed(String),
}

async fn send_loop<Tx: LinkTx>(shared: &Shared, tx: &mut Tx) -> Detach {
    let ack_every = (shared.cfg.buffer / 4).max(1) as u64;
    let mut fin_sent = false;
    let mut keepalive = shared.cfg.keepalive.map(|every| {
        let mut i = tokio::time::interval_at(Instant::now() + every, every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let act = {
            let mut st = shared.lock();
            let now = Instant::now();
            let unacked = st.written.saturating_sub(st.ack_sent);
            if let Some(reason) = st.failed.clone() {
                Act::Failed(reason)
            } else if (unacked > 0
                && (unacked >= ack_every || st.ack_due.is_some_and(|d| d <= now)))
                || (st.fin_written && !st.fin_ack_sent)
            {
                st.ack_sent = st.written;
                st.fin_ack_sent = st.fin_written;
                st.ack_due = None;
                Act::Send(Frame::Ack {
                    received: st.written,
                    fin: st.fin_written,
                })
            } else if st.next < st.end {
                let chunk = st.chunk_at(MAX_DATA);
                st.next += chunk.len() as u64;
                Act::Send(Frame::Data(chunk))
            } else if st.local_eof && !fin_sent {
                fin_sent = true;
                Act::Send(Frame::Fin)
            } else if st.done() {
                Act::Done
            } else {
                Act::Wait(if unacked > 0 { st.ack_due } else { None })
            }
        };
        match act {
            Act::Send(frame) => {
                if let Err(e) = tx.send(frame.encoded()).await {
                    return Detach::Broken(e.to_string());
                }
            }
            Act::Done => return Detach::Done,
            Act::Failed(reason) => return Detach::Failed(reason),
            Act::Wait(due) => {
                let ping = async {
                    match keepalive.as_mut() {
                        Some(k) => {
                            k.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                let timer = async {
                    match due {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    () = shared.wake_tx.wait() => {}
                    _ = timer => {}
                    _ = ping => {
                        if let Err(e) = tx.ping().await {
                            return Detach::Broken(e.to_string());
                        }
                    }
                }
            }
        }
    }
}

async fn recv_loop<Rx: LinkRx>(shared: &Shared, rx: &mut Rx, dec: &mut Decoder) -> Detach {
    loop {
        let frame = match recv_frame(rx, dec, shared.cfg.dead_after).await {
            Ok(Some(f)) => f,
            Ok(None) => return Detach::Broken("the connection closed".into()),
            Err(LinkError::Io(e)) => return Detach::Broken(e.to_string()),
            Err(LinkError::Protocol(e)) => return Detach::Failed(e.to_string()),
        };
        match frame {
            Frame::Data(d) => {
                // Queued for the local writer at once: this loop must go on
                // reading the ACKs behind this data (see the module docs).
                let mut st = shared.lock();
                if st.peer_fin {
                    return Detach::Failed("protocol error: data after FIN".into());
                }
                st.received += d.len() as u64;
                st.inbox.push_back(Out::Data(d));
                drop(st);
                shared.raise(&shared.wake_writer);
            }
            Frame::Ack { received, fin } => {
                let freed = match shared.lock().ack(received, fin) {
                    Ok(f) => f,
                    Err(e) => return Detach::Failed(e.to_string()),
                };
                if freed {
                    shared.raise(&shared.wake_reader);
                }
                shared.raise(&shared.wake_tx);
            }
            Frame::Fin => {
                {
                    let mut st = shared.lock();
                    if !std::mem::replace(&mut st.peer_fin, true) {
                        st.inbox.push_back(Out::Fin);
                    }
                }
                shared.raise(&shared.wake_writer);
                shared.raise(&shared.wake_tx);
            }
            Frame::Hello { .. } => {
                return Detach::Failed("protocol error: HELLO in mid-stream".into());
            }
            Frame::Error { code, reason } => return Detach::Refused { code, reason },
        }
    }
}

/// Writes what arrives to the local stream and reports progress for the
/// ACKs; after the stream's end (or failure), waits for the attachment
/// to end.
async fn write_local(shared: &Shared, local: &mut LocalWriter) -> std::convert::Infallible {
    let ack_every = (shared.cfg.buffer / 4).max(1) as u64;
    let LocalWriter {
        wr,
        pending,
        unflushed,
    } = local;
    loop {
        let over = {
            let st = shared.lock();
            st.failed.is_some() || st.fin_written
        };
        if over {
            return std::future::pending().await;
        }
        // Cancelled between polls when the attachment ends: whatever is
        // being written stays in `pending` until it is done, so the next
        // attachment goes on with it.
        let next = match pending.take() {
            Some(out) => Some(out),
            None => shared.lock().inbox.pop_front(),
        };
        let Some(out) = next else {
            // Nothing more queued: what was written goes out now.
            if *unflushed {
                if let Err(e) = wr.flush().await {
                    local_failed(shared, &e.to_string());
                    continue;
                }
                *unflushed = false;
            }
            shared.wake_writer.wait().await;
            continue;
        };
        match out {
            Out::Data(mut d) => {
                *pending = Some(Out::Data(d.clone()));
                let wrote = wr.write(&d).await;
                *pending = None;
                let n = match wrote {
                    Ok(0) => {
                        local_failed(shared, "it takes no more bytes");
                        continue;
                    }
                    Ok(n) => n,
                    Err(e) => {
                        local_failed(shared, &e.to_string());
                        continue;
                    }
                };
                d.advance(n);
                if !d.is_empty() {
                    *pending = Some(Out::Data(d));
                }
                *unflushed = true;
                let mut st = shared.lock();
                st.written += n as u64;
                if st.written - st.ack_sent >= ack_every {
                    drop(st);
                    shared.raise(&shared.wake_tx);
                } else if st.ack_due.is_none() {
                    st.ack_due = Some(Instant::now() + ACK_DELAY);
                    drop(st);
                    shared.raise(&shared.wake_tx);
                }
            }
            Out::Fin => {
                *pending = Some(Out::Fin);
                let _ = wr.shutdown().await;
                *pending = None;
                *unflushed = false;
                shared.lock().fin_written = true;
                shared.raise(&shared.wake_tx);
            }
        }
    }
}

/// The local stream cannot take more: the tunnel is over (the send loop
/// reports it to the peer).
fn local_failed(shared: &Shared, reason: &str) {
    let reason = format!("the local stream failed: {reason}");
    shared.lock().failed = Some(reason);
    shared.raise(&shared.wake_tx);
}

#[cfg(test)]
mod tests;
