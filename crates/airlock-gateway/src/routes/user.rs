//! The caller's own settings and SSH public keys.

use airlock_proto::api::{
    AddSshKey, ChangePassword, KeypairInfo, SshKeyInfo, UserSettings, UserSettingsSaved,
    UserSettingsUpdate,
};
use airlock_proto::sshkey::parse_public_key;
use airlock_proto::validate::{self, check_ssh_port, ssh_port_warning};
use axum::extract::{ConnectInfo, Path, State};
use axum::response::IntoResponse;
use http::StatusCode;

use crate::AppState;
use crate::audit::Audit;
use crate::auth::{Caller, LoginOutcome, MIN_PASSWORD, end_logins, password_login};
use crate::error::{ApiError, ApiResult};
use crate::forwarded::client_ip;
use crate::json::Json;

/// `GET /user/me`: who the caller is (`airlock whoami`).
pub(crate) async fn me(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<airlock_proto::api::AccountInfo>> {
    Ok(axum::Json(
        super::login::account_info(&state, &caller.user).await?,
    ))
}

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
    state
        .audit(
            Audit::new("sshkey.added")
                .user(&caller.user)
                .with("name", &info.name)
                .with("fingerprint", &info.fingerprint),
        )
        .await;
    Ok((StatusCode::CREATED, axum::Json(info)))
}

/// `DELETE /user/ssh-keys/{id|name|fingerprint}`.
pub(crate) async fn remove_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> ApiResult<axum::Json<SshKeyInfo>> {
    let removed = state.store().remove_ssh_key(&caller.user.id, &key).await?;
    if let Some(info) = &removed {
        state
            .audit(
                Audit::new("sshkey.removed")
                    .user(&caller.user)
                    .with("name", &info.name)
                    .with("fingerprint", &info.fingerprint),
            )
            .await;
    }
    removed.map(axum::Json).ok_or_else(|| {
        ApiError::not_found(
            "ssh-key-not-found",
            format!("no SSH key named {key:?} on your account"),
        )
        .hint("list your keys with `airlock keys ls`")
    })
}

/// `GET /user/keypair`: the access key (never the secret).
pub(crate) async fn get_keypair(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<KeypairInfo>> {
    let kp = state.store().keypair_of(&caller.user.id).await?;
    Ok(axum::Json(KeypairInfo {
        access_key: kp.map(|k| k.access_key),
        secret_key: None,
    }))
}

/// `POST /user/keypair`: a new keypair replaces the old one at once. The
/// secret key is in this response and nowhere else, ever again.
pub(crate) async fn regenerate_keypair(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    let kp = state.store().regenerate_keypair(&caller.user.id).await?;
    tracing::info!(email = %caller.user.email, access_key = %kp.access_key, "API keypair regenerated");
    state
        .audit(
            Audit::new("keypair.created")
                .user(&caller.user)
                .with("access_key", &kp.access_key),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        axum::Json(KeypairInfo {
            access_key: Some(kp.access_key),
            secret_key: Some(kp.secret_key),
        }),
    ))
}

/// `DELETE /user/keypair`: signed requests stop working until a new
/// keypair is generated.
pub(crate) async fn revoke_keypair(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let n = state.store().revoke_keypairs(&caller.user.id).await?;
    tracing::info!(email = %caller.user.email, revoked = n, "API keypair revoked");
    state
        .audit(
            Audit::new("keypair.revoked")
                .user(&caller.user)
                .with("revoked", n),
        )
        .await;
    Ok(axum::Json(serde_json::json!({ "revoked": n })))
}

/// `POST /user/password` `{old_password, new_password}`: changes the
/// caller's password and ends every login cookie and transfer token of the
/// account (the caller's own cookie included).
pub(crate) async fn change_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: http::HeaderMap,
    caller: Caller,
    Json(req): Json<ChangePassword>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    if req.new_password.chars().count() < MIN_PASSWORD {
        return Err(ApiError::invalid(format!(
            "the new password is too short (at least {MIN_PASSWORD} characters)"
        ))
        .hint("choose a longer password"));
    }
    let client = client_ip(state.config(), &headers, peer.ip());
    match password_login(&state, &caller.user.email, &req.old_password, client).await? {
        LoginOutcome::Ok(_) => {}
        LoginOutcome::Limited(r) => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many failed login attempts",
            )
            .msg(format!(
                "too many wrong passwords; try again in {} seconds",
                r.retry_after
            ));
            e.retry_after = Some(r.retry_after);
            return Err(e);
        }
        LoginOutcome::Wrong | LoginOutcome::Inactive => {
            state
                .audit(
                    Audit::new("password.change-failed")
                        .user(&caller.user)
                        .with("reason", "wrong-password"),
                )
                .await;
            return Err(ApiError::forbidden("the current password is wrong")
                .hint("give the password you log in with now as old_password"));
        }
    }
    state
        .store()
        .set_password(&caller.user.id, &req.new_password)
        .await?;
    end_logins(&state, &caller.user.id).await?;
    tracing::info!(email = %caller.user.email, "password changed");
    state
        .audit(Audit::new("password.changed").user(&caller.user))
        .await;
    Ok(axum::Json(serde_json::json!({
        "changed": true,
        "logged_out": true,
    })))
}
