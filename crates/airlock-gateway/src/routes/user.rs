//! The caller's own settings and SSH public keys.

use airlock_proto::api::{
    AddSshKey, SshKeyInfo, UserSettings, UserSettingsSaved, UserSettingsUpdate,
};
use airlock_proto::sshkey::parse_public_key;
use airlock_proto::validate::{self, check_ssh_port, ssh_port_warning};
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use http::StatusCode;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::Json;

/// `GET /user/settings`.
pub(crate) async fn get_settings(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<UserSettings>> {
    Ok(axum::Json(state.store().settings(&caller.user.id).await?))
}

fn parse_port(value: &serde_json::Value) -> Result<Option<u16>, ApiError> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(validate::parse_ssh_port(s)?),
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(0) => Ok(None),
            Some(p) => Ok(Some(check_ssh_port(u32::try_from(p).unwrap_or(u32::MAX))?)),
            None => Err(ApiError::invalid(format!(
                "preferred SSH port {n} is not a whole number"
            ))),
        },
        other => Err(ApiError::invalid(format!(
            "preferred SSH port must be a number, got {other}"
        ))),
    }
}

/// `PATCH /user/settings` (also POST).
pub(crate) async fn patch_settings(
    State(state): State<AppState>,
    caller: Caller,
    Json(update): Json<UserSettingsUpdate>,
) -> ApiResult<axum::Json<UserSettingsSaved>> {
    let mut warnings = Vec::new();
    if let Some(value) = &update.ssh_port {
        let port = parse_port(value)?;
        if let Some(w) = port.and_then(ssh_port_warning) {
            warnings.push(w);
        }
        state.store().set_ssh_port(&caller.user.id, port).await?;
    }
    let settings = state.store().settings(&caller.user.id).await?;
    Ok(axum::Json(UserSettingsSaved { settings, warnings }))
}

/// `GET /user/ssh-keys`.
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<SshKeyInfo>>> {
    Ok(axum::Json(state.store().ssh_keys(&caller.user.id).await?))
}

/// `POST /user/ssh-keys`.
pub(crate) async fn add_key(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<AddSshKey>,
) -> ApiResult<impl IntoResponse> {
    let key = parse_public_key(&req.public_key)
        .map_err(|e| ApiError::invalid(e.to_string()).hint(e.hint()))?;
    let name = req
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .or_else(|| Some(key.comment.clone()).filter(|c| !c.is_empty()))
        .unwrap_or_else(|| key.fingerprint.clone());
    if name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "the key name must be at most 128 printable characters",
        ));
    }
    let info = state
        .store()
        .add_ssh_key(&caller.user.id, &name, &key)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(info)))
}

/// `DELETE /user/ssh-keys/{id|name|fingerprint}`.
pub(crate) async fn remove_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> ApiResult<axum::Json<SshKeyInfo>> {
    state
        .store()
        .remove_ssh_key(&caller.user.id, &key)
        .await?
        .map(axum::Json)
        .ok_or_else(|| {
            ApiError::not_found(
                "ssh-key-not-found",
                format!("no SSH key named {key:?} on your account"),
            )
            .hint("list your keys with `airlock keys ls`")
        })
}
