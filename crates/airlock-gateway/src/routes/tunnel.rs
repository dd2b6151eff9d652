//! `GET /stream/session/{s}/tcpproxy?app=sshd`: the SSH tunnel WebSocket.

use airlock_tunnel::{close_with, relay, ws_config};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::AppState;
use crate::agents::AgentCallError;
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, ApiResult};
use crate::quotas;
use crate::sessions;
use crate::store::Status;
use crate::tunnels::{TunnelInfo, connect_agent};

/// A byte stream to a session's SSH server.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Close code for "try again later" (session not running, node down).
pub const TRY_AGAIN_LATER: u16 = 1013;

#[derive(Debug, Deserialize)]
pub(crate) struct ProxyQuery {
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    port: Option<u16>,
}

/// Checks the WebSocket handshake headers and returns the accept key.
fn websocket_accept(req: &Request) -> ApiResult<String> {
    let h = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(ApiError::invalid("this endpoint needs a WebSocket upgrade")
            .hint("use `airlock app SESSION sshd`, `airlock ssh` or `airlock proxy`"));
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return Err(ApiError::invalid("unsupported WebSocket version (need 13)"));
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::invalid("Sec-WebSocket-Key is missing"))?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// Upgrades, then relays the WebSocket to the session's SSH server.
pub(crate) async fn tcpproxy(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    Query(q): Query<ProxyQuery>,
    mut req: Request,
) -> ApiResult<Response> {
    let accept = websocket_accept(&req)?;
    let app = q.app.as_deref().unwrap_or("sshd");
    if app != "sshd" {
        return Err(ApiError::not_found(
            "app-not-found",
            format!("the session provides no app {app:?} (only sshd)"),
        ));
    }
    if let Some(p) = q.port
        && p != airlock_proto::SSHD_PORT
    {
        return Err(ApiError::not_found(
            "app-not-found",
            format!("sshd listens on port {}, not {p}", airlock_proto::SSHD_PORT),
        ));
    }
    // Ownership is checked before the upgrade: others get a plain 404.
    let session = sessions::resolve(&state, &caller, &ident, true).await?;
    // Counted from here until the tunnel ends (429 past the account's limit).
    let permit = quotas::tunnel_permit(&state, &caller.user.id).await?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let user = caller.user.email.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(ws_config()),
        )
        .await;
        let s = match state.store().session(&session.id).await.ok().flatten() {
            Some(s) if s.status == Status::Running => s,
            other => {
                let status = other.as_ref().map_or("GONE", |s| s.status.as_str());
                close_with(
                    ws,
                    TRY_AGAIN_LATER,
                    &format!("session {} is not running ({status})", session.name),
                )
                .await;
                return;
            }
        };
        let agent = match sessions::agent_of(&state, &s).await {
            Ok(a) => a,
            Err(_) => {
                close_with(ws, TRY_AGAIN_LATER, "the session's node is unknown").await;
                return;
            }
        };
        // An agent in this process is reached directly; others through an
        // HTTP upgrade on their API.
        let stream: Box<dyn Stream> = if let Some(local) = state.local_agent(&agent.id) {
            match local.connect(&s.id).await {
                Ok(tcp) => Box::new(tcp),
                Err(e) => {
                    tracing::warn!(session = %s.id, error = %e, "cannot open a tunnel");
                    close_with(ws, TRY_AGAIN_LATER, &e).await;
                    return;
                }
            }
        } else {
            match connect_agent(&agent.url, state.agents().token(), &s.id).await {
                Ok(st) => Box::new(st),
                Err(e) => {
                    let reason = match &e {
                        AgentCallError::Unreachable(_) => {
                            "the session's node is unreachable".to_owned()
                        }
                        AgentCallError::Rejected { problem, .. } => problem.message().to_owned(),
                    };
                    tracing::warn!(session = %s.id, error = %e, "cannot open a tunnel");
                    close_with(ws, TRY_AGAIN_LATER, &reason).await;
                    return;
                }
            }
        };
        let _guard = state.tunnels().open(&s.id, &s.name, &user);
        tracing::info!(session = %s.name, %user, "tunnel opened");
        let shutdown = state.shutdown_token().clone();
        tokio::select! {
            stats = relay(ws, stream) => {
                tracing::info!(session = %s.name, %user, up = stats.from_ws, down = stats.to_ws, "tunnel closed");
            }
            _ = shutdown.cancelled() => {
                tracing::info!(session = %s.name, "tunnel closed by shutdown");
            }
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(ApiError::internal)?,
    );
    Ok(resp)
}

/// `GET /admin/tunnels`: live tunnels (administrators only).
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: Admin,
) -> axum::Json<serde_json::Value> {
    let list: Vec<TunnelInfo> = state.tunnels().list();
    axum::Json(serde_json::json!({"active": list.len(), "tunnels": list}))
}
