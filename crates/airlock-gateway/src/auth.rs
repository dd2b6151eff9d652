//! Who is calling: a login cookie (web server mode) or an HMAC-signed request
//! (keypair mode).

use airlock_proto::SESSION_COOKIE;
use airlock_proto::sign::{self, SignedParts};
use axum::extract::FromRequestParts;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::request::Parts;

use crate::AppState;
use crate::error::ApiError;
use crate::store::User;

/// The raw request target (`/func/session?x=1`) as the client sent it, before
/// the `/func` prefix was stripped for routing. Signatures cover it.
#[derive(Debug, Clone)]
pub struct RawTarget(pub String);

/// How a caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `AIOHTTP_SESSION` cookie or `X-BackendAI-SessionID` header.
    Cookie,
    /// `Authorization: BackendAI …` signature.
    Keypair,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account.
    pub user: User,
    /// How they proved it.
    pub method: AuthMethod,
}

impl Caller {
    /// Whether the caller may act on objects owned by `owner_id`.
    pub fn may_access(&self, owner_id: &str) -> bool {
        self.user.is_admin() || self.user.id == owner_id
    }
}

/// The login cookie value, from `Cookie` or `X-BackendAI-SessionID`.
pub fn session_token(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get("x-backendai-sessionid")
        && let Ok(v) = v.to_str()
        && !v.is_empty()
    {
        return Some(v.to_owned());
    }
    crate::cookies::get(&parts.headers, SESSION_COOKIE)
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Authenticates a request; `Ok(None)` when it carries no credentials.
pub async fn authenticate(state: &AppState, parts: &Parts) -> Result<Option<Caller>, ApiError> {
    if let Some(auth) = header(parts, AUTHORIZATION.as_str()) {
        return verify_signature(state, parts, auth).await.map(Some);
    }
    if let Some(token) = session_token(parts) {
        let user = state
            .store()
            .web_session_user(&token)
            .await?
            .ok_or_else(|| {
                ApiError::unauthorized("your login session has expired or was ended")
                    .hint("log in again")
            })?;
        if !user.is_active {
            return Err(ApiError::unauthorized("this account is inactive"));
        }
        return Ok(Some(Caller {
            user,
            method: AuthMethod::Cookie,
        }));
    }
    Ok(None)
}

async fn verify_signature(state: &AppState, parts: &Parts, auth: &str) -> Result<Caller, ApiError> {
    let cred =
        sign::parse_authorization(auth).map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let date = header(parts, "date")
        .or_else(|| header(parts, "x-backendai-date"))
        .or_else(|| header(parts, "x-sorna-date"))
        .ok_or_else(|| ApiError::unauthorized("the Date header is missing"))?;
    let parsed = sign::parse_date(date)
        .map_err(|_| ApiError::unauthorized(format!("unparsable Date header {date:?}")))?;
    if !sign::date_in_window(&parsed, chrono::Utc::now()) {
        return Err(ApiError::unauthorized("Date/time sync error")
            .hint("the request date is more than 15 minutes away from the server clock; fix your clock (NTP)"));
    }
    let version = header(parts, "x-backendai-version")
        .or_else(|| header(parts, "x-sorna-version"))
        .unwrap_or_default();
    let host = header(parts, HOST.as_str())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let target = parts
        .extensions
        .get::<RawTarget>()
        .map(|t| t.0.clone())
        .unwrap_or_else(|| {
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default()
        });
    let content_type = header(parts, CONTENT_TYPE.as_str()).unwrap_or_default();
    let signed = SignedParts {
        method: parts.method.as_str(),
        target: &target,
        date,
        host: &host,
        content_type,
        api_version: version,
    };
    let bad = || {
        ApiError::unauthorized("the request signature does not match (wrong access/secret key?)")
    };
    let keypair = state
        .store()
        .keypair(&cred.access_key)
        .await?
        .ok_or_else(bad)?;
    if !signed.verify(&keypair.secret_key, &cred.signature) {
        return Err(bad());
    }
    let user = state
        .store()
        .user_by_id(&keypair.user_id)
        .await?
        .ok_or_else(bad)?;
    if !user.is_active {
        return Err(ApiError::unauthorized("this account is inactive"));
    }
    Ok(Caller {
        user,
        method: AuthMethod::Keypair,
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let caller = authenticate(state, parts).await?.ok_or_else(|| {
            ApiError::unauthorized("you are not logged in")
                .hint("run `airlock login` (or sign requests with an access key)")
        })?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// An authenticated administrator.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.user.is_admin() {
            Ok(Admin(caller))
        } else {
            Err(ApiError::forbidden("this needs an administrator account"))
        }
    }
}

/// What a password login came to.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Right password, active account.
    Ok(User),
    /// Wrong email or password (counted).
    Wrong,
    /// Right password, but the account is disabled (counted).
    Inactive,
    /// Refused before checking: too many failures.
    Limited(crate::ratelimit::Refused),
}

/// Checks a password login from `client`, charging the attempt against
/// the failed-login limits first (atomically, so concurrent guesses cannot
/// overshoot them).
pub async fn password_login(
    state: &AppState,
    email: &str,
    password: &str,
    client: std::net::IpAddr,
) -> Result<LoginOutcome, ApiError> {
    let attempt = match state.logins().begin(email.trim(), client) {
        Ok(a) => a,
        Err(refused) => {
            tracing::warn!(%client, scope = refused.scope, "login refused: rate limited");
            return Ok(LoginOutcome::Limited(refused));
        }
    };
    let user = state.store().check_password(email.trim(), password).await?;
    Ok(match user {
        None => {
            tracing::info!(%client, "login failed: wrong email or password");
            LoginOutcome::Wrong
        }
        Some(u) if !u.is_active => {
            tracing::info!(%client, "login failed: account inactive");
            LoginOutcome::Inactive
        }
        Some(u) => {
            state.logins().succeeded(attempt);
            LoginOutcome::Ok(u)
        }
    })
}

/// Records a password login's outcome in the audit trail (`login.ok`,
/// `login.failed` with a reason). A failure names the account when the
/// email is one (the owner then sees attempts on their account).
pub async fn audit_login(state: &AppState, email: &str, outcome: &LoginOutcome, via: &str) {
    use crate::audit::Audit;
    crate::metrics::login(if matches!(outcome, LoginOutcome::Ok(_)) {
        "ok"
    } else {
        "failed"
    });
    let event = match outcome {
        LoginOutcome::Ok(u) => Audit::new("login.ok").user(u),
        other => {
            let reason = match other {
                LoginOutcome::Inactive => "inactive",
                LoginOutcome::Limited(_) => "rate-limited",
                _ => "wrong-password",
            };
            let e = Audit::new("login.failed")
                .with("reason", reason)
                .with("email", email.trim().chars().take(200).collect::<String>());
            match state.store().user_by_email(email.trim()).await {
                Ok(Some(u)) => e.user(&u),
                _ => e,
            }
        }
    };
    state.audit(event.with("via", via)).await;
}

/// Ends everything that keeps an account logged in without its password:
/// every web session (login cookie) and every outstanding folder transfer
/// token. Called after a password change and when an account is disabled.
pub async fn end_logins(state: &AppState, user_id: &str) -> Result<(), ApiError> {
    let n = state.store().delete_web_sessions_of(user_id).await?;
    state.transfers().revoke_user(user_id);
    tracing::info!(user = %user_id, web_sessions = n, "ended the account's logins and transfer tokens");
    Ok(())
}

/// Minimum length of a new password (the same rule as `airlockd user`).
pub const MIN_PASSWORD: usize = 8;
