//! Opening tunnels: one WebSocket per TCP connection to the gateway's
//! `/stream/session/{s}/tcpproxy?app=sshd`, authenticated like every other
//! request (cookie or signature).

use std::net::SocketAddr;

use airlock_tunnel::{relay, ws_config};
use reqwest::Method;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
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

/// Opens a tunnel to `session`'s SSH server.
pub async fn open(client: &ApiClient, session: &str) -> CliResult<Tunnel> {
    let http_url = client.url(&format!(
        "/stream/session/{}/tcpproxy?app=sshd",
        enc(session)
    ))?;
    let mut ws_url = http_url.clone();
    let scheme = if http_url.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    ws_url
        .set_scheme(scheme)
        .map_err(|()| CliError::new("cannot build the tunnel URL"))?;
    let mut req = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| CliError::new(format!("bad tunnel URL: {e}")))?;
    // WebSocket upgrades carry no Content-Type; the signature covers that.
    let auth = client.auth_headers(&Method::GET, &http_url, "")?;
    for (k, v) in &auth {
        req.headers_mut().insert(k.clone(), v.clone());
    }
    req.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("airlock-cli/", env!("CARGO_PKG_VERSION"))),
    );
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        req,
        Some(ws_config()),
        true,
        Some(tokio_tungstenite::Connector::Rustls(client.tls())),
    );
    let (ws, _resp) = tokio::time::timeout(std::time::Duration::from_secs(20), connect)
        .await
        .map_err(|_| {
            CliError::new(format!(
                "opening a tunnel to {} timed out",
                client.config().base()
            ))
            .hint("check your network and that the gateway is up")
        })?
        .map_err(|e| handshake_error(client, session, e))?;
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
pub async fn serve_connection<T>(client: &ApiClient, session: &str, io: T)
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    match open(client, session).await {
        Ok(ws) => {
            let stats = relay(ws, io).await;
            if let Some(msg) = explain_close(&stats.close) {
                output::warning(&msg);
            }
        }
        Err(e) => {
            output::failure(&e.message);
            if let Some(h) = &e.hint {
                eprintln!("  hint: {h}");
            }
        }
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
        match TcpListener::bind(("127.0.0.1", p)).await {
            Ok(l) => return Ok((l, PortChoice::AsAsked)),
            Err(_) => {
                let l = TcpListener::bind(("127.0.0.1", 0)).await?;
                return Ok((l, PortChoice::Fallback(p)));
            }
        }
    }
    let l = TcpListener::bind(("127.0.0.1", 0)).await?;
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
                        tokio::select! {
                            _ = serve_connection(&client, &session, sock) => {}
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
