//! The terminal page (`/ui/sessions/{id}/terminal`): xterm.js full-screen,
//! and its WebSocket (`…/terminal/ws`), which [`crate::terminal`] connects
//! to a kept shell in the session.
//!
//! `?t=NAME` picks the shell (default `main`): reopening the page finds
//! the same one, as does `ssh -t S airlock-attach NAME`.

use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use maud::{DOCTYPE, html};
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::layout::{icon, svg};
use super::{PageResult, WebUser, asset_url};
use crate::AppState;
use crate::audit::Audit;
use crate::error::ApiError;
use crate::routes::tunnel::{TRY_AGAIN_LATER, switching_protocols, websocket_accept};
use crate::sessions::Lookup;
use crate::store::Status;
use crate::terminal::{self, Ended, Size};
use crate::tunnels::{TunnelMeta, open_runner};
use crate::{quotas, sessions};

#[derive(Debug, Deserialize, Default)]
pub(crate) struct TermQuery {
    #[serde(default)]
    t: Option<String>,
    #[serde(default)]
    cols: Option<u32>,
    #[serde(default)]
    rows: Option<u32>,
}

impl TermQuery {
    fn name(&self) -> Result<&str, ApiError> {
        let n = self.t.as_deref().unwrap_or("main");
        if terminal::valid_name(n) {
            Ok(n)
        } else {
            Err(ApiError::invalid(format!("bad terminal name {n:?}"))
                .hint("use 1 to 64 of A-Z a-z 0-9 . _ -, e.g. ?t=main"))
        }
    }
}

/// `GET /ui/sessions/{id}/terminal`: the page.
pub(crate) async fn page(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    Query(q): Query<TermQuery>,
) -> PageResult<Response> {
    let s = sessions::resolve(&state, &user.caller, &id, Lookup::Live).await?;
    sessions::require_running(&s)?;
    let name = q.name()?;
    let ws = format!("/ui/sessions/{}/terminal/ws?t={}", s.id, super::enc(name));
    let title = format!("{} · terminal · airlock", s.name);
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="icon" type="image/svg+xml" href=(asset_url("logo.svg"));
                link rel="stylesheet" href=(asset_url("app.css"));
                link rel="stylesheet" href=(asset_url("xterm.css"));
                script src=(asset_url("xterm.js")) defer {}
                script src=(asset_url("xterm-addon-fit.js")) defer {}
                script src=(asset_url("terminal.js")) defer {}
            }
            body.term-page {
                header.term-bar {
                    a.btn.btn-ghost.btn-sm href="/ui/sessions" { (svg(icon::BACK)) span { "Sessions" } }
                    h1.term-title { (svg(icon::TERMINAL)) span { (s.name) } @if name != "main" { " · " (name) } }
                    span.term-state #term-state role="status" aria-live="polite" { "connecting…" }
                    span.term-keys { "Copy: select, Ctrl+Shift+C · Paste: Ctrl+Shift+V" }
                }
                main #term data-ws=(ws) data-session=(s.name) {}
            }
        }
    };
    Ok(doc.into_response())
}

/// `GET /ui/sessions/{id}/terminal/ws`: the terminal's WebSocket (login
/// cookie; cross-origin upgrades are refused by the origin layer).
pub(crate) async fn socket(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    Query(q): Query<TermQuery>,
    mut req: Request,
) -> PageResult<Response> {
    // Someone else's session is not found, whatever the request.
    let s = sessions::resolve(&state, &user.caller, &id, Lookup::Live).await?;
    let accept = websocket_accept(&req)?;
    let name = q.name()?.to_owned();
    let size = Size::clamped(q.cols, q.rows);
    sessions::require_running(&s)?;
    let permit = quotas::tunnel_permit(&state, &user.caller.user.id).await?;
    let key = sessions::read_small_file(&state, &s, "id_container").await?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let ctx = crate::audit::current();
    let account = user.caller.user.clone();
    let meta = TunnelMeta {
        session_id: s.id.clone(),
        session_name: s.name.clone(),
        user: account.email.clone(),
        client: "web terminal".to_owned(),
        client_version: None,
        client_addr: ctx.as_ref().map(|c| c.client.to_string()),
        conn: ctx.as_ref().map(|c| c.conn.clone()),
        resumable: false,
    };
    state.streams().clone().spawn(async move {
        let _permit = permit;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(airlock_tunnel::ws_config()),
        )
        .await;
        let event = |kind: &str| {
            let mut e = Audit::new(kind)
                .user(&account)
                .session(&s)
                .with("terminal", &name);
            if let Some(c) = &ctx {
                e = e.ctx(c);
            }
            e
        };
        let origin = ctx.as_ref().map(|c| airlock_proto::agent::TunnelOrigin {
            conn: c.conn.clone(),
            client: c.client.to_string(),
        });
        let fresh = state.store().session(&s.id).await.ok().flatten();
        if fresh.as_ref().map(|f| f.status) != Some(Status::Running) {
            airlock_tunnel::close_with(ws, TRY_AGAIN_LATER, "the session is not running").await;
            return;
        }
        let opened = match open_runner(&state, &s, origin.as_ref()).await {
            Ok(o) => o,
            Err(reason) => {
                airlock_tunnel::close_with(ws, TRY_AGAIN_LATER, &reason).await;
                return;
            }
        };
        // The runner's own events (ssh.auth, ssh.exec) of this login are
        // tied to this user's connection through the address it sees.
        let runner_peer = opened.runner_peer;
        if let (Some(peer), Some(c)) = (&runner_peer, &ctx) {
            state.audit_conns().opened(&s.id, peer, c);
        }
        let shell = terminal::open(opened.stream, &s, &key, &name, size).await;
        let shell = match shell {
            Ok(sh) => sh,
            Err(e) => {
                tracing::warn!(session = %s.id, error = %e, "cannot open a web terminal");
                state
                    .audit(event("terminal.refused").with("reason", e.to_string()))
                    .await;
                airlock_tunnel::close_with(ws, 1011, &e.to_string()).await;
                if let Some(peer) = &runner_peer {
                    state.audit_conns().closed(&s.id, peer);
                }
                return;
            }
        };
        let guard = state.tunnels().open(meta);
        tracing::info!(session = %s.name, user = %account.email, terminal = %name, "web terminal opened");
        state.audit(event("terminal.opened")).await;
        let started = std::time::Instant::now();
        let ended = terminal::relay(ws, shell, guard.counters(), state.shutdown_token()).await;
        let (up, down) = guard.counters().get();
        let reason = match ended {
            Ended::Exited(st) => format!(
                "shell exited ({})",
                st.map_or("signal".into(), |c| c.to_string())
            ),
            Ended::Detached => "browser left (shell kept)".to_owned(),
            Ended::TakenOver => "opened elsewhere (shell kept)".to_owned(),
            Ended::Closed => "session side closed".to_owned(),
            Ended::Shutdown => "gateway shutdown".to_owned(),
        };
        tracing::info!(session = %s.name, terminal = %name, %reason, "web terminal closed");
        if let Some(peer) = &runner_peer {
            state.audit_conns().closed(&s.id, peer);
        }
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        state
            .audit(
                event("terminal.closed")
                    .with("bytes_up", up)
                    .with("bytes_down", down)
                    .with("reason", reason)
                    .with("duration_ms", ms),
            )
            .await;
    });
    Ok(switching_protocols(&accept)?)
}
