//! The web UI under `/ui`: server-rendered HTML (maud) with a little plain
//! JavaScript, every asset embedded in the binary.
//!
//! - Pages authenticate with the same `AIOHTTP_SESSION` cookie as
//!   `/server/login`, so the CLI, the API and the browser share logins. A
//!   page requested without a valid cookie redirects to the login page.
//! - Every state-changing form carries a CSRF token derived from the login
//!   cookie (`csrf` field, checked on POST); the login form itself uses a
//!   double-submit cookie.
//! - Errors are rendered as pages (never problem+json); unknown paths get
//!   a 404 page.
//! - After a successful POST the handler redirects (303) and leaves a
//!   one-shot flash message in a cookie.

mod audit;
mod folders;
mod layout;
mod login;
mod session_files;
mod sessions;
mod settings;
mod terminal;
mod upload;

use std::sync::LazyLock;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::auth::{AuthMethod, Caller};
use crate::cookies;
use crate::error::ApiError;

/// Where the UI lives.
pub(crate) const BASE: &str = "/ui";
/// The page a logged-in user lands on.
pub(crate) const HOME: &str = "/ui/sessions";

const FORM_LIMIT: usize = 256 * 1024;

/// The UI routes, to be nested at [`BASE`].
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/static/{file}", get(asset))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/sessions", get(sessions::page).post(sessions::create))
        .route("/sessions/rows", get(sessions::rows))
        .route("/sessions/{id}/ssh", get(sessions::ssh_dialog))
        .route("/sessions/{id}/terminate", post(sessions::terminate))
        .route("/sessions/{id}/terminal", get(terminal::page))
        .route("/sessions/{id}/terminal/ws", get(terminal::socket))
        .route("/sessions/{id}/id_container", get(sessions::id_container))
        .route("/sessions/{id}/ppk", get(sessions::ppk))
        .route("/sessions/{id}/known_hosts", get(sessions::known_hosts))
        .route("/sessions/{id}/files", get(session_files::browse))
        .route(
            "/sessions/{id}/files/download",
            get(session_files::download),
        )
        .route("/sessions/{id}/files/upload", post(session_files::upload))
        .route(
            "/sessions/{id}/files/rename",
            get(session_files::rename_form).post(session_files::rename),
        )
        .route("/sessions/{id}/files/delete", post(session_files::delete))
        .route("/sessions/{id}/files/mkdir", post(session_files::mkdir))
        .route("/folders", get(folders::page).post(folders::create))
        .route("/folders/{id}", get(folders::browse))
        .route("/folders/{id}/delete", post(folders::delete))
        .route("/folders/{id}/upload", post(folders::upload))
        .route("/folders/{id}/download", get(folders::download))
        .route("/folders/{id}/mkdir", post(folders::mkdir))
        .route("/folders/{id}/delete-file", post(folders::delete_file))
        .route(
            "/folders/{id}/authorized-keys",
            post(folders::authorized_keys),
        )
        .route("/settings", get(settings::page))
        .route("/settings/port", post(settings::set_port))
        .route("/settings/keys", post(settings::add_key))
        .route("/settings/keys/{id}/remove", post(settings::remove_key))
        .route(
            "/settings/keypair/regenerate",
            post(settings::regenerate_keypair),
        )
        .route("/settings/keypair/revoke", post(settings::revoke_keypair))
        .route("/settings/password", post(settings::change_password))
        .route("/admin/events", get(audit::page))
        .route("/admin/cluster", get(audit::cluster))
        .route("/admin/nodes/{id}/drain", post(audit::drain))
        .route("/admin/nodes/{id}/undrain", post(audit::undrain))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(security_headers))
}

/// Whether a request comes from a browser that wants a page.
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

async fn home() -> Redirect {
    Redirect::to(HOME)
}

/// Headers every UI response carries: a strict CSP (no inline script or
/// style), no framing, no sniffing, and no caching of pages (they hold
/// CSRF tokens and keys).
async fn security_headers(req: Request, next: Next) -> Response {
    let is_static = req.uri().path().contains("/static/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_static {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

// ---------------------------------------------------------------- assets

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/app.js"),
    },
    Asset {
        name: "terminal.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/terminal.js"),
    },
    // xterm.js and its fit addon (MIT), as PyPI's webssh 1.6.3 ships them:
    // see assets/xterm/README.md and scripts/vendor-xterm.
    Asset {
        name: "xterm.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/xterm/xterm.min.js"),
    },
    Asset {
        name: "xterm-addon-fit.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/xterm/xterm-addon-fit.min.js"),
    },
    Asset {
        name: "xterm.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/xterm/xterm.min.css"),
    },
    Asset {
        name: "logo.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("assets/logo.svg"),
    },
];

/// A short hash of all assets, appended to their URLs so that browsers may
/// cache them for long and still see new versions at once.
pub(crate) static ASSET_VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut h = Sha256::new();
    for a in ASSETS {
        h.update(a.body);
    }
    hex::encode(&h.finalize()[..6])
});

/// The URL of an embedded asset.
pub(crate) fn asset_url(name: &str) -> String {
    format!("{BASE}/static/{name}?v={}", *ASSET_VERSION)
}

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == file) else {
        return PageError::not_found("There is no such file.").into_response();
    };
    let mut resp = Response::new(Body::from(Bytes::from_static(a.body)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    resp
}

// ---------------------------------------------------------------- flash

/// A one-shot message shown on the next page.
#[derive(Debug, Clone)]
pub(crate) struct Flash {
    /// `ok`, `warn` or `error`.
    pub kind: &'static str,
    pub text: String,
}

impl Flash {
    pub(crate) fn ok(text: impl Into<String>) -> Self {
        Self {
            kind: "ok",
            text: text.into(),
        }
    }

    pub(crate) fn warn(text: impl Into<String>) -> Self {
        Self {
            kind: "warn",
            text: text.into(),
        }
    }

    pub(crate) fn error(text: impl Into<String>) -> Self {
        Self {
            kind: "error",
            text: text.into(),
        }
    }

    fn encode(list: &[Flash]) -> String {
        let joined = list
            .iter()
            .map(|f| format!("{}:{}", f.kind, f.text))
            .collect::<Vec<_>>()
            .join("\n");
        percent_encoding::utf8_percent_encode(&joined, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
    }

    fn decode(raw: &str) -> Vec<Flash> {
        let text = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
        text.lines()
            .filter_map(|l| {
                let (kind, msg) = l.split_once(':')?;
                let kind = match kind {
                    "ok" => "ok",
                    "warn" => "warn",
                    _ => "error",
                };
                Some(Flash {
                    kind,
                    text: msg.chars().take(500).collect(),
                })
            })
            .take(4)
            .collect()
    }
}

/// A 303 redirect that leaves flash messages for the next page.
pub(crate) fn redirect_with(location: &str, flashes: &[Flash]) -> Response {
    let mut resp = Redirect::to(location).into_response();
    if !flashes.is_empty() {
        cookies::set(&mut resp, &cookies::flash(&Flash::encode(flashes)));
    }
    resp
}

/// Like [`redirect_with`], but for a script's request (`X-Airlock-Fragment`):
/// 204 with the target in `X-Location`, so the flash survives until the
/// script navigates there.
pub(crate) fn redirect_for(script: bool, location: &str, flashes: &[Flash]) -> Response {
    let mut resp = redirect_with(location, flashes);
    if script {
        *resp.status_mut() = StatusCode::NO_CONTENT;
        if let Some(v) = resp.headers_mut().remove(header::LOCATION) {
            resp.headers_mut().insert("x-location", v);
        }
    }
    resp
}

fn clear_flash(resp: &mut Response) {
    cookies::set(resp, &cookies::clear_flash());
}

// ---------------------------------------------------------------- users

/// A logged-in browser user.
#[derive(Debug, Clone)]
pub(crate) struct WebUser {
    pub caller: Caller,
    /// The CSRF token for this login session.
    pub csrf: String,
    /// Messages left by the previous request.
    pub flashes: Vec<Flash>,
}

impl WebUser {
    pub(crate) fn id(&self) -> &str {
        &self.caller.user.id
    }

    pub(crate) fn email(&self) -> &str {
        &self.caller.user.email
    }
}

/// The CSRF token of a login session: a domain-separated hash of the
/// cookie, so it is unguessable without the (HttpOnly) cookie and differs
/// from the hash the database keeps.
fn csrf_for(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"airlock web ui csrf v1\0");
    h.update(token.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The login cookie's user, if the cookie is valid.
async fn web_user(state: &AppState, parts: &Parts) -> Result<Option<WebUser>, ApiError> {
    let Some(token) = cookies::get(&parts.headers, airlock_proto::SESSION_COOKIE) else {
        return Ok(None);
    };
    let Some(user) = state.store().web_session_user(&token).await? else {
        return Ok(None);
    };
    if !user.is_active {
        return Ok(None);
    }
    let flashes = cookies::get(&parts.headers, cookies::FLASH)
        .map(|f| Flash::decode(&f))
        .unwrap_or_default();
    Ok(Some(WebUser {
        csrf: csrf_for(&token),
        caller: Caller {
            user,
            method: AuthMethod::Cookie,
        },
        flashes,
    }))
}

/// Where to send someone back to after logging in: a UI path only.
pub(crate) fn safe_next(next: &str) -> &str {
    let ok = (next == BASE || next.starts_with("/ui/"))
        && !next.contains("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    if ok { next } else { HOME }
}

impl FromRequestParts<AppState> for WebUser {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(u) = parts.extensions.get::<WebUser>() {
            return Ok(u.clone());
        }
        match web_user(state, parts).await? {
            Some(u) => {
                parts.extensions.insert(u.clone());
                Ok(u)
            }
            None => {
                let here = parts
                    .extensions
                    .get::<crate::auth::RawTarget>()
                    .map(|t| t.0.clone())
                    .unwrap_or_else(|| parts.uri.to_string());
                Err(PageError::Login(safe_next(&here).to_owned()))
            }
        }
    }
}

// ---------------------------------------------------------------- forms

/// Reads an `application/x-www-form-urlencoded` body into `T`: fields by
/// name, a missing one is its default (declare them `#[serde(default)]`),
/// a repeated one fills a `Vec`. (`serde_html_form`, not `axum::Form`'s
/// `serde_urlencoded`, because of repeated fields such as `mount`.)
pub(crate) fn parse_form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, PageError> {
    serde_html_form::from_bytes(body).map_err(|e| {
        PageError::new(
            StatusCode::BAD_REQUEST,
            "Bad form",
            format!("The form's fields could not be read: {e}."),
        )
        .hint("Go back, reload the page and try again.")
    })
}

/// A form without fields of its own (a button).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct NoFields {}

/// The `confirmed` field of a form that asks "are you sure?" first: `1`
/// once answered.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct Confirmed(String);

impl Confirmed {
    /// Whether the user confirmed.
    pub(crate) fn given(&self) -> bool {
        self.0 == "1"
    }
}

/// A form with nothing but the confirmation.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Confirmation {
    #[serde(default)]
    pub confirmed: Confirmed,
}

/// The CSRF field every logged-in form carries.
#[derive(Debug, Default, serde::Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// Checks a submitted CSRF token against the user's.
pub(crate) fn check_csrf(user: &WebUser, given: &str) -> Result<(), PageError> {
    if bool::from(given.as_bytes().ct_eq(user.csrf.as_bytes())) {
        Ok(())
    } else {
        tracing::warn!(user = %user.email(), "refused a form with a missing or wrong CSRF token");
        Err(PageError::new(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "The form was not sent from this page (its security token is missing or outdated).",
        )
        .hint("Go back, reload the page and try again."))
    }
}

/// A form's body, up to [`FORM_LIMIT`].
pub(crate) async fn form_body(body: axum::body::Body) -> Result<axum::body::Bytes, PageError> {
    axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| {
        PageError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Form too large",
            "The form data is larger than this page accepts (or it was cut off).",
        )
        .hint("Go back, reload the page and try again.")
    })
}

/// A POSTed form from a logged-in user, CSRF-checked, its fields read
/// into `T`.
#[derive(Debug)]
pub(crate) struct PostForm<T = NoFields> {
    pub user: WebUser,
    pub form: T,
}

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for PostForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let user = WebUser::from_request_parts(&mut parts, state).await?;
        let bytes = form_body(body).await?;
        let CsrfField { csrf } = parse_form(&bytes)?;
        check_csrf(&user, &csrf)?;
        let form = parse_form(&bytes)?;
        Ok(PostForm { user, form })
    }
}

// ---------------------------------------------------------------- errors

/// A failed page request, rendered as a page.
#[derive(Debug)]
pub(crate) enum PageError {
    /// Not logged in: go to the login page, then back to this path.
    Login(String),
    /// Anything else.
    Page {
        status: StatusCode,
        title: String,
        msg: String,
        hint: Option<String>,
    },
}

impl PageError {
    pub(crate) fn new(status: StatusCode, title: &str, msg: impl Into<String>) -> Self {
        PageError::Page {
            status,
            title: title.to_owned(),
            msg: msg.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, h: impl Into<String>) -> Self {
        if let PageError::Page { hint, .. } = &mut self {
            *hint = Some(h.into());
        }
        self
    }

    pub(crate) fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Page not found", msg)
    }
}

/// `msg` of an API error with its first letter capitalised, for prose.
pub(crate) fn sentence(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => {
            let mut out: String = f.to_uppercase().collect();
            out.push_str(c.as_str());
            if !out.ends_with(['.', '!', '?']) {
                out.push('.');
            }
            out
        }
        None => String::new(),
    }
}

/// The user-facing text of an API error: message, then hint.
pub(crate) fn explain(e: &ApiError) -> (String, Option<String>) {
    let msg = e
        .problem
        .msg
        .clone()
        .unwrap_or_else(|| e.problem.title.clone());
    (sentence(&msg), web_hint(&e.problem).map(|h| sentence(&h)))
}

/// The hint a page shows for a problem, chosen by its type: the API's
/// hints speak of CLI commands, which a page replaces with its own links
/// and buttons where it has them; other CLI hints still help in a browser.
fn web_hint(problem: &airlock_proto::problem::Problem) -> Option<String> {
    match problem.slug() {
        // "list your … with `airlock … ls`": the page's own lists.
        "session-not-found" | "vfolder-not-found" | "ssh-key-not-found" | "file-not-found" => None,
        "session-already-exists" => {
            Some("Pick another name, or terminate the other session first.".to_owned())
        }
        "quota-exceeded"
            if problem
                .data
                .as_ref()
                .and_then(|d| d.get("quota"))
                .and_then(|q| q.as_str())
                == Some(crate::quotas::QUOTA_SESSIONS) =>
        {
            Some(
                "Terminate a session you no longer need, or ask an administrator to raise your limit."
                    .to_owned(),
            )
        }
        _ => problem.hint.clone(),
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        let (msg, hint) = explain(&e);
        let title = match e.status {
            StatusCode::NOT_FOUND => "Not found".to_owned(),
            StatusCode::FORBIDDEN => "Not allowed".to_owned(),
            s if s.is_server_error() => "Something went wrong".to_owned(),
            _ => e.problem.title.clone(),
        };
        PageError::Page {
            status: e.status,
            title,
            msg,
            hint,
        }
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Login(next) => {
                let target = format!(
                    "{BASE}/login?next={}",
                    percent_encoding::utf8_percent_encode(
                        &next,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                );
                Redirect::to(&target).into_response()
            }
            PageError::Page {
                status,
                title,
                msg,
                hint,
            } => {
                let mut resp =
                    layout::error_page(&title, &msg, hint.as_deref(), status).into_response();
                *resp.status_mut() = status;
                resp
            }
        }
    }
}

/// Result type of page handlers.
pub(crate) type PageResult<T = Response> = Result<T, PageError>;

/// The 404 page (also used by the API's fallback for browsers).
pub(crate) async fn not_found(uri: axum::extract::OriginalUri) -> Response {
    PageError::not_found(format!(
        "There is no page at {}. It may have moved, or the link is wrong.",
        uri.path()
    ))
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    PageError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Not available",
        format!(
            "{} is not how this page is used.",
            req.method().as_str().to_uppercase()
        ),
    )
    .hint("Use the links and buttons on the pages.")
    .into_response()
}

/// `Content-Disposition: attachment` with a safe ASCII name and the exact
/// UTF-8 name (RFC 6266).
pub(crate) fn attachment(resp: &mut Response, name: &str) {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded =
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    )) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
}

/// Percent-encodes a query value.
pub(crate) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_confined_to_the_ui() {
        assert_eq!(safe_next("/ui/folders"), "/ui/folders");
        assert_eq!(safe_next("//evil.example/ui/"), HOME);
        assert_eq!(safe_next("https://evil.example/"), HOME);
        assert_eq!(safe_next("/ui/\\evil"), HOME);
        assert_eq!(safe_next("/session"), HOME);
    }

    #[test]
    fn flash_round_trip() {
        let f = Flash::decode(&Flash::encode(&[
            Flash::ok("Saved: 100%"),
            Flash::warn("careful\u{e9}"),
        ]));
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].text, "Saved: 100%");
        assert_eq!(f[1].kind, "warn");
        assert_eq!(f[1].text, "careful\u{e9}");
    }

    #[test]
    fn csrf_depends_on_the_cookie() {
        assert_ne!(csrf_for("a"), csrf_for("b"));
        assert_eq!(csrf_for("a").len(), 32);
    }

    #[test]
    fn forms_parse() {
        #[derive(serde::Deserialize)]
        struct F {
            #[serde(default)]
            a: String,
            #[serde(default)]
            m: Vec<String>,
            #[serde(default)]
            missing: String,
        }
        let f: F = parse_form(b"a=1&m=x&m=y+z&e=&csrf=t").unwrap();
        assert_eq!(f.a, "1");
        assert_eq!(f.m, ["x", "y z"]);
        assert_eq!(f.missing, "");
        let one: F = parse_form(b"m=only").unwrap();
        assert_eq!(one.m, ["only"]);
        let c: Confirmation = parse_form(b"confirmed=1").unwrap();
        assert!(c.confirmed.given());
        assert!(!parse_form::<Confirmation>(b"").unwrap().confirmed.given());
    }
}
