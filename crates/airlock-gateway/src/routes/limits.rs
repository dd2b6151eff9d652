//! Quotas over the API: `GET /user/limits` (your own) and
//! `GET|PATCH /admin/users/{email}/limits` (administrators).

use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, ApiResult};
use crate::json::Json;
use crate::quotas::{Limit, Limits, Unit, UserLimits};
use crate::store::User;

fn limit_json(l: Limit) -> Value {
    match l {
        Limit::Unlimited => "unlimited".into(),
        Limit::Max(n) => n.into(),
    }
}

fn override_json(l: Option<Limit>) -> Value {
    l.map_or(Value::Null, limit_json)
}

fn limits_json(l: &Limits) -> Value {
    json!({
        "sessions": limit_json(l.sessions),
        "tunnels": limit_json(l.tunnels),
        "upload_size": limit_json(l.upload_bytes),
        "folders": limit_json(l.folders),
    })
}

async fn view(state: &AppState, user: &User) -> ApiResult<Value> {
    let overrides = state.store().user_limits(&user.id).await?;
    let effective = state.config().default_limits.with(&overrides);
    Ok(json!({
        "email": user.email,
        "limits": limits_json(&effective),
        "overrides": {
            "sessions": override_json(overrides.sessions),
            "tunnels": override_json(overrides.tunnels),
            "upload_size": override_json(overrides.upload_bytes),
            "folders": override_json(overrides.folders),
        },
        "in_use": {
            "sessions": state.store().live_session_count(&user.id).await?,
            "tunnels": state.quotas().open_tunnels(&user.id),
            "folders": state.store().folder_count(&user.id).await?,
        },
    }))
}

/// `GET /user/limits`: the caller's quotas and what is in use.
pub(crate) async fn mine(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(view(&state, &caller.user).await?))
}

async fn account(state: &AppState, email: &str) -> ApiResult<User> {
    state.store().user_by_email(email).await?.ok_or_else(|| {
        ApiError::not_found("user-not-found", format!("no account {email:?}"))
            .hint("list accounts with `airlockd user list`")
    })
}

/// `GET /admin/users/{email}/limits`.
pub(crate) async fn get(
    State(state): State<AppState>,
    _admin: Admin,
    Path(email): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let user = account(&state, &email).await?;
    Ok(axum::Json(view(&state, &user).await?))
}

/// One field of a PATCH body: absent = unchanged, `null` or `"default"` =
/// the server default, a number or `"unlimited"` (sizes also `"10G"`).
fn field(body: &Map<String, Value>, key: &str, unit: Unit) -> ApiResult<Option<Option<Limit>>> {
    let Some(v) = body.get(key) else {
        return Ok(None);
    };
    let parsed = match v {
        Value::Null => None,
        Value::String(s) if s.trim().eq_ignore_ascii_case("default") => None,
        Value::String(s) => Some(unit.parse(s)?),
        Value::Number(n) => Some(Limit::Max(n.as_u64().ok_or_else(|| {
            ApiError::invalid(format!("{key}: {n} is not a whole number ≥ 0"))
                .hint("use a number, \"unlimited\" or null (the server default)")
        })?)),
        other => {
            return Err(ApiError::invalid(format!("{key}: {other} is not a limit"))
                .hint("use a number, \"unlimited\" or null (the server default)"));
        }
    };
    Ok(Some(parsed))
}

/// `PATCH /admin/users/{email}/limits` `{sessions?, tunnels?, upload_size?,
/// folders?}`: changes the given overrides, answers like `GET`.
pub(crate) async fn patch(
    State(state): State<AppState>,
    _admin: Admin,
    Path(email): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<axum::Json<Value>> {
    let user = account(&state, &email).await?;
    let body = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("the body must be a JSON object"))?;
    const KEYS: [&str; 4] = ["sessions", "tunnels", "upload_size", "folders"];
    if let Some(k) = body.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(ApiError::invalid(format!("unknown limit {k:?}"))
            .hint("the limits are sessions, tunnels, upload_size and folders"));
    }
    let mut l: UserLimits = state.store().user_limits(&user.id).await?;
    if let Some(v) = field(body, "sessions", Unit::Count)? {
        l.sessions = v;
    }
    if let Some(v) = field(body, "tunnels", Unit::Count)? {
        l.tunnels = v;
    }
    if let Some(v) = field(body, "upload_size", Unit::Bytes)? {
        l.upload_bytes = v;
    }
    if let Some(v) = field(body, "folders", Unit::Count)? {
        l.folders = v;
    }
    state.store().set_user_limits(&user.id, &l).await?;
    tracing::info!(account = %user.email, "limits changed");
    Ok(axum::Json(view(&state, &user).await?))
}
