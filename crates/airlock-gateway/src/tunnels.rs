//! Live tunnels: a registry (for `GET /admin/tunnels` and the shutdown
//! drain) and the connection to a session's runner through its agent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use airlock_proto::agent::{ORIGIN_CLIENT_HEADER, ORIGIN_CONN_HEADER, TCP_UPGRADE, TunnelOrigin};
use airlock_tunnel::{Counters, Protocol, Stats};
use http::header;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::agents::AgentCallError;

/// What [`LocalAgent`]'s methods return: a boxed future (the trait is
/// used as `dyn`), failing with a reason for people.
pub type Opening<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, String>> + Send + 'a>>;

/// An agent running in this process (`airlockd up`): tunnels reach its
/// containers directly instead of through an HTTP hop to ourselves.
pub trait LocalAgent: Send + Sync + std::fmt::Debug {
    /// A TCP connection to the SSH server of a running session, serving
    /// the client connection `origin` (for the audit trail).
    fn connect<'a>(
        &'a self,
        session_id: &'a str,
        origin: Option<&'a TunnelOrigin>,
    ) -> Opening<'a, tokio::net::TcpStream>;

    /// Whether `session_id` runs on this node (else why not, for people).
    fn holds(&self, session_id: &str) -> Result<(), String>;

    /// Serves one attachment of a resumable tunnel to a session on this
    /// node over the client's WebSocket `link` itself (the agent reads the
    /// client's HELLO from it): one task and no relay between the client
    /// and the runner's socket. Resolves when the attachment ends; the
    /// caller closes the link. A session that went away meanwhile is
    /// refused on the link (an `ERROR` frame).
    fn attach<'a>(
        &'a self,
        session_id: &'a str,
        origin: Option<&'a TunnelOrigin>,
        link: &'a mut ClientLink,
    ) -> Attaching<'a>;
}

/// What [`LocalAgent::attach`] returns.
pub type Attaching<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// The client's end of a tunnel WebSocket, as the gateway serves it.
pub type ClientIo = TokioIo<hyper::upgrade::Upgraded>;

/// A resumable tunnel's link over the client's WebSocket.
pub type ClientLink = airlock_tunnel::ws::WsLink<ClientIo>;

/// A tunnel in the registry, as `GET /admin/tunnels` and `/admin/cluster`
/// show it: byte counts and duration are live.
#[derive(Debug, Clone, Serialize)]
pub struct TunnelInfo {
    /// Tunnel number.
    pub id: u64,
    /// What was known when it opened (its fields appear at this level).
    #[serde(flatten)]
    pub meta: TunnelMeta,
    /// RFC 3339 start time.
    pub since: String,
    /// Seconds open so far.
    pub duration_s: u64,
    /// Bytes from the client to the session so far.
    pub bytes_up: u64,
    /// Bytes from the session to the client so far.
    pub bytes_down: u64,
}

/// What is known about a tunnel when it opens.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TunnelMeta {
    /// Session id.
    pub session_id: String,
    /// Session name.
    pub session_name: String,
    /// Who opened it.
    pub user: String,
    /// Which program opened it (`airlock`, `backend.ai`, …).
    pub client: String,
    /// Its version, when it says.
    pub client_version: Option<String>,
    /// The client's address.
    pub client_addr: Option<String>,
    /// The gateway connection id (ties it to the audit trail).
    pub conn: Option<String>,
    /// Whether it is a resumable (`airlock-resume.v1`) tunnel.
    pub resumable: bool,
}

#[derive(Debug)]
struct Entry {
    meta: TunnelMeta,
    since: String,
    started: Instant,
    counters: Arc<Counters>,
}

/// All live tunnels, and the bytes of those that ended.
#[derive(Debug, Default)]
pub struct Tunnels {
    next: AtomicU64,
    live: Mutex<Live>,
}

#[derive(Debug, Default)]
struct Live {
    open: HashMap<u64, Entry>,
    /// Bytes `(up, down)` of the tunnels that ended. Moved here from an
    /// entry under the same lock that removes it, so open + ended never
    /// goes down (a Prometheus counter).
    ended: (u64, u64),
}

/// Removes its tunnel from the registry when dropped; hands the relay the
/// tunnel's live counters.
#[derive(Debug)]
pub struct TunnelGuard<'a> {
    id: u64,
    tunnels: &'a Tunnels,
    counters: Arc<Counters>,
}

impl TunnelGuard<'_> {
    /// The counters the relay updates (read by [`Tunnels::list`]).
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
}

impl Drop for TunnelGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut live) = self.tunnels.live.lock()
            && let Some(e) = live.open.remove(&self.id)
        {
            let (up, down) = e.counters.get();
            live.ended.0 += up;
            live.ended.1 += down;
            crate::metrics::tunnel_ended(e.started.elapsed().as_secs_f64());
        }
    }
}

impl Tunnels {
    /// Registers a tunnel for as long as the guard lives.
    pub fn open(&self, meta: TunnelMeta) -> TunnelGuard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let counters = Arc::new(Counters::default());
        let entry = Entry {
            meta,
            since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            started: Instant::now(),
            counters: counters.clone(),
        };
        if let Ok(mut live) = self.live.lock() {
            live.open.insert(id, entry);
        }
        TunnelGuard {
            id,
            tunnels: self,
            counters,
        }
    }

    /// How many tunnels are open.
    pub fn count(&self) -> usize {
        self.live.lock().map(|l| l.open.len()).unwrap_or(0)
    }

    /// Bytes `(up, down)` relayed so far by every tunnel, open or ended:
    /// they only grow, so they are live Prometheus counters.
    pub fn bytes_total(&self) -> (u64, u64) {
        self.live
            .lock()
            .map(|l| {
                l.open.values().fold(l.ended, |(u, d), e| {
                    let (up, down) = e.counters.get();
                    (u + up, d + down)
                })
            })
            .unwrap_or_default()
    }

    /// A snapshot of the live tunnels, with their byte counts now.
    pub fn list(&self) -> Vec<TunnelInfo> {
        let mut v: Vec<TunnelInfo> = self
            .live
            .lock()
            .map(|l| {
                l.open
                    .iter()
                    .map(|(id, e)| {
                        let (up, down) = e.counters.get();
                        TunnelInfo {
                            id: *id,
                            meta: e.meta.clone(),
                            since: e.since.clone(),
                            duration_s: e.started.elapsed().as_secs(),
                            bytes_up: up,
                            bytes_down: down,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|t| t.id);
        v
    }
}

/// A connection to an agent, plain or TLS.
trait AgentStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AgentStream for T {}

/// Opens a raw byte stream to a session's SSH server through its agent
/// (`GET /v1/sessions/{id}/connect`, upgraded to `airlock-tcp`); with
/// [`Protocol::Resumable`], to the agent's end of a resumable tunnel instead
/// (`&resume=1`: the stream carries `airlock-resume.v1` frames, which the
/// gateway relays without looking at them).
pub async fn connect_agent(
    agent_url: &str,
    token: &str,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    session_id: &str,
    protocol: Protocol,
    origin: Option<&TunnelOrigin>,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, AgentCallError> {
    let url = url::Url::parse(agent_url)
        .map_err(|e| AgentCallError::Unreachable(format!("bad agent URL {agent_url}: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| AgentCallError::Unreachable(format!("bad agent URL {agent_url}")))?
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| AgentCallError::Unreachable(format!("connecting to {agent_url} timed out")))?
    .map_err(|e| AgentCallError::Unreachable(format!("{agent_url}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    // An https:// agent (`airlockd agent --tls-cert`): verified like every
    // other agent call (system roots, SSL_CERT_FILE).
    let io: Box<dyn AgentStream> = if url.scheme() == "https" {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| AgentCallError::Unreachable(format!("bad agent host {host}: {e}")))?;
        let config = tls.ok_or_else(|| {
            AgentCallError::Unreachable(format!(
                "{agent_url}: no certificate verification on this gateway"
            ))
        })?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| AgentCallError::Unreachable(format!("{agent_url}: TLS: {e}")))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| AgentCallError::Unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "agent connection ended");
        }
    });
    let req = http::Request::builder()
        .method(http::Method::GET)
        .uri(format!(
            "/v1/sessions/{session_id}/connect?port={}{}",
            airlock_proto::SSHD_PORT,
            match protocol {
                Protocol::Resumable => "&resume=1",
                Protocol::Plain => "",
            }
        ))
        .header(header::HOST, format!("{host}:{port}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, TCP_UPGRADE);
    let req = match origin {
        Some(o) => req
            .header(ORIGIN_CONN_HEADER, o.conn.as_str())
            .header(ORIGIN_CLIENT_HEADER, o.client.as_str()),
        None => req,
    };
    let req = req
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| AgentCallError::Unreachable(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| AgentCallError::Unreachable(e.to_string()))?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let problem = serde_json::from_slice(&body).unwrap_or_else(|_| {
            airlock_proto::problem::Problem::new("agent-error", "Agent error")
                .msg(format!("the node answered {status}"))
        });
        return Err(AgentCallError::Rejected {
            status,
            problem: Box::new(problem),
        });
    }
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(|e| AgentCallError::Unreachable(e.to_string()))?;
    Ok(TokioIo::new(upgraded))
}

/// A byte stream to a session's SSH server (or to the agent's end of a
/// resumable tunnel).
pub trait RunnerStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> RunnerStream for T {}

/// What [`open_runner`] and [`open_tunnel`] give.
pub struct Opened<T = Box<dyn RunnerStream>> {
    /// The stream (or pipe).
    pub stream: T,
    /// The address the runner sees this end at (known for in-process
    /// agents): the runner's events are tied back to the client through it.
    pub runner_peer: Option<String>,
}

/// The far end of a tunnel WebSocket.
pub enum Far {
    /// A byte stream: the runner's SSH server, or a remote agent's end of
    /// a resumable tunnel.
    Stream(Box<dyn RunnerStream>),
    /// A resumable tunnel served by this process's agent, on the
    /// WebSocket itself.
    Local {
        /// The agent.
        agent: Arc<dyn LocalAgent>,
        /// The session.
        session_id: String,
        /// The client connection, for the audit trail.
        origin: Option<TunnelOrigin>,
    },
}

impl Far {
    /// Relays `ws` to it (or hands it to the local agent) until both are
    /// done, counting in `counters`.
    pub async fn relay(self, ws: WebSocketStream<ClientIo>, counters: &Arc<Counters>) -> Stats {
        match self {
            Far::Stream(s) => airlock_tunnel::relay_counted(ws, s, counters).await,
            Far::Local {
                agent,
                session_id,
                origin,
            } => {
                let mut link = airlock_tunnel::ws::ws_link(ws, counters.clone());
                agent.attach(&session_id, origin.as_ref(), &mut link).await;
                airlock_tunnel::ws::close_link(&mut link, CloseCode::Normal, "").await;
                let (from_ws, to_ws) = counters.get();
                Stats {
                    from_ws,
                    to_ws,
                    close: link.rx.close_frame().cloned(),
                }
            }
        }
    }
}

/// Opens a stream to running session `s`'s SSH server through its agent:
/// directly for an agent in this process, else by an HTTP upgrade on the
/// agent's API. The error is a reason for people.
pub async fn open_runner(
    state: &crate::AppState,
    s: &crate::store::SessionRow,
    origin: Option<&TunnelOrigin>,
) -> Result<Opened, String> {
    let agent = crate::sessions::agent_of(state, s)
        .await
        .map_err(|_| "the session's node is unknown".to_owned())?;
    if let Some(local) = state.local_agent(&agent.id) {
        let tcp = local.connect(&s.id, origin).await?;
        return Ok(Opened {
            runner_peer: tcp.local_addr().ok().map(|a| a.to_string()),
            stream: Box::new(tcp),
        });
    }
    remote(state, &agent, s, Protocol::Plain, origin)
        .await
        .map(|stream| Opened {
            stream,
            runner_peer: None,
        })
}

/// [`open_runner`] for a tunnel WebSocket speaking `protocol`: with
/// [`Protocol::Resumable`], to the agent's resumable tunnel end (an agent
/// in this process serves it on the WebSocket itself: [`Far::Local`]).
pub async fn open_tunnel(
    state: &crate::AppState,
    s: &crate::store::SessionRow,
    protocol: Protocol,
    origin: Option<&TunnelOrigin>,
) -> Result<Opened<Far>, String> {
    if protocol == Protocol::Plain {
        return open_runner(state, s, origin).await.map(|o| Opened {
            stream: Far::Stream(o.stream),
            runner_peer: o.runner_peer,
        });
    }
    let agent = crate::sessions::agent_of(state, s)
        .await
        .map_err(|_| "the session's node is unknown".to_owned())?;
    let far = match state.local_agent(&agent.id) {
        Some(agent) => {
            agent.holds(&s.id)?;
            Far::Local {
                agent,
                session_id: s.id.clone(),
                origin: origin.cloned(),
            }
        }
        None => Far::Stream(remote(state, &agent, s, protocol, origin).await?),
    };
    Ok(Opened {
        stream: far,
        runner_peer: None,
    })
}

/// A stream through a remote agent's API.
async fn remote(
    state: &crate::AppState,
    agent: &crate::store::AgentRow,
    s: &crate::store::SessionRow,
    protocol: Protocol,
    origin: Option<&TunnelOrigin>,
) -> Result<Box<dyn RunnerStream>, String> {
    match connect_agent(
        &agent.url,
        state.agents().token_for(agent),
        state.agents().tls(),
        &s.id,
        protocol,
        origin,
    )
    .await
    {
        Ok(st) => Ok(Box::new(st)),
        Err(AgentCallError::Unreachable(detail)) => {
            tracing::warn!(agent = %agent.id, %detail, "cannot reach the session's node");
            Err("the session's node is unreachable".to_owned())
        }
        Err(AgentCallError::Rejected { problem, .. }) => Err(problem.message().to_owned()),
    }
}
