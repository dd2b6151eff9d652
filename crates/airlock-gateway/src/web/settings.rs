//! The settings page: the preferred SSH port and the account's SSH keys.

use airlock_proto::sshkey::parse_public_key;
use airlock_proto::validate::{self, SSH_PORT_MAX, SSH_PORT_MIN, SSH_PORT_RECOMMENDED};
use axum::extract::{Path, State};
use http::StatusCode;
use maud::html;

use super::Confirmation;
use super::layout::{self, Nav, csrf, danger_button, form_error, icon, svg};
use super::sessions::DEFAULT_LOCAL_PORT;
use super::{Flash, PageResult, PostForm, WebUser, explain, redirect_with, sentence};
use crate::AppState;
use crate::error::ApiError;

type Msg = Option<(String, Option<String>)>;

#[derive(Debug, Default)]
struct SettingsForm {
    port: Option<String>,
    port_error: Msg,
    key_name: String,
    key_text: String,
    key_error: Msg,
    /// A keypair just generated: shown once, on this response only.
    new_keypair: Option<(String, String)>,
    password_error: Msg,
}

async fn render(
    state: &AppState,
    user: &WebUser,
    form: SettingsForm,
    status: StatusCode,
) -> PageResult {
    let settings = state
        .store()
        .settings(user.id())
        .await
        .map_err(ApiError::from)?;
    let keys = state
        .store()
        .ssh_keys(user.id())
        .await
        .map_err(ApiError::from)?;
    let access_key = state
        .store()
        .keypair_of(user.id())
        .await
        .map_err(ApiError::from)?
        .map(|k| k.access_key);
    let port_value = form
        .port
        .clone()
        .unwrap_or_else(|| settings.ssh_port.map(|p| p.to_string()).unwrap_or_default());
    let (lo, hi) = SSH_PORT_RECOMMENDED;
    let activity = super::audit::recent(state, user).await?;
    let content = html! {
        (layout::heading("Settings", None))
        div.settings-grid {
            section.card #port aria-labelledby="port-title" {
                h2 #port-title { (svg(icon::TERMINAL)) "Preferred SSH port" }
                p.small {
                    "The local port the SSH/SFTP dialog suggests, and the one "
                    code { "airlock app" } ", " code { "airlock ssh" } " and " code { "airlock scp" }
                    " listen on when you do not name one (a random free port when it is taken). "
                    @match settings.ssh_port {
                        Some(p) => { "Now: " strong #current-port { (p) } "." }
                        None => { "Now: not set, so the dialog uses " strong #current-port { (DEFAULT_LOCAL_PORT) } "." }
                    }
                }
                (form_error(form.port_error.as_ref()))
                form method="post" action="/ui/settings/port" {
                    (csrf(user))
                    div.field {
                        label for="ssh-port" { "Preferred SSH port" }
                        input #ssh-port type="text" inputmode="numeric" name="ssh_port" value=(port_value)
                            placeholder=(DEFAULT_LOCAL_PORT) autocomplete="off" aria-describedby="port-help"
                            aria-invalid=[form.port_error.as_ref().map(|_| "true")];
                        p.help #port-help {
                            (SSH_PORT_MIN) "–" (SSH_PORT_MAX) " accepted; " (lo) "–" (hi)
                            " recommended, to avoid collisions with other services. Leave empty to clear."
                        }
                    }
                    button.btn.btn-primary type="submit" { "Save port" }
                }
            }
            section.card #keys aria-labelledby="keys-title" {
                h2 #keys-title { (svg(icon::KEY)) "SSH keys on your account" }
                p.small {
                    "Every new session accepts these public keys (in addition to its own "
                    code { "id_container" } " and your " a href="/ui/folders" { code { ".ssh" } " folder" } ")."
                }
                @if keys.is_empty() {
                    p.muted #no-keys { "No keys yet." }
                } @else {
                    div.table-wrap {
                        table.table.keys-table {
                            thead { tr {
                                th scope="col" { "Name" } th scope="col" { "Fingerprint" }
                                th scope="col" { "Added" } th scope="col" { span.visually-hidden { "Actions" } }
                            } }
                            tbody {
                                @for k in &keys {
                                    tr data-key=(k.name) {
                                        td data-label="Name" { div.cell-title { (k.name) } div.cell-sub { (k.algorithm) } }
                                        td data-label="Fingerprint" { code.fp { (k.fingerprint) } }
                                        td data-label="Added" { (layout::time_str(&k.created_at)) }
                                        td.actions-cell {
                                            (danger_button(user, &format!("/ui/settings/keys/{}/remove", k.id), &[],
                                                &format!("Remove key {} ({})? New sessions will no longer accept it.", k.name, k.fingerprint),
                                                "Remove", &format!("Remove key {}", k.name)))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                h3 { "Add a key" }
                (form_error(form.key_error.as_ref()))
                form method="post" action="/ui/settings/keys" {
                    (csrf(user))
                    div.field {
                        label for="key-name" { "Name" span.optional { "optional" } }
                        input #key-name type="text" name="name" value=(form.key_name) maxlength="128"
                            autocomplete="off" placeholder="e.g. laptop";
                    }
                    div.field {
                        label for="key-text" { "Public key" }
                        textarea #key-text name="public_key" rows="3" required spellcheck="false"
                            placeholder="ssh-ed25519 AAAAC3Nza… you@laptop" aria-describedby="key-help" { (form.key_text) }
                        p.help #key-help { "One line from your " code { ".pub" } " file, e.g. " code { "~/.ssh/id_ed25519.pub" } "." }
                    }
                    button.btn.btn-primary type="submit" { "Add key" }
                }
            }
            section.card #keypair aria-labelledby="keypair-title" {
                h2 #keypair-title { (svg(icon::KEY)) "API keypair" }
                p.small {
                    "For " code { "BACKEND_ENDPOINT_TYPE=api" } " (signed requests without a login). "
                    "The secret key is shown only when it is created."
                }
                @if let Some((ak, sk)) = &form.new_keypair {
                    div.flash.flash-ok role="status" #new-keypair {
                        p { "New keypair created; the old one no longer works. Copy the secret key now — it is not shown again." }
                        pre.mono { "BACKEND_ACCESS_KEY=" (ak) "\nBACKEND_SECRET_KEY=" (sk) }
                    }
                }
                @match &access_key {
                    Some(ak) => { p { "Access key: " code #access-key { (ak) } } }
                    None => { p.muted #no-keypair { "No keypair: signed requests are refused." } }
                }
                form.inline method="post" action="/ui/settings/keypair/regenerate"
                    data-confirm="Create a new keypair? The current one stops working at once." {
                    (csrf(user))
                    button.btn.btn-secondary type="submit" #regenerate-keypair { "Regenerate keypair" }
                }
                @if access_key.is_some() {
                    " "
                    (danger_button(user, "/ui/settings/keypair/revoke", &[],
                        "Revoke your keypair? Signed requests stop working until you regenerate one.",
                        "Revoke keypair", "Revoke API keypair"))
                }
            }
            section.card #password aria-labelledby="password-title" {
                h2 #password-title { (svg(icon::SHIELD)) "Password" }
                p.small { "Changing it logs you out everywhere (browsers and CLI logins) and cancels pending folder transfers." }
                (form_error(form.password_error.as_ref()))
                form method="post" action="/ui/settings/password" {
                    (csrf(user))
                    div.field {
                        label for="old-password" { "Current password" }
                        input #old-password type="password" name="old_password" autocomplete="current-password" required;
                    }
                    div.field {
                        label for="new-password" { "New password" }
                        input #new-password type="password" name="new_password" autocomplete="new-password"
                            minlength=(crate::auth::MIN_PASSWORD) required;
                    }
                    div.field {
                        label for="repeat-password" { "Repeat new password" }
                        input #repeat-password type="password" name="repeat_password" autocomplete="new-password" required;
                    }
                    button.btn.btn-primary type="submit" { "Change password" }
                }
            }
        }
        (activity)
    };
    Ok(layout::page_status(
        user,
        Nav::Settings,
        "Settings",
        content,
        status,
    ))
}

/// `GET /ui/settings`.
pub(crate) async fn page(State(state): State<AppState>, user: WebUser) -> PageResult {
    render(&state, &user, SettingsForm::default(), StatusCode::OK).await
}

/// The fields of `set_port`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct PortForm {
    ssh_port: String,
}

/// `POST /ui/settings/port` `{ssh_port}` (empty or 0 clears).
pub(crate) async fn set_port(
    State(state): State<AppState>,
    PostForm { user, form }: PostForm<PortForm>,
) -> PageResult {
    let raw = form.ssh_port.trim().to_owned();
    match validate::parse_ssh_port(&raw) {
        Ok(port) => {
            state
                .store()
                .set_ssh_port(user.id(), port)
                .await
                .map_err(ApiError::from)?;
            let mut flashes = vec![match port {
                Some(p) => Flash::ok(format!("Preferred SSH port set to {p}.")),
                None => Flash::ok(format!(
                    "Preferred SSH port cleared; the dialog uses {DEFAULT_LOCAL_PORT}."
                )),
            }];
            if let Some(w) = port.and_then(validate::ssh_port_warning) {
                flashes.push(Flash::warn(sentence(&w)));
            }
            Ok(redirect_with("/ui/settings#port", &flashes))
        }
        Err(e) => {
            let form = SettingsForm {
                port: Some(raw),
                port_error: Some((sentence(&e.message), Some(sentence(&e.hint)))),
                ..Default::default()
            };
            render(&state, &user, form, StatusCode::BAD_REQUEST).await
        }
    }
}

/// The fields of `add_key`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct AddKeyForm {
    name: String,
    public_key: String,
}

/// `POST /ui/settings/keys` `{name, public_key}`.
pub(crate) async fn add_key(
    State(state): State<AppState>,
    PostForm { user, form }: PostForm<AddKeyForm>,
) -> PageResult {
    let name = form.name.trim().to_owned();
    let text = form.public_key.clone();
    // A pasted private key is never sent back into the page (it would sit
    // in the form, the browser's history and any screenshot).
    let echo = if airlock_proto::sshkey::looks_private(&text) {
        String::new()
    } else {
        text.clone()
    };
    let fail = |msg: (String, Option<String>), status| {
        SettingsForm {
            key_name: name.clone(),
            key_text: echo.clone(),
            key_error: Some(msg),
            ..Default::default()
        }
        .with_status(status)
    };
    let key = match parse_public_key(&text) {
        Ok(k) => k,
        Err(e) => {
            let (f, s) = fail(
                (sentence(&e.to_string()), Some(sentence(e.hint()))),
                StatusCode::BAD_REQUEST,
            );
            return render(&state, &user, f, s).await;
        }
    };
    let key_name = if !name.is_empty() {
        name.clone()
    } else if !key.comment.is_empty() {
        key.comment.clone()
    } else {
        key.fingerprint.clone()
    };
    if key_name.chars().count() > 128 || key_name.chars().any(char::is_control) {
        let (f, s) = fail(
            (
                "The key name must be at most 128 printable characters.".into(),
                None,
            ),
            StatusCode::BAD_REQUEST,
        );
        return render(&state, &user, f, s).await;
    }
    match state.store().add_ssh_key(user.id(), &key_name, &key).await {
        Ok(info) => {
            state
                .audit(
                    crate::audit::Audit::new("sshkey.added")
                        .user_ids(user.id(), Some(user.email()))
                        .with("name", &info.name)
                        .with("fingerprint", &info.fingerprint),
                )
                .await;
            Ok(redirect_with(
                "/ui/settings#keys",
                &[Flash::ok(format!(
                    "Key {} added ({}).",
                    info.name, info.fingerprint
                ))],
            ))
        }
        Err(e) => {
            let e = ApiError::from(e);
            let status = e.status;
            let msg = if status == StatusCode::CONFLICT {
                (
                    format!(
                        "You already have a key named {key_name} or with fingerprint {}.",
                        key.fingerprint
                    ),
                    Some("Give it another name, or remove the old key first.".to_owned()),
                )
            } else {
                explain(&e)
            };
            let (f, s) = fail(msg, status);
            render(&state, &user, f, s).await
        }
    }
}

impl SettingsForm {
    fn with_status(self, s: StatusCode) -> (Self, StatusCode) {
        (self, s)
    }
}

/// `POST /ui/settings/keys/{id}/remove`.
pub(crate) async fn remove_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PostForm { user, form }: PostForm<Confirmation>,
) -> PageResult {
    let keys = state
        .store()
        .ssh_keys(user.id())
        .await
        .map_err(ApiError::from)?;
    let Some(key) = keys.into_iter().find(|k| k.id == id) else {
        return Err(ApiError::not_found(
            "ssh-key-not-found",
            "there is no such key on your account",
        )
        .into());
    };
    if !form.confirmed.given() {
        return Ok(layout::confirm_page(
            &user,
            Nav::Settings,
            layout::Confirm {
                title: "Remove key?",
                question: &format!(
                    "Remove key {} ({})? New sessions will no longer accept it.",
                    key.name, key.fingerprint
                ),
                action: &format!("/ui/settings/keys/{}/remove", key.id),
                fields: &[],
                button: "Remove key",
                back: "/ui/settings#keys",
            },
        ));
    }
    state
        .store()
        .remove_ssh_key(user.id(), &key.id)
        .await
        .map_err(ApiError::from)?;
    state
        .audit(
            crate::audit::Audit::new("sshkey.removed")
                .user_ids(user.id(), Some(user.email()))
                .with("name", &key.name)
                .with("fingerprint", &key.fingerprint),
        )
        .await;
    Ok(redirect_with(
        "/ui/settings#keys",
        &[Flash::ok(format!(
            "Key {} ({}) removed.",
            key.name, key.fingerprint
        ))],
    ))
}

/// `POST /ui/settings/keypair/regenerate`: shows the new secret once.
pub(crate) async fn regenerate_keypair(
    State(state): State<AppState>,
    PostForm { user, .. }: PostForm,
) -> PageResult {
    let kp = state
        .store()
        .regenerate_keypair(user.id())
        .await
        .map_err(ApiError::from)?;
    tracing::info!(email = %user.email(), access_key = %kp.access_key, "API keypair regenerated (web)");
    state
        .audit(
            crate::audit::Audit::new("keypair.created")
                .user_ids(user.id(), Some(user.email()))
                .with("access_key", &kp.access_key),
        )
        .await;
    let form = SettingsForm {
        new_keypair: Some((kp.access_key, kp.secret_key)),
        ..Default::default()
    };
    let mut resp = render(&state, &user, form, StatusCode::OK).await?;
    // The page holds a secret: never cache it.
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

/// `POST /ui/settings/keypair/revoke`.
pub(crate) async fn revoke_keypair(
    State(state): State<AppState>,
    PostForm { user, form }: PostForm<Confirmation>,
) -> PageResult {
    if !form.confirmed.given() {
        return Ok(layout::confirm_page(
            &user,
            Nav::Settings,
            layout::Confirm {
                title: "Revoke keypair?",
                question: "Revoke your keypair? Signed requests stop working until you regenerate one.",
                action: "/ui/settings/keypair/revoke",
                fields: &[],
                button: "Revoke keypair",
                back: "/ui/settings#keypair",
            },
        ));
    }
    state
        .store()
        .revoke_keypairs(user.id())
        .await
        .map_err(ApiError::from)?;
    tracing::info!(email = %user.email(), "API keypair revoked (web)");
    state
        .audit(crate::audit::Audit::new("keypair.revoked").user_ids(user.id(), Some(user.email())))
        .await;
    Ok(redirect_with(
        "/ui/settings#keypair",
        &[Flash::ok(
            "Keypair revoked; signed requests are refused now.",
        )],
    ))
}

/// The fields of `change_password`.
// (No Debug: it holds passwords.)
#[derive(Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct PasswordForm {
    old_password: String,
    new_password: String,
    repeat_password: String,
}

/// `POST /ui/settings/password` `{old_password, new_password, repeat_password}`.
pub(crate) async fn change_password(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> PageResult {
    let client = crate::forwarded::client_ip(
        state.config(),
        req.headers(),
        crate::forwarded::peer_of_request(&req),
    );
    let PostForm { user, form } =
        <PostForm<PasswordForm> as axum::extract::FromRequest<AppState>>::from_request(req, &state)
            .await?;
    let old = form.old_password.clone();
    let new = form.new_password.clone();
    let fail = |msg: &str, hint: Option<&str>| SettingsForm {
        password_error: Some((msg.to_owned(), hint.map(str::to_owned))),
        ..Default::default()
    };
    if new != form.repeat_password.as_str() {
        let f = fail(
            "The new passwords do not match.",
            Some("Type the same new password twice."),
        );
        return render(&state, &user, f, StatusCode::BAD_REQUEST).await;
    }
    if new.chars().count() < crate::auth::MIN_PASSWORD {
        let f = fail(
            &format!(
                "The new password is too short (at least {} characters).",
                crate::auth::MIN_PASSWORD
            ),
            None,
        );
        return render(&state, &user, f, StatusCode::BAD_REQUEST).await;
    }
    match crate::auth::password_login(&state, user.email(), &old, client).await? {
        crate::auth::LoginOutcome::Ok(_) => {}
        crate::auth::LoginOutcome::Limited(r) => {
            let f = fail(
                &format!(
                    "Too many wrong passwords. Try again in {} second(s).",
                    r.retry_after
                ),
                None,
            );
            return render(&state, &user, f, StatusCode::TOO_MANY_REQUESTS).await;
        }
        _ => {
            state
                .audit(
                    crate::audit::Audit::new("password.change-failed")
                        .user_ids(user.id(), Some(user.email()))
                        .with("reason", "wrong-password"),
                )
                .await;
            let f = fail("The current password is wrong.", None);
            return render(&state, &user, f, StatusCode::FORBIDDEN).await;
        }
    }
    state
        .store()
        .set_password(user.id(), &new)
        .await
        .map_err(ApiError::from)?;
    crate::auth::end_logins(&state, user.id()).await?;
    tracing::info!(email = %user.email(), "password changed (web)");
    state
        .audit(crate::audit::Audit::new("password.changed").user_ids(user.id(), Some(user.email())))
        .await;
    let mut resp = redirect_with(
        "/ui/login",
        &[Flash::ok("Password changed. Log in with the new password.")],
    );
    crate::cookies::set(&mut resp, &crate::cookies::clear_session());
    Ok(resp)
}
