//! The administrator's operations on the cluster, shared by the API
//! (`routes/cluster.rs`) and the web UI's Cluster page: the snapshot
//! (agents with capacity and load, every user's live sessions, open
//! tunnels), disabling and enabling accounts, draining nodes. Each change
//! is audited with who made it.

use serde_json::{Value, json};

use crate::AppState;
use crate::audit::Audit;
use crate::auth::{Admin, end_logins};
use crate::error::{ApiError, ApiResult};
use crate::store::{Account, Drain, Lookup, now_ms, rfc3339};

/// The cluster as JSON: the API's `GET /admin/cluster` and the web UI's
/// Cluster page.
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
        .sessions(None, Lookup::Live)
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

/// Disables or enables an account on an administrator's behalf (audited;
/// disabling ends its logins at once).
pub(crate) async fn set_account(
    state: &AppState,
    admin: &Admin,
    email: &str,
    to: Account,
) -> ApiResult<()> {
    let user = state.store().user_by_email(email).await?.ok_or_else(|| {
        ApiError::not_found("user-not-found", format!("no account for {email}"))
            .hint("list accounts with `airlockd user list`")
    })?;
    if to == Account::Disabled && user.id == admin.0.user.id {
        return Err(ApiError::invalid("you cannot disable your own account")
            .hint("ask another administrator, or use `airlockd user disable`"));
    }
    state.store().set_account(&user.id, to).await?;
    if to == Account::Disabled {
        end_logins(state, &user.id).await?;
    }
    state
        .audit(
            Audit::new(match to {
                Account::Enabled => "user.enabled",
                Account::Disabled => "user.disabled",
            })
            .user(&user)
            .with("by", &admin.0.user.email),
        )
        .await;
    Ok(())
}

/// Drains a node or ends its drain (audited): a drained node gets no new
/// sessions; the ones it runs stay.
pub(crate) async fn set_draining(
    state: &AppState,
    admin: &Admin,
    node: &str,
    to: Drain,
) -> ApiResult<()> {
    if !state.store().set_agent_draining(node, to).await? {
        return Err(
            ApiError::not_found("node-not-found", format!("no node named {node:?}"))
                .hint("see the nodes with `airlock admin cluster` or the web UI's Cluster page"),
        );
    }
    state
        .audit(
            Audit::new(match to {
                Drain::Drained => "node.drained",
                Drain::Accepting => "node.undrained",
            })
            .with("node", node)
            .with("by", &admin.0.user.email),
        )
        .await;
    Ok(())
}
