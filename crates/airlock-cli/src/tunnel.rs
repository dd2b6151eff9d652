//! Opening tunnels: one WebSocket per TCP connection to the gateway's
//! `/stream/session/{s}/tcpproxy?app=sshd`, authenticated like every other
//! request (cookie or signature).

use std::net::SocketAddr;
use std::time::Duration;

use airlock_tunnel::resume::{
    Config, DEFAULT_GRACE, Detach, ERR_UNKNOWN, Endpoint, Frame, LinkError, SUBPROTOCOL, TunnelId,
};
use airlock_tunnel::{relay, ws_config};
use reqwest::Method;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::ApiClient;
use crate::error::{CliError, CliResult};
use crate::output;
use crate::transfer::enc;

/// A connected tunnel WebSocket.
pub type Tunnel = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Close code the gateway uses for "not now" (session not running, node
/// unreachable).
pub const TRY_AGAIN_LATER: u16 = 1013;

/// Opens a tunnel to `session`'s SSH server (the plain protocol).
pub async fn open(client: &ApiClient, session: &str) -> CliResult<Tunnel> {
    open_with(client, session, Protocol::Plain)
        .await
        .map_err(OpenError::into_inner)
}

/// Why a tunnel could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Trying again will not help (refused, not found, not logged in,
    /// untrusted certificate).
    Definitive(CliError),
    /// It may work later (network, gateway down or restarting).
    Transient(CliError),
    /// The gateway does not speak the resumable protocol.
    NoResume,
}

impl OpenError {
    /// The error for people.
    pub fn into_inner(self) -> CliError {
        match self {
            OpenError::Definitive(e) | OpenError::Transient(e) => e,
            OpenError::NoResume => CliError::new("the gateway does not offer resumable tunnels"),
        }
    }
}

/// The tunnel protocol a client asks for.
pub use airlock_tunnel::Protocol;

/// Opens a tunnel WebSocket with `protocol`.
pub async fn open_with(
    client: &ApiClient,
    session: &str,
    protocol: Protocol,
) -> Result<Tunnel, OpenError> {
    let http_url = client
        .url(&format!(
            "/stream/session/{}/tcpproxy?app=sshd",
            enc(session)
        ))
        .map_err(OpenError::Definitive)?;
    let mut ws_url = http_url.clone();
    let scheme = if http_url.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    ws_url
        .set_scheme(scheme)
        .map_err(|()| OpenError::Definitive(CliError::new("cannot build the tunnel URL")))?;
    let mut req = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| OpenError::Definitive(CliError::new(format!("bad tunnel URL: {e}"))))?;
    // WebSocket upgrades carry no Content-Type; the signature covers that.
    let auth = client
        .auth_headers(&Method::GET, &http_url, "")
        .map_err(OpenError::Definitive)?;
    for (k, v) in &auth {
        req.headers_mut().insert(k.clone(), v.clone());
    }
    req.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("airlock-cli/", env!("CARGO_PKG_VERSION"))),
    );
    if protocol == Protocol::Resumable {
        req.headers_mut().insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        req,
        Some(ws_config()),
        true,
        Some(tokio_tungstenite::Connector::Rustls(client.tls())),
    );
    let (ws, _resp) = tokio::time::timeout(std::time::Duration::from_secs(20), connect)
        .await
        .map_err(|_| {
            OpenError::Transient(
                CliError::new(format!(
                    "opening a tunnel to {} timed out",
                    client.config().base()
                ))
                .hint("check your network and that the gateway is up"),
            )
        })?
        .map_err(|e| match e {
            WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(
                SubProtocolError::NoSubProtocol,
            )) => OpenError::NoResume,
            e => {
                let definitive = match &e {
                    WsError::Http(resp) => {
                        let s = resp.status();
                        s.is_client_error() && s != http::StatusCode::TOO_MANY_REQUESTS
                    }
                    WsError::Tls(_) => true,
                    WsError::Io(io) => crate::tls::tls_failure(io).is_some(),
                    _ => false,
                };
                let err = handshake_error(client, session, e);
                if definitive {
                    OpenError::Definitive(err)
                } else {
                    OpenError::Transient(err)
                }
            }
        })?;
    Ok(ws)
}

fn handshake_error(client: &ApiClient, session: &str, e: WsError) -> CliError {
    let tls = match &e {
        WsError::Tls(t) => Some(crate::tls::tls_failure(t).unwrap_or_else(|| t.to_string())),
        WsError::Io(io) => crate::tls::tls_failure(io),
        _ => None,
    };
    if let Some(reason) = tls {
        return crate::tls::verification_error(&client.config().base(), &reason);
    }
    match e {
        WsError::Http(resp) => {
            let status = resp.status();
            let problem = resp
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice::<airlock_proto::problem::Problem>(b).ok());
            if status == http::StatusCode::UNAUTHORIZED {
                return CliError::new(
                    "the gateway refused the tunnel: you are not logged in (or the login expired)",
                )
                .hint("run `airlock login`");
            }
            match problem {
                Some(p) => {
                    let mut err = CliError::new(format!(
                        "cannot open a tunnel to {session}: {}",
                        p.message()
                    ));
                    if let Some(h) = p.hint {
                        err = err.hint(h);
                    }
                    err
                }
                None => CliError::new(format!(
                    "cannot open a tunnel to {session}: the gateway answered {status}"
                )),
            }
        }
        WsError::Io(io) => CliError::new(format!(
            "cannot reach the airlock gateway at {}: {io}",
            client.config().base()
        ))
        .hint("is `airlockd up` running there? check BACKEND_ENDPOINT"),
        other => CliError::new(format!("cannot open a tunnel to {session}: {other}")),
    }
}

/// Explains a close frame from the gateway (none for a normal end).
pub fn explain_close(close: &Option<(u16, String)>) -> Option<String> {
    match close {
        Some((code, reason)) if *code == TRY_AGAIN_LATER || *code >= 1011 => {
            Some(if reason.is_empty() {
                format!("the gateway closed the tunnel (code {code})")
            } else {
                format!("the gateway closed the tunnel: {reason}")
            })
        }
        _ => None,
    }
}

/// Opens a tunnel and relays `io` through it, reporting problems on stderr.
pub async fn serve_connection<R, W>(client: &ApiClient, session: &str, rd: R, wr: W)
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    if let Err(e) = run(client, session, rd, wr).await {
        output::failure(&e.message);
        if let Some(h) = &e.hint {
            eprintln!("  hint: {h}");
        }
    }
}

/// Runs a tunnel between `rd`/`wr` and the session's SSH server until it
/// ends: resumable when the gateway agrees (the connection to the gateway
/// may break and is re-established, see [`airlock_tunnel::resume`]), the
/// plain protocol otherwise. Errors say why it ended badly.
pub async fn run<R, W>(client: &ApiClient, session: &str, rd: R, wr: W) -> CliResult<()>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    // `AIRLOCK_NO_RESUME=1`: the plain protocol (for comparisons, or a
    // middlebox that mangles WebSocket subprotocols).
    let offer =
        std::env::var("AIRLOCK_NO_RESUME").map_or(true, |v| v.trim().is_empty() || v.trim() == "0");
    let protocol = if offer {
        Protocol::Resumable
    } else {
        Protocol::Plain
    };
    let first = match open_with(client, session, protocol).await {
        Ok(ws) if protocol == Protocol::Plain => {
            let stats = relay(ws, tokio::io::join(rd, wr)).await;
            return match explain_close(&stats.close) {
                Some(msg) => Err(CliError::new(msg)),
                None => Ok(()),
            };
        }
        Ok(ws) => ws,
        Err(OpenError::NoResume) => {
            let ws = open(client, session).await?;
            let stats = relay(ws, tokio::io::join(rd, wr)).await;
            return match explain_close(&stats.close) {
                Some(msg) => Err(CliError::new(msg)),
                None => Ok(()),
            };
        }
        Err(e) => return Err(e.into_inner()),
    };
    resumable(
        client,
        session,
        first,
        Endpoint::new(rd, wr, Config::client()),
    )
    .await
}

/// Reconnect backoff: first and longest wait.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// The link over a tunnel WebSocket.
type WsLink = airlock_tunnel::ws::WsLink<MaybeTlsStream<TcpStream>>;

/// What one attachment came to.
enum Step {
    Over(CliResult<()>),
    Broken(String),
}

async fn resumable(
    client: &ApiClient,
    session: &str,
    first: Tunnel,
    ep: Endpoint,
) -> CliResult<()> {
    let mut id = TunnelId::default();
    let mut grace = DEFAULT_GRACE;
    let mut next = Some(first);
    // Since when, and why, we are without a link.
    let mut broken: Option<(Instant, String)> = None;
    let mut backoff = BACKOFF.0;
    loop {
        let ws = match next.take() {
            Some(ws) => ws,
            None => {
                let (since, why) = broken
                    .clone()
                    .unwrap_or_else(|| (Instant::now(), String::new()));
                if since.elapsed() >= grace {
                    return Err(CliError::new(format!(
                        "lost the tunnel to {session}: no connection to the gateway for {} s ({why})",
                        grace.as_secs()
                    ))
                    .hint("check your network and that the gateway is up; the session itself keeps running"));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
                match open_with(client, session, Protocol::Resumable).await {
                    Ok(ws) => ws,
                    Err(OpenError::Transient(e)) => {
                        broken = Some((since, e.message));
                        continue;
                    }
                    Err(OpenError::NoResume) => {
                        return Err(CliError::new(format!(
                            "lost the tunnel to {session}: the gateway no longer offers resumable tunnels"
                        )));
                    }
                    Err(OpenError::Definitive(e)) => return Err(e),
                }
            }
        };
        let mut link: WsLink = airlock_tunnel::ws::ws_link(ws, Default::default());
        match attach_once(&ep, &mut link, &mut id, &mut grace, &mut broken, session).await {
            Step::Over(r) => {
                link.tx.close(CloseCode::Normal, "").await;
                return r;
            }
            Step::Broken(why) => {
                if let Some(msg) = definitive_close(&link.rx.close_frame().cloned()) {
                    return Err(CliError::new(msg));
                }
                if broken.is_none() {
                    output::warning(&format!(
                        "the connection to the gateway broke ({why}); reconnecting (the SSH connection stays open for {} s)",
                        grace.as_secs()
                    ));
                    broken = Some((Instant::now(), why));
                    backoff = BACKOFF.0;
                } else if let Some((_, last)) = broken.as_mut() {
                    *last = why;
                }
            }
        }
    }
}

/// A handshake and an attachment over one WebSocket.
async fn attach_once(
    ep: &Endpoint,
    link: &mut WsLink,
    id: &mut TunnelId,
    grace: &mut Duration,
    broken: &mut Option<(Instant, String)>,
    session: &str,
) -> Step {
    if let Err(e) = link.send(&ep.hello(*id, Duration::ZERO)).await {
        return Step::Broken(e.to_string());
    }
    let answer = match tokio::time::timeout(Duration::from_secs(20), link.recv()).await {
        Err(_) => return Step::Broken("the gateway did not answer".into()),
        Ok(Err(LinkError::Io(e))) => return Step::Broken(e.to_string()),
        Ok(Err(LinkError::Protocol(e))) => {
            return Step::Over(Err(CliError::new(format!(
                "the tunnel to {session} failed: {e}"
            ))));
        }
        Ok(Ok(None)) => return Step::Broken("the gateway closed the connection".into()),
        Ok(Ok(Some(f))) => f,
    };
    let resumed = *id != TunnelId::default();
    let refused = |code: u16, reason: String| {
        if code == ERR_UNKNOWN && ep.peer_finished() {
            // The agent finished and forgot the tunnel after our last
            // connection broke: everything had arrived.
            return Step::Over(Ok(()));
        }
        let mut err = CliError::new(format!(
            "{} the tunnel to {session}: {reason}",
            if resumed {
                "cannot resume"
            } else {
                "cannot open"
            }
        ));
        if code == ERR_UNKNOWN {
            err = err.hint("reconnect (e.g. run ssh again); the session itself keeps running");
        }
        Step::Over(Err(err))
    };
    match answer {
        Frame::Hello {
            id: got,
            received,
            fin,
            grace_ms,
        } => {
            if *id != TunnelId::default() && got != *id {
                return Step::Over(Err(CliError::new(
                    "the gateway answered for another tunnel",
                )));
            }
            *id = got;
            *grace = Duration::from_millis(u64::from(grace_ms));
            if broken.take().is_some() {
                tracing::debug!(received, "tunnel resumed");
            }
            match ep.attach(link, received, fin).await {
                Detach::Done => Step::Over(Ok(())),
                Detach::Broken(why) => Step::Broken(why),
                Detach::Replaced => Step::Broken("replaced".into()),
                Detach::Failed(why) => Step::Over(Err(CliError::new(format!(
                    "the tunnel to {session} failed: {why}"
                )))),
                Detach::Refused { code, reason } => refused(code, reason),
            }
        }
        Frame::Error { code, reason } => refused(code, reason),
        other => Step::Over(Err(CliError::new(format!(
            "the tunnel to {session} failed: unexpected {other:?}"
        )))),
    }
}

/// The explanation for a close that ends the tunnel for good (the
/// session is not running, its node is gone).
fn definitive_close(close: &Option<(u16, String)>) -> Option<String> {
    match close {
        Some((code, _)) if *code == TRY_AGAIN_LATER || (4000..5000).contains(code) => {
            explain_close(close)
        }
        _ => None,
    }
}

/// Parses `-b [HOST:]PORT`.
pub fn parse_bind(raw: &str) -> CliResult<SocketAddr> {
    let bad = || {
        CliError::new(format!("{raw:?} is not [HOST:]PORT"))
            .hint("e.g. -b 9922 or -b 127.0.0.1:9922")
    };
    if let Ok(port) = raw.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let (host, port) = raw.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = match host {
        "localhost" | "" => std::net::IpAddr::from([127, 0, 0, 1]),
        h => h.parse().map_err(|_| bad())?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// How the local port was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortChoice {
    /// The port asked for (or preferred) was free.
    AsAsked,
    /// The preferred port was taken; a random one is used.
    Fallback(u16),
    /// No preference: a random one.
    Random,
}

/// Binds a local listener: `explicit` must work (else an error with a
/// hint); otherwise `preferred` is tried, then a random free port.
pub async fn bind_local(
    explicit: Option<SocketAddr>,
    preferred: Option<u16>,
) -> CliResult<(TcpListener, PortChoice)> {
    if let Some(addr) = explicit {
        return TcpListener::bind(addr)
            .await
            .map(|l| (l, PortChoice::AsAsked))
            .map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                    format!("port {} is in use; pick another with -b PORT, or leave -b out to use your preferred or a random free port", addr.port())
                } else {
                    "pick another address with -b [HOST:]PORT".to_owned()
                };
                CliError::new(format!("cannot listen on {addr}: {e}")).hint(hint)
            });
    }
    if let Some(p) = preferred {
        match TcpListener::bind((airlock_proto::recipes::LOCAL_HOST, p)).await {
            Ok(l) => return Ok((l, PortChoice::AsAsked)),
            Err(_) => {
                let l = TcpListener::bind((airlock_proto::recipes::LOCAL_HOST, 0)).await?;
                return Ok((l, PortChoice::Fallback(p)));
            }
        }
    }
    let l = TcpListener::bind((airlock_proto::recipes::LOCAL_HOST, 0)).await?;
    Ok((l, PortChoice::Random))
}

/// Accepts connections on `listener` and tunnels each one until `stop`.
pub async fn accept_loop(
    client: ApiClient,
    session: String,
    listener: TcpListener,
    stop: tokio_util::sync::CancellationToken,
) {
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    tracing::debug!(%peer, "new local connection");
                    let client = client.clone();
                    let session = session.clone();
                    let stop = stop.clone();
                    tracker.spawn(async move {
                        let (rd, wr) = sock.into_split();
                        tokio::select! {
                            _ = serve_connection(&client, &session, rd, wr) => {}
                            _ = stop.cancelled() => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
    tracker.close();
    tracker.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_specs() {
        assert_eq!(
            parse_bind("9922").unwrap(),
            "127.0.0.1:9922".parse().unwrap()
        );
        assert_eq!(
            parse_bind("0.0.0.0:22").unwrap(),
            "0.0.0.0:22".parse().unwrap()
        );
        assert_eq!(
            parse_bind("localhost:9922").unwrap(),
            "127.0.0.1:9922".parse().unwrap()
        );
        assert_eq!(
            parse_bind("[::1]:9922").unwrap(),
            "[::1]:9922".parse().unwrap()
        );
        assert!(parse_bind("nope").is_err());
        assert!(parse_bind("host:99999").is_err());
    }

    #[test]
    fn close_explanations() {
        assert!(explain_close(&None).is_none());
        assert!(explain_close(&Some((1000, String::new()))).is_none());
        assert!(explain_close(&Some((1001, String::new()))).is_none());
        let m = explain_close(&Some((
            1013,
            "session demo is not running (TERMINATED)".into(),
        )))
        .unwrap();
        assert!(m.contains("not running"));
    }
}
