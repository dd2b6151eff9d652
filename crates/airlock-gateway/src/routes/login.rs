//! `/server/login`, `/server/logout`, `/server/login-check` (web server mode).

use std::net::{IpAddr, SocketAddr};

use airlock_proto::api::{AccountInfo, LoginCheck, LoginResponse};
use airlock_proto::login::{self, ENCODED_HEADER, LoginRequest};
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::AppState;
use crate::audit::Audit;
use crate::auth::{LoginOutcome, audit_login, password_login, session_token};
use crate::cookies;
use crate::error::{ApiError, ApiResult};
use crate::forwarded::{client_ip, forwarded};
use crate::store::User;

pub(crate) async fn account_info(state: &AppState, user: &User) -> ApiResult<AccountInfo> {
    let access_key = state
        .store()
        .keypair_of(&user.id)
        .await?
        .map(|k| k.access_key)
        .unwrap_or_default();
    Ok(AccountInfo {
        email: user.email.clone(),
        role: user.role.as_str().to_owned(),
        status: if user.is_active { "active" } else { "inactive" }.to_owned(),
        access_key,
        is_admin: user.is_admin(),
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn parse_body(
    state: &AppState,
    headers: &HeaderMap,
    peer: IpAddr,
    body: &[u8],
) -> ApiResult<LoginRequest> {
    let encoded = header(headers, ENCODED_HEADER).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if encoded {
        let scheme = forwarded(state.config(), headers, peer, "proto").unwrap_or("http");
        let host = header(headers, HOST.as_str()).unwrap_or_default();
        return login::decrypt_login(&login::endpoint_candidates(scheme, host), body).map_err(
            |e| {
                ApiError::invalid(format!("cannot read the encrypted login body: {e}"))
                    .hint("the client's endpoint URL must match the address it connects to")
            },
        );
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the login body is not JSON: {e}")))?;
    let field = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    match (field("username"), field("password")) {
        (Some(username), Some(password)) if !username.is_empty() => Ok(LoginRequest {
            username,
            password,
            otp: field("otp"),
        }),
        _ => Err(ApiError::invalid("username and password are required")),
    }
}

fn failure(details: &str) -> Response {
    Json(LoginResponse {
        authenticated: false,
        data: serde_json::json!({
            "type": "https://api.backend.ai/probs/auth-failed",
            "title": "Unauthorized access",
            "details": details,
        }),
    })
    .into_response()
}

fn too_many(secs: u64) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-requests",
        "Too many failed login attempts",
    )
    .msg(format!(
        "too many failed login attempts; try again in {secs} seconds"
    ));
    e.retry_after = Some(secs);
    e
}

/// `POST /server/login`.
pub(crate) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let req = parse_body(&state, &headers, peer.ip(), &body)?;
    let client = client_ip(state.config(), &headers, peer.ip());
    let cfg = state.config();
    let outcome = password_login(&state, &req.username, &req.password, client).await?;
    audit_login(&state, &req.username, &outcome, "api").await;
    let user = match outcome {
        LoginOutcome::Ok(user) => user,
        LoginOutcome::Wrong => return Ok(failure("Invalid email or password.")),
        LoginOutcome::Inactive => return Ok(failure("This account is inactive.")),
        LoginOutcome::Limited(r) => return Err(too_many(r.retry_after)),
    };
    let max_age = i64::try_from(cfg.session_max_age.as_secs()).unwrap_or(i64::MAX / 2000);
    let token = state.store().create_web_session(&user.id, max_age).await?;
    tracing::info!(email = %user.email, %client, "login succeeded");
    let info = account_info(&state, &user).await?;
    let mut resp = Json(LoginResponse {
        authenticated: true,
        data: serde_json::to_value(info).map_err(ApiError::internal)?,
    })
    .into_response();
    cookies::set(&mut resp, &cookies::session(&token, max_age));
    Ok(resp)
}

/// `POST /server/logout`.
pub(crate) async fn logout(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let (parts, _) = req.into_parts();
    if let Some(token) = session_token(&parts) {
        if let Some(user) = state.store().web_session_user(&token).await? {
            state
                .audit(Audit::new("logout").user(&user).with("via", "api"))
                .await;
        }
        state.store().delete_web_session(&token).await?;
    }
    let mut resp = (StatusCode::OK, "200: OK").into_response();
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    cookies::set(&mut resp, &cookies::clear_session());
    Ok(resp)
}

/// `GET /server/login-check`.
pub(crate) async fn login_check(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> ApiResult<Json<LoginCheck>> {
    let (parts, _) = req.into_parts();
    if let Some(token) = session_token(&parts)
        && let Some(user) = state.store().web_session_user(&token).await?
        && user.is_active
    {
        let info = account_info(&state, &user).await?;
        return Ok(Json(LoginCheck {
            authenticated: true,
            data: serde_json::to_value(info).map_err(ApiError::internal)?,
            // The cookie is HttpOnly: its value is never handed to scripts.
            // (No client flow reads it; the official client keeps the
            // cookie from the login response.)
            session_id: None,
        }));
    }
    Ok(Json(LoginCheck {
        authenticated: false,
        data: serde_json::json!({}),
        session_id: None,
    }))
}
