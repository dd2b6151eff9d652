//! The administrator's view of the cluster: `GET /admin/cluster` (agents
//! with capacity and load, every user's live sessions, open tunnels) and
//! `POST /admin/users/{email}/disable|enable` and
//! `POST /admin/nodes/{id}/drain|undrain` (audited). Terminating any
//! session is `DELETE /session/{id}` as an administrator (audited with
//! who did it).

use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::AppState;
use crate::audit::Audit;
use crate::auth::{Admin, end_logins};
use crate::error::{ApiError, ApiResult};
use crate::store::{now_ms, rfc3339};

/// The cluster as JSON (shared with the web page).
pub(crate) async fn snapshot(state: &AppState) -> ApiResult<Value> {
    let store = state.store();
    let offline_ms = i64::try_from(state.config().agent_offline_after.as_millis()).unwrap_or(0);
    let now = now_ms();
    let mut agents = Vec::new();
    for a in store.online_agents(i64::MAX / 2).await? {
        let used = store.agent_usage(&a.id).await?;
        agents.push(json!({
            "id": a.id,
            "url": a.url,
            "version": a.version,
            "online": now - a.last_seen <= offline_ms,
            "last_seen": rfc3339(a.last_seen),
            "cpu_milli": a.cpu_milli,
            "mem_bytes": a.mem_bytes,
            "cpu_milli_used": used.cpu_milli,
            "mem_bytes_used": used.mem_bytes,
            "gpus": a.gpus,
            "gpus_used": used.gpus,
            // What the node's kernel says (reservations are the *_used).
            "load1": a.load_milli as f64 / 1000.0,
            "mem_available": a.mem_available,
            "draining": a.draining,
            // Its own credential (`airlockd node enroll`), not the shared token.
            "enrolled": a.credential.is_some(),
        }));
    }
    let mut owners = std::collections::HashMap::new();
    for u in store.list_users().await? {
        owners.insert(u.id.clone(), u.email.clone());
    }
    let sessions: Vec<Value> = store
        .sessions(None, true)
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "name": s.name,
                "owner": owners.get(&s.user_id),
                "status": s.status.as_str(),
                "agent": s.agent_id,
                "cpu_milli": s.cpu_milli,
                "mem_bytes": s.mem_bytes,
                "gpus": s.gpus,
                "created_at": rfc3339(s.created_at),
            })
        })
        .collect();
    let tunnels = state.tunnels().list();
    Ok(json!({
        "agents": agents,
        "sessions": sessions,
        "tunnels": tunnels,
    }))
}

/// `GET /admin/cluster`.
pub(crate) async fn get(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(snapshot(&state).await?))
}

/// Disables or enables an account on an administrator's behalf (audited;
/// disabling ends its logins at once).
pub(crate) async fn set_active(
    state: &AppState,
    admin: &Admin,
    email: &str,
    active: bool,
) -> ApiResult<()> {
    let user = state.store().user_by_email(email).await?.ok_or_else(|| {
        ApiError::not_found("user-not-found", format!("no account for {email}"))
            .hint("list accounts with `airlockd user list`")
    })?;
    if !active && user.id == admin.0.user.id {
        return Err(ApiError::invalid("you cannot disable your own account")
            .hint("ask another administrator, or use `airlockd user disable`"));
    }
    state.store().set_active(&user.id, active).await?;
    if !active {
        end_logins(state, &user.id).await?;
    }
    state
        .audit(
            Audit::new(if active {
                "user.enabled"
            } else {
                "user.disabled"
            })
            .user(&user)
            .with("by", &admin.0.user.email),
        )
        .await;
    Ok(())
}

/// `POST /admin/users/{email}/disable`.
pub(crate) async fn disable(
    State(state): State<AppState>,
    admin: Admin,
    Path(email): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    set_active(&state, &admin, &email, false).await?;
    Ok(axum::Json(json!({"email": email, "active": false})))
}

/// `POST /admin/users/{email}/enable`.
pub(crate) async fn enable(
    State(state): State<AppState>,
    admin: Admin,
    Path(email): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    set_active(&state, &admin, &email, true).await?;
    Ok(axum::Json(json!({"email": email, "active": true})))
}

/// Drains a node or ends its drain (audited): a drained node gets no new
/// sessions; the ones it runs stay.
pub(crate) async fn set_draining(
    state: &AppState,
    admin: &Admin,
    node: &str,
    draining: bool,
) -> ApiResult<()> {
    if !state.store().set_agent_draining(node, draining).await? {
        return Err(
            ApiError::not_found("node-not-found", format!("no node named {node:?}"))
                .hint("see the nodes with `airlock admin cluster` or the web UI's Cluster page"),
        );
    }
    state
        .audit(
            Audit::new(if draining {
                "node.drained"
            } else {
                "node.undrained"
            })
            .with("node", node)
            .with("by", &admin.0.user.email),
        )
        .await;
    Ok(())
}

/// `POST /admin/nodes/{id}/drain`.
pub(crate) async fn drain(
    State(state): State<AppState>,
    admin: Admin,
    Path(node): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    set_draining(&state, &admin, &node, true).await?;
    Ok(axum::Json(json!({"node": node, "draining": true})))
}

/// `POST /admin/nodes/{id}/undrain`.
pub(crate) async fn undrain(
    State(state): State<AppState>,
    admin: Admin,
    Path(node): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    set_draining(&state, &admin, &node, false).await?;
    Ok(axum::Json(json!({"node": node, "draining": false})))
}
