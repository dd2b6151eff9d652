//! `GET /stream/session/{s}/tcpproxy?app=sshd`: the SSH tunnel WebSocket.

use airlock_tunnel::resume::SUBPROTOCOL;
use airlock_tunnel::{Protocol, close_with, ws_config};
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
use crate::audit::Audit;
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, ApiResult};
use crate::quotas;
use crate::sessions::{self, Lookup};
use crate::store::Status;
use crate::tunnels::{TunnelInfo, TunnelMeta, open_tunnel};

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
pub(crate) fn websocket_accept(req: &Request) -> ApiResult<String> {
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
            .hint("this address carries SSH tunnels for clients; see `airlock ssh --help` and `airlock app --help`"));
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

/// The resumable subprotocol when the client offered it, else plain.
fn offered_protocol(req: &Request) -> Protocol {
    let offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if offered {
        Protocol::Resumable
    } else {
        Protocol::Plain
    }
}

/// Upgrades, then relays the WebSocket to the session's SSH server. With
/// the `airlock-resume.v1` subprotocol (only when the client offers it)
/// the other end is the agent's resumable tunnel endpoint instead, and
/// the relayed bytes are its frames: the gateway keeps no tunnel state,
/// so a client can resume through a restarted gateway.
pub(crate) async fn tcpproxy(
    State(state): State<AppState>,
    caller: Caller,
    Path(ident): Path<String>,
    Query(q): Query<ProxyQuery>,
    mut req: Request,
) -> ApiResult<Response> {
    let accept = websocket_accept(&req)?;
    let protocol = offered_protocol(&req);
    let resumable = protocol == Protocol::Resumable;
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
    let session = sessions::resolve(&state, &caller, &ident, Lookup::Live).await?;
    // Counted from here until the tunnel ends (429 past the account's limit).
    let permit = quotas::tunnel_permit(&state, &caller.user.id).await?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let user = caller.user.email.clone();
    // The audit trail's view of this connection (the relay runs in its own
    // task, outside the request's context).
    let ctx = crate::audit::current();
    let ctx_for_conns = ctx.clone();
    let (program, version) =
        crate::audit::client_program(ctx.as_ref().and_then(|c| c.user_agent.as_deref()));
    let account = caller.user.clone();
    let mut meta = TunnelMeta {
        session_id: session.id.clone(),
        session_name: session.name.clone(),
        user: user.clone(),
        client: program.clone(),
        client_version: version.clone(),
        client_addr: ctx.as_ref().map(|c| c.client.to_string()),
        conn: ctx.as_ref().map(|c| c.conn.clone()),
        resumable,
    };
    let event = move |kind: &str, s: &crate::store::SessionRow| {
        let mut e = Audit::new(kind)
            .user(&account)
            .session(s)
            .with("client", &program)
            .with("client_version", &version);
        if let Some(c) = &ctx {
            e = e.ctx(c);
        }
        e
    };
    state.streams().clone().spawn(async move {
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
                state
                    .audit(
                        event("tunnel.refused", &session)
                            .with("reason", format!("session {status}")),
                    )
                    .await;
                close_with(
                    ws,
                    TRY_AGAIN_LATER,
                    &format!("session {} is not running ({status})", session.name),
                )
                .await;
                return;
            }
        };
        // The runner sees this end's address: its events are tied back to
        // this connection through it (known for in-process agents).
        let origin = ctx_for_conns
            .as_ref()
            .map(|c| airlock_proto::agent::TunnelOrigin {
                conn: c.conn.clone(),
                client: c.client.to_string(),
            });
        let (far, runner_peer) = match open_tunnel(&state, &s, protocol, origin.as_ref()).await {
            Ok(o) => (o.stream, o.runner_peer),
            Err(reason) => {
                tracing::warn!(session = %s.id, %reason, "cannot open a tunnel");
                close_with(ws, TRY_AGAIN_LATER, &reason).await;
                return;
            }
        };
        meta.session_id.clone_from(&s.id);
        meta.session_name.clone_from(&s.name);
        let guard = state.tunnels().open(meta);
        tracing::info!(session = %s.name, %user, resumable, "tunnel opened");
        if let (Some(peer), Some(c)) = (&runner_peer, &ctx_for_conns) {
            state.audit_conns().opened(&s.id, peer, c);
        }
        state.audit(event("tunnel.opened", &s)).await;
        let started = std::time::Instant::now();
        let shutdown = state.shutdown_token().clone();
        let closed = tokio::select! {
            stats = far.relay(ws, guard.counters()) => {
                tracing::info!(session = %s.name, %user, up = stats.from_ws, down = stats.to_ws, "tunnel closed");
                let reason = match &stats.close {
                    Some((code, _)) => format!("client closed ({code})"),
                    None => "session side closed".to_owned(),
                };
                event("tunnel.closed", &s)
                    .with("bytes_up", stats.from_ws)
                    .with("bytes_down", stats.to_ws)
                    .with("reason", reason)
            }
            _ = shutdown.cancelled() => {
                tracing::info!(session = %s.name, "tunnel closed by shutdown");
                // What had passed so far.
                let (up, down) = guard.counters().get();
                event("tunnel.closed", &s)
                    .with("bytes_up", up)
                    .with("bytes_down", down)
                    .with("reason", "gateway shutdown")
            }
        };
        if let Some(peer) = &runner_peer {
            state.audit_conns().closed(&s.id, peer);
        }
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        state.audit(closed.with("duration_ms", ms)).await;
    });
    let mut resp = switching_protocols(&accept)?;
    if resumable {
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    Ok(resp)
}

/// The `101 Switching Protocols` answer to a WebSocket handshake whose
/// accept key is `accept`.
pub(crate) fn switching_protocols(accept: &str) -> ApiResult<Response> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(accept).map_err(ApiError::internal)?,
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
