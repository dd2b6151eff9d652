//! Cross-site request refusal.
//!
//! A browser attaches the login cookie to requests any web page makes —
//! form posts (`application/x-www-form-urlencoded`, `multipart/form-data`,
//! `text/plain`) and WebSocket handshakes need no CORS preflight. So every
//! state-changing request (any method but GET/HEAD/OPTIONS) and every
//! WebSocket upgrade that a browser marks as coming from another origin
//! (`Origin`, `Sec-Fetch-Site`) is refused with 403 before routing.
//!
//! Requests signed with a keypair (`Authorization`) are not affected: a page
//! cannot add that header cross-origin without a CORS preflight, which the
//! gateway never grants. Non-browser clients (the airlock CLI, the official
//! client in either mode) send neither `Origin` nor `Sec-Fetch-Site`, so they
//! are not affected either. The web UI's forms keep their CSRF tokens.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, HOST, ORIGIN, UPGRADE};
use http::{HeaderMap, Method};

use crate::AppState;
use crate::error::ApiError;
use crate::forwarded::{forwarded, peer_of};

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `host[:port]` → (lower-case host, port or the scheme's default).
fn split_authority(authority: &str, scheme: &str) -> Option<(String, u16)> {
    let authority = authority.trim();
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return None,
        };
        (format!("[{}]", h.to_ascii_lowercase()), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (authority.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port(scheme)?,
    };
    Some((host, port))
}

fn has_explicit_port(authority: &str) -> bool {
    let a = authority.trim();
    if a.starts_with('[') {
        a.contains("]:")
    } else {
        a.contains(':')
    }
}

/// `scheme://host[:port]` → (scheme, host, port).
fn parse_origin(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = origin.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') || authority.contains('@') {
        return None;
    }
    let (host, port) = split_authority(authority, &scheme)?;
    Some((scheme, host, port))
}

/// Whether `origin` is this gateway as the request reached it.
fn is_own_origin(state: &AppState, parts: &http::request::Parts, origin: &str) -> bool {
    let cfg = state.config();
    let want = origin.trim().trim_end_matches('/');
    if cfg
        .public_origins
        .iter()
        .any(|o| o.trim().trim_end_matches('/').eq_ignore_ascii_case(want))
    {
        return true;
    }
    let Some((scheme, host, port)) = parse_origin(origin) else {
        return false;
    };
    let peer = peer_of(parts);
    let own_scheme = forwarded(cfg, &parts.headers, peer, "proto")
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| {
            if cfg.secure_cookies {
                "https".to_owned()
            } else {
                "http".to_owned()
            }
        });
    let hosts = [
        forwarded(cfg, &parts.headers, peer, "host"),
        header(&parts.headers, HOST.as_str()),
        parts.uri.authority().map(|a| a.as_str()),
    ];
    // An explicit port must match. A Host without a port (behind a proxy
    // on 80/443 that may not send X-Forwarded-Proto) matches an origin on
    // its own scheme's default port.
    let origin_on_default = default_port(&scheme) == Some(port);
    matches!(scheme.as_str(), "http" | "https")
        && hosts.into_iter().flatten().any(|h| {
            let explicit = has_explicit_port(h);
            split_authority(h, &own_scheme)
                .is_some_and(|(h, p)| h == host && (p == port || (!explicit && origin_on_default)))
        })
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(UPGRADE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.eq_ignore_ascii_case("websocket"))
    })
}

/// Why a request is refused as cross-site, if it is.
pub fn cross_site_refusal(state: &AppState, parts: &http::request::Parts) -> Option<ApiError> {
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if safe && !is_websocket_upgrade(&parts.headers) {
        return None;
    }
    if parts.headers.contains_key(AUTHORIZATION) {
        return None;
    }
    let what = if safe {
        "WebSocket connection"
    } else {
        "request"
    };
    if let Some(site) = header(&parts.headers, "sec-fetch-site") {
        let site = site.trim().to_ascii_lowercase();
        if site != "same-origin" && site != "none" {
            return Some(refusal(format!(
                "cross-site {what} refused: the browser says it comes from another site ({site})"
            )));
        }
    }
    match parts.headers.get(ORIGIN) {
        None => None,
        Some(origin) => {
            let origin = origin.to_str().unwrap_or("null");
            if is_own_origin(state, parts, origin) {
                None
            } else {
                Some(refusal(format!(
                    "cross-origin {what} refused: it comes from {origin:?}, not from this gateway"
                )))
            }
        }
    }
}

fn refusal(msg: String) -> ApiError {
    ApiError::forbidden(msg).hint(
        "state-changing requests and tunnels are accepted only from the airlock web UI itself, the CLI or \
         signed API clients; if users reach the gateway under another name, the operator sets --public-url",
    )
}

/// Middleware: refuses cross-site state-changing requests and WebSocket
/// upgrades before they reach a handler.
pub(crate) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if let Some(e) = cross_site_refusal(&state, &parts) {
        tracing::warn!(
            method = %parts.method,
            path = %parts.uri.path(),
            origin = ?parts.headers.get(ORIGIN),
            "refused a cross-site request"
        );
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse() {
        assert_eq!(
            parse_origin("http://127.0.0.1:8090"),
            Some(("http".into(), "127.0.0.1".into(), 8090))
        );
        assert_eq!(
            parse_origin("https://Airlock.Example.com"),
            Some(("https".into(), "airlock.example.com".into(), 443))
        );
        assert_eq!(
            parse_origin("http://[::1]:80"),
            Some(("http".into(), "[::1]".into(), 80))
        );
        assert_eq!(parse_origin("null"), None);
        assert_eq!(parse_origin("http://a@b"), None);
        assert_eq!(parse_origin("file://"), None);
        assert_eq!(
            split_authority("example.com", "https"),
            Some(("example.com".into(), 443))
        );
        assert!(has_explicit_port("127.0.0.1:8090"));
        assert!(has_explicit_port("[::1]:80"));
        assert!(!has_explicit_port("[::1]"));
        assert!(!has_explicit_port("example.com"));
    }
}
