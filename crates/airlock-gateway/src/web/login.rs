//! Login and logout. The login sets the very cookie `/server/login` sets
//! (same name, attributes and server-side session), so a browser login and
//! a CLI login are the same kind of thing. Failed attempts count against the
//! same per-account and per-address limits as the API login.

use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::layout;
use super::{HOME, PageResult, PostForm, parse_form, redirect_with, safe_next, web_user};
use crate::AppState;
use crate::auth::{LoginOutcome, password_login};
use crate::cookies;
use crate::forwarded::{client_ip, peer_of};

#[derive(Debug, Deserialize)]
pub(crate) struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

fn login_page(
    next: &str,
    email: &str,
    error: Option<&str>,
    notice: Option<&str>,
    status: StatusCode,
) -> Response {
    let token = hex::encode(rand::random::<[u8; 16]>());
    let content = html! {
        section.login-wrap {
            div.card.login-card {
                div.login-brand {
                    img src=(super::asset_url("logo.svg")) alt="airlock logo" width="48" height="48";
                }
                h1 { "Log in to airlock" }
                p.muted { "Reach your compute sessions over SSH and SFTP." }
                @if let Some(n) = notice { div.flashes { div.flash.flash-ok role="status" { (n) } } }
                @if let Some(e) = error { div.form-error role="alert" { strong { (e) } } }
                form method="post" action="/ui/login" {
                    input type="hidden" name="login_token" value=(token);
                    input type="hidden" name="next" value=(next);
                    div.field {
                        label for="email" { "Email" }
                        input #email type="email" name="email" value=(email) autocomplete="username" required autofocus[email.is_empty()];
                    }
                    div.field {
                        label for="password" { "Password" }
                        input #password type="password" name="password" autocomplete="current-password" required autofocus[!email.is_empty()];
                    }
                    button.btn.btn-primary.btn-block type="submit" { "Log in" }
                }
                p.small.muted {
                    "Same account as the CLI: " code { "airlock login" } "."
                }
            }
        }
    };
    let mut resp = layout::public_page("Log in", content).into_response();
    *resp.status_mut() = status;
    cookies::set(&mut resp, &cookies::login_token(&token));
    resp
}

/// `GET /ui/login`.
pub(crate) async fn form(
    State(state): State<AppState>,
    Query(q): Query<NextQuery>,
    req: Request,
) -> PageResult {
    let (parts, _) = req.into_parts();
    let next = safe_next(q.next.as_deref().unwrap_or(HOME)).to_owned();
    if web_user(&state, &parts).await?.is_some() {
        return Ok(Redirect::to(&next).into_response());
    }
    let flashes = cookies::get(&parts.headers, cookies::FLASH)
        .map(|f| super::Flash::decode(&f))
        .unwrap_or_default();
    let notice = flashes.first().map(|f| f.text.clone());
    let mut resp = login_page(&next, "", None, notice.as_deref(), StatusCode::OK);
    if notice.is_some() {
        super::clear_flash(&mut resp);
    }
    Ok(resp)
}

/// The login form's fields.
// (No Debug: it holds passwords.)
#[derive(Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct LoginForm {
    next: String,
    email: String,
    password: String,
    login_token: String,
}

/// `POST /ui/login`.
pub(crate) async fn submit(State(state): State<AppState>, req: Request) -> PageResult {
    let (parts, body) = req.into_parts();
    let form: LoginForm = parse_form(&super::form_body(body).await?)?;
    let next = safe_next(&form.next).to_owned();
    let email = form.email.trim().to_owned();
    let password = form.password.as_str();

    // Login CSRF: the hidden token must match the cookie set with the form.
    let expected = cookies::get(&parts.headers, cookies::LOGIN).unwrap_or_default();
    let given = &form.login_token;
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Ok(login_page(
            &next,
            &email,
            Some("The login form expired. Please try again."),
            None,
            StatusCode::FORBIDDEN,
        ));
    }
    if email.is_empty() || password.is_empty() {
        return Ok(login_page(
            &next,
            &email,
            Some("Enter your email and password."),
            None,
            StatusCode::BAD_REQUEST,
        ));
    }

    let client = client_ip(state.config(), &parts.headers, peer_of(&parts));
    let cfg = state.config();
    let wrong = |msg: &str, status| Ok(login_page(&next, &email, Some(msg), None, status));
    let outcome = password_login(&state, &email, password, client).await?;
    crate::auth::audit_login(&state, &email, &outcome, "web").await;
    let user = match outcome {
        LoginOutcome::Ok(user) => user,
        LoginOutcome::Wrong | LoginOutcome::Inactive => {
            return wrong("Invalid email or password.", StatusCode::UNAUTHORIZED);
        }
        LoginOutcome::Limited(r) => {
            let wait = if r.retry_after < 120 {
                format!("{} second(s)", r.retry_after)
            } else {
                format!("{} minute(s)", r.retry_after.div_ceil(60))
            };
            return wrong(
                &format!("Too many failed login attempts. Try again in {wait}."),
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
    };
    let max_age = i64::try_from(cfg.session_max_age.as_secs()).unwrap_or(i64::MAX / 2000);
    let token = state.store().create_web_session(&user.id, max_age).await?;
    tracing::info!(email = %user.email, "web login succeeded");
    let mut resp = Redirect::to(&next).into_response();
    cookies::set(&mut resp, &cookies::session(&token, max_age));
    cookies::set(&mut resp, &cookies::clear_login_token());
    Ok(resp)
}

/// `POST /ui/logout`: ends the login session (for the CLI too, if it shares
/// the cookie).
pub(crate) async fn logout(State(state): State<AppState>, req: Request) -> PageResult {
    let headers = req.headers().clone();
    let PostForm { user, .. } =
        <PostForm as axum::extract::FromRequest<AppState>>::from_request(req, &state).await?;
    if let Some(token) = cookies::get(&headers, airlock_proto::SESSION_COOKIE) {
        state.store().delete_web_session(&token).await?;
    }
    tracing::info!(email = %user.email(), "web logout");
    state
        .audit(
            crate::audit::Audit::new("logout")
                .user_ids(user.id(), Some(user.email()))
                .with("via", "web"),
        )
        .await;
    let mut resp = redirect_with("/ui/login", &[super::Flash::ok("You have logged out.")]);
    cookies::set(&mut resp, &cookies::clear_session());
    Ok(resp)
}
