//! Port forwarding, agent forwarding and the channel <-> stream bridge.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::error::{Error, Result};
use crate::queue::Backlog;
use crate::resolve;

/// Read size for streams forwarded into channels.
const READ_CHUNK: usize = 64 * 1024;

/// Connect to a forwarding target without NSS/DNS.
pub async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream> {
    let addrs = resolve::resolve(host, port);
    if addrs.is_empty() {
        return Err(Error::Invalid(format!(
            "cannot resolve {host:?} (numeric addresses, localhost and /etc/hosts only)"
        )));
    }
    let mut last = None;
    for a in addrs {
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = Some(Error::io(format!("connect {a}"), e)),
            Err(_) => last = Some(Error::Invalid(format!("connect {a}: timed out"))),
        }
    }
    Err(last.unwrap_or_else(|| Error::Invalid("no address".into())))
}

/// Copy data both ways between an SSH channel and a byte stream until both
/// sides are done. The channel reader never waits on the stream: data goes
/// into the connection's accounted queue (queue.rs), so a target that echoes
/// (stops reading until its output is sent) cannot stop the session loop
/// that reads the window adjusts its output waits for.
pub async fn bridge<S>(channel: Channel<Msg>, stream: S, backlog: Backlog)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rx, tx) = channel.split();
    let (mut srd, mut swr) = tokio::io::split(stream);
    let (qtx, mut qrx) = backlog.queue::<Bytes>();
    let writer = tokio::spawn(async move {
        while let Some(b) = qrx.recv().await {
            if swr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = swr.shutdown().await;
    });
    let tx = std::sync::Arc::new(tx);
    let tx2 = tx.clone();
    let mut reader = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            buf.reserve(READ_CHUNK);
            match srd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx2.data_bytes(buf.split().freeze()).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx2.eof().await;
    });
    let mut qtx = Some(qtx);
    let mut reader_done = false;
    let mut client_eof = false;
    let mut closed_sent = false;
    loop {
        tokio::select! {
            m = rx.wait() => match m {
                Some(ChannelMsg::Data { data }) => {
                    let n = data.len();
                    if let Some(q) = &qtx
                        && q.push(data, n).is_err()
                    {
                        qtx = None;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    client_eof = true;
                    qtx = None;
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            _ = &mut reader, if !reader_done => {
                reader_done = true;
            }
        }
        if reader_done && client_eof && !closed_sent {
            closed_sent = true;
            let _ = tx.close().await;
        }
    }
    drop(qtx);
    reader.abort();
    let _ = writer.await;
}

/// Start a remote (`ssh -R`) forward listener; returns the bound port.
pub async fn listen_remote(
    address: &str,
    port: u16,
    handle: Handle,
    backlog: Backlog,
    token: CancellationToken,
) -> Result<(u16, CancellationToken)> {
    let addrs = resolve::bind_addrs(address, port);
    let mut last = None;
    let mut listener = None;
    for a in addrs {
        match TcpListener::bind(a).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(e) => last = Some(Error::io(format!("bind {a}"), e)),
        }
    }
    let listener = match listener {
        Some(l) => l,
        None => {
            return Err(last.unwrap_or_else(|| Error::Invalid(format!("cannot bind {address:?}"))));
        }
    };
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("local address", e))?
        .port();
    let addr = address.to_string();
    let t = token.clone();
    tokio::spawn(async move {
        loop {
            let (sock, peer): (TcpStream, SocketAddr) = tokio::select! {
                _ = t.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(_) => { tokio::time::sleep(Duration::from_millis(100)).await; continue }
                },
            };
            let _ = sock.set_nodelay(true);
            let handle = handle.clone();
            let addr = addr.clone();
            let backlog = backlog.clone();
            tokio::spawn(async move {
                match handle
                    .channel_open_forwarded_tcpip(
                        addr,
                        u32::from(bound),
                        peer.ip().to_string(),
                        u32::from(peer.port()),
                    )
                    .await
                {
                    Ok(ch) => bridge(ch, sock, backlog).await,
                    Err(e) => debug!("forwarded-tcpip open refused: {e}"),
                }
            });
        }
    });
    Ok((bound, token))
}

/// A forwarded agent socket for one session; removed when dropped.
#[derive(Debug)]
pub struct AgentSocket {
    dir: PathBuf,
    /// The socket path exported as `SSH_AUTH_SOCK`.
    pub path: PathBuf,
    token: CancellationToken,
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        self.token.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Create a private agent socket; each connection to it opens an
/// `auth-agent@openssh.com` channel to the client.
pub fn start_agent(
    handle: Handle,
    backlog: Backlog,
    token: CancellationToken,
) -> Result<AgentSocket> {
    use std::os::unix::fs::DirBuilderExt as _;
    let tag: u64 = rand::random();
    let dir = std::env::temp_dir().join(format!("airlock-agent-{tag:016x}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::path("create", &dir, e))?;
    let path = dir.join(format!("agent.{}", std::process::id()));
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Error::path("bind", &path, e));
        }
    };
    let t = token.clone();
    tokio::spawn(async move {
        loop {
            let sock = tokio::select! {
                _ = t.cancelled() => break,
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(_) => { tokio::time::sleep(Duration::from_millis(100)).await; continue }
                },
            };
            let handle = handle.clone();
            let backlog = backlog.clone();
            tokio::spawn(async move {
                match handle.channel_open_agent().await {
                    Ok(ch) => bridge(ch, sock, backlog).await,
                    Err(e) => debug!("agent channel open refused: {e}"),
                }
            });
        }
    });
    Ok(AgentSocket { dir, path, token })
}
