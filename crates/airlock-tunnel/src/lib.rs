//! Byte pumping between a WebSocket and a stream, for SSH tunnels.
//!
//! The wire format is Backend.AI's: raw TCP bytes in BINARY messages, both
//! ways, no envelope. Reads are forwarded as they arrive (up to
//! [`resume::MAX_DATA`] bytes per message; clients accept 4 MiB), so interactive keystrokes are not delayed
//! and bulk transfers use large frames. Each direction awaits the other
//! side's writes, so a slow reader slows the writer instead of growing a
//! buffer: backpressure holds end to end. Pings are answered (tungstenite
//! queues the pong and flushes it on the next read).
//!
//! [`resume`] is the resumable variant our CLI negotiates
//! (`airlock-resume.v1`): framed, acknowledged, replayed after a reconnect.

pub mod resume;
pub mod ws;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use resume::{Encoded, LinkRx, LinkTx, StreamRx, StreamTx};

/// Largest message we accept (clients send reads of up to 16 MiB).
pub const MAX_MESSAGE: usize = 64 << 20;

/// How long the second direction may run on after the first has ended.
pub const LINGER: Duration = Duration::from_secs(10);

/// tungstenite's read buffer per WebSocket. It is allocated up front and
/// zero-filled up to this size before every read, so all of it is resident
/// for as long as the connection lives: with 256 KiB, an idle tunnel cost
/// ~270 KiB in the gateway and in `airlock app`; 32 KiB left the
/// gateway of `airlockd up` at ~71 KiB per idle tunnel, 16 KiB at ~57
/// (BENCHMARKS.md). It also caps one read syscall; a large frame still
/// lands in one buffer (tungstenite reserves the frame's length), it just
/// takes more, cheap reads — no loss measured in `bench/chain`.
pub const READ_BUFFER: usize = 16 * 1024;

/// Messages smaller than this wait in tungstenite's write buffer for the
/// next one or the sender's flush (every `send` flushes): a resumable
/// frame's 5-byte header goes out in one write with its payload, not in a
/// segment of its own.
pub const WRITE_BUFFER: usize = 16 * 1024;

/// WebSocket settings for tunnels.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_MESSAGE * 2)
}

/// The tunnel protocol on a WebSocket: what a client offers, what the
/// gateway relays to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Bytes in binary messages, as the official client speaks it.
    Plain,
    /// The resumable subprotocol ([`resume`]).
    Resumable,
}

/// Why a tunnel ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// The stream failed.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
}

/// What crossed a finished tunnel.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Bytes from the WebSocket to the stream.
    pub from_ws: u64,
    /// Bytes from the stream to the WebSocket.
    pub to_ws: u64,
    /// The close frame the peer sent, if any.
    pub close: Option<(u16, String)>,
}

/// Live byte counts of a running tunnel, updated per chunk by
/// [`relay_counted`] (relaxed atomics: no lock on the data path). Share it
/// (`Arc`) to read a tunnel's progress while it runs.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes from the WebSocket to the stream so far.
    pub from_ws: AtomicU64,
    /// Bytes from the stream to the WebSocket so far.
    pub to_ws: AtomicU64,
}

impl Counters {
    /// `(from_ws, to_ws)` now.
    pub fn get(&self) -> (u64, u64) {
        (
            self.from_ws.load(Ordering::Relaxed),
            self.to_ws.load(Ordering::Relaxed),
        )
    }
}

/// Relays until both sides are done (or one side failed and the other had
/// [`LINGER`] to finish).
pub async fn relay<S, T>(ws: WebSocketStream<S>, io: T) -> Stats
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    relay_counted(ws, io, &Counters::default()).await
}

/// [`relay`], counting the bytes each way in `counters` as they pass (a
/// chunk is counted once it was written to the stream, or read from it).
pub async fn relay_counted<S, T>(ws: WebSocketStream<S>, io: T, counters: &Counters) -> Stats
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (rd, wr) = tokio::io::split(io);
    relay_link(ws, StreamRx::new(rd), StreamTx(wr), counters).await
}

/// Relays between a WebSocket and any transport: what arrives from `rx`
/// goes out as one binary message, each message's bytes go to `tx`.
async fn relay_link<S, R, W>(
    ws: WebSocketStream<S>,
    mut rx: R,
    mut tx: W,
    counters: &Counters,
) -> Stats
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    R: LinkRx,
    W: LinkTx,
{
    let (mut sink, mut stream) = ws.split();

    let from_ws = &counters.from_ws;
    let to_ws = &counters.to_ws;
    let inbound = async {
        let mut close = None;
        let result: Result<(), TunnelError> = async {
            while let Some(msg) = stream.next().await {
                let msg = match msg {
                    Ok(m) => m,
                    // The normal end after a close handshake.
                    Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => break,
                    Err(e) => return Err(e.into()),
                };
                match msg {
                    Message::Binary(data) => {
                        let n = data.len() as u64;
                        // Flushed: stdout is line-buffered (ProxyCommand
                        // mode); a no-op on sockets.
                        tx.send(Encoded::relayed(data)).await?;
                        from_ws.fetch_add(n, Ordering::Relaxed);
                    }
                    Message::Close(frame) => {
                        // Keep polling: tungstenite flushes its close reply on
                        // the next read, which then reports the end.
                        close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                        tx.shutdown().await;
                    }
                    // Text frames carry nothing for us; pings are answered
                    // by tungstenite itself.
                    _ => {}
                }
            }
            Ok(())
        }
        .await;
        tx.shutdown().await;
        (result, close)
    };
    let outbound = async {
        let result: Result<(), TunnelError> = async {
            while let Some(data) = rx.recv().await? {
                if data.is_empty() {
                    continue;
                }
                to_ws.fetch_add(data.len() as u64, Ordering::Relaxed);
                sink.send(Message::Binary(data)).await?;
            }
            Ok(())
        }
        .await;
        // 1000 for a clean end: the official client treats any other code
        // as an error and writes an HTTP 503 into the SSH connection.
        let frame = CloseFrame {
            code: if result.is_ok() {
                CloseCode::Normal
            } else {
                CloseCode::Error
            },
            reason: "".into(),
        };
        // `send` flushes; the peer's reply ends the inbound direction.
        let _ = sink.send(Message::Close(Some(frame))).await;
        result
    };
    tokio::pin!(inbound);
    tokio::pin!(outbound);
    let mut stats = Stats::default();
    let mut errors = Vec::new();
    tokio::select! {
        (r, close) = &mut inbound => {
            stats.close = close;
            errors.push(r);
            if let Ok(r) = tokio::time::timeout(LINGER, &mut outbound).await {
                errors.push(r);
            }
        }
        r = &mut outbound => {
            errors.push(r);
            if let Ok((r, close)) = tokio::time::timeout(LINGER, &mut inbound).await {
                stats.close = close;
                errors.push(r);
            }
        }
    }
    (stats.from_ws, stats.to_ws) = counters.get();
    for e in errors.into_iter().filter_map(Result::err) {
        tracing::debug!(error = %e, "tunnel ended with an error");
    }
    stats
}

/// Longest preamble [`read_ssh_banner`] reads before giving up.
const MAX_BANNER: usize = 8 * 1024;

/// Reads the identification line an SSH server sends first (`SSH-2.0-…`),
/// skipping other lines before it as RFC 4253 §4.2 allows (for `airlock
/// ping`). May read past the line; the stream is meant to be dropped after.
pub async fn read_ssh_banner<R>(r: &mut R) -> std::io::Result<String>
where
    R: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(256);
    loop {
        if let Some(line) = buf
            .split(|b| *b == b'\n')
            .take(buf.iter().filter(|b| **b == b'\n').count())
            .find(|l| l.starts_with(b"SSH-"))
        {
            let line = String::from_utf8_lossy(line);
            return Ok(line.trim_end_matches('\r').to_owned());
        }
        if buf.len() >= MAX_BANNER {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no SSH identification line in the first 8 KiB",
            ));
        }
        let mut chunk = [0u8; 512];
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Closes a WebSocket with a code and a reason (for refusals after the
/// upgrade, e.g. 1013 "try again later").
pub async fn close_with<S>(mut ws: WebSocketStream<S>, code: u16, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
    // Wait briefly for the peer's close so the frame is delivered.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::protocol::Role;

    #[tokio::test]
    async fn reads_the_ssh_banner() {
        let mut r: &[u8] = b"hello\r\nSSH-2.0-airlock\r\n\x00\x00";
        assert_eq!(read_ssh_banner(&mut r).await.unwrap(), "SSH-2.0-airlock");
        let mut r: &[u8] = b"SSH-2.0-partial";
        assert!(read_ssh_banner(&mut r).await.is_err());
        let mut r: &[u8] = &[b'x'; 9000];
        assert!(read_ssh_banner(&mut r).await.is_err());
    }

    /// Both ends of a WebSocket over an in-memory stream: (server, client).
    pub(crate) async fn ws_pair() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (client_side, server_side) = tokio::io::duplex(1 << 20);
        (
            WebSocketStream::from_raw_socket(server_side, Role::Server, Some(ws_config())).await,
            WebSocketStream::from_raw_socket(client_side, Role::Client, Some(ws_config())).await,
        )
    }

    #[tokio::test]
    async fn relays_both_ways_and_closes() {
        let (ws_server, mut ws_client) = ws_pair().await;
        let (io_ours, mut io_far) = tokio::io::duplex(1 << 20);
        let counters = std::sync::Arc::new(Counters::default());
        let live = counters.clone();
        let task = tokio::spawn(async move { relay_counted(ws_server, io_ours, &counters).await });
        ws_client
            .send(Message::Binary(vec![1u8; 3_000_000].into()))
            .await
            .unwrap();
        let mut got = vec![0u8; 3_000_000];
        io_far.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|b| *b == 1));
        io_far.write_all(b"pong").await.unwrap();
        let mut echoed = Vec::new();
        while echoed.len() < 4 {
            if let Some(Ok(Message::Binary(b))) = ws_client.next().await {
                echoed.extend_from_slice(&b);
            }
        }
        assert_eq!(echoed, b"pong");
        // The counts are visible while the tunnel still runs (the inbound
        // side counts a chunk just after writing it, so poll briefly).
        tokio::time::timeout(Duration::from_secs(10), async {
            while live.get() != (3_000_000, 4) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("live counts {:?}", live.get()));
        assert!(!task.is_finished());
        drop(io_far);
        let mut saw_close = false;
        while let Some(Ok(m)) = ws_client.next().await {
            if m.is_close() {
                saw_close = true;
                break;
            }
        }
        assert!(saw_close);
        // Polling again flushes tungstenite's automatic close reply.
        assert!(ws_client.next().await.is_none_or(|r| r.is_err()));
        let t = std::time::Instant::now();
        let stats = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .unwrap()
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "relay lingered {:?}",
            t.elapsed()
        );
        assert_eq!(stats.from_ws, 3_000_000);
        assert_eq!(stats.to_ws, 4);
    }
}
