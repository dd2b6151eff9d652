//! Every cookie the gateway reads or sets, through the `cookie` crate (one
//! parser for `Cookie:` headers, one builder for `Set-Cookie`), so that a
//! cookie's name, path and attributes are written once.

use axum::response::Response;
use cookie::time::Duration;
use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue, header};

use airlock_proto::SESSION_COOKIE;

/// The login anti-forgery token of the login form (path `/ui/login`).
pub const LOGIN: &str = "airlock_login";
/// Flash messages for the next page (path `/ui`).
pub const FLASH: &str = "airlock_flash";

const LOGIN_PATH: &str = "/ui/login";
const FLASH_PATH: &str = "/ui";

/// A cookie's value from the request's `Cookie` headers (unquoted; `None`
/// when absent or empty).
pub fn get(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value_trimmed().to_owned())
        .filter(|v| !v.is_empty())
}

/// Appends `Set-Cookie` for `cookie` to a response.
pub fn set(resp: &mut Response, cookie: &Cookie<'_>) {
    match HeaderValue::from_str(&cookie.to_string()) {
        Ok(v) => {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        // Our values are tokens and base64; this cannot happen.
        Err(e) => tracing::error!(name = %cookie.name(), error = %e, "unrepresentable cookie"),
    }
}

/// Marks every cookie a response sets `Secure` when the gateway is reached
/// over HTTPS (`GatewayConfig::secure_cookies`: `--secure-cookies`, or TLS
/// of its own), so that no cookie — the login, the login form's token, the
/// flash messages — is ever sent back over plain HTTP. A layer on the whole
/// router: the builders below need not know the deployment.
pub(crate) async fn secure_when_https(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    mut resp: Response,
) -> Response {
    if state.config().secure_cookies {
        mark_secure(resp.headers_mut());
    }
    resp
}

fn mark_secure(headers: &mut HeaderMap) {
    let set: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| Cookie::parse(s.to_owned()).ok())
                .and_then(|mut c| {
                    c.set_secure(true);
                    HeaderValue::from_str(&c.to_string()).ok()
                })
                // Not ours to rewrite (nothing else sets cookies): as is.
                .unwrap_or_else(|| v.clone())
        })
        .collect();
    if set.is_empty() {
        return;
    }
    headers.remove(header::SET_COOKIE);
    for v in set {
        headers.append(header::SET_COOKIE, v);
    }
}

/// The login session (`AIOHTTP_SESSION`, as Backend.AI names it), for the
/// whole site.
pub fn session(token: &str, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, token.to_owned()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(Duration::seconds(max_age_secs))
        .build()
}

/// Ends the login session in the browser.
pub fn clear_session() -> Cookie<'static> {
    removal(SESSION_COOKIE, "/")
}

/// The login form's anti-forgery token, for an hour.
pub fn login_token(token: &str) -> Cookie<'static> {
    Cookie::build((LOGIN, token.to_owned()))
        .path(LOGIN_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(Duration::hours(1))
        .build()
}

/// Removes the login form's token.
pub fn clear_login_token() -> Cookie<'static> {
    removal(LOGIN, LOGIN_PATH)
}

/// Flash messages (encoded) for the next page, for a minute.
pub fn flash(encoded: &str) -> Cookie<'static> {
    Cookie::build((FLASH, encoded.to_owned()))
        .path(FLASH_PATH)
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(Duration::minutes(1))
        .build()
}

/// Removes the flash messages once shown.
pub fn clear_flash() -> Cookie<'static> {
    removal(FLASH, FLASH_PATH)
}

fn removal(name: &'static str, path: &'static str) -> Cookie<'static> {
    Cookie::build((name, ""))
        .path(path)
        .http_only(true)
        .max_age(Duration::ZERO)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_among_several_and_unquotes() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; AIOHTTP_SESSION=\"tok\""),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("airlock_flash=xyz"),
        );
        assert_eq!(get(&h, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(get(&h, FLASH).as_deref(), Some("xyz"));
        assert_eq!(get(&h, LOGIN), None);
        h.append(header::COOKIE, HeaderValue::from_static("airlock_login="));
        assert_eq!(get(&h, LOGIN), None);
    }

    #[test]
    fn attributes() {
        let s = session("tok", 3600).to_string();
        for part in [
            "AIOHTTP_SESSION=tok",
            "Path=/",
            "HttpOnly",
            "SameSite=Lax",
            "Max-Age=3600",
        ] {
            assert!(s.contains(part), "{s}");
        }
        assert!(!s.contains("Secure"), "{s}");
        let c = clear_session().to_string();
        assert!(
            c.starts_with("AIOHTTP_SESSION=;") && c.contains("Max-Age=0"),
            "{c}"
        );
        let l = login_token("t").to_string();
        assert!(
            l.contains("Path=/ui/login") && l.contains("SameSite=Strict"),
            "{l}"
        );
        assert!(clear_flash().to_string().contains("Path=/ui"));
    }

    #[test]
    fn every_cookie_set_is_marked_secure_and_kept_otherwise() {
        let mut h = HeaderMap::new();
        for c in [session("tok", 60), flash("bXNn"), clear_login_token()] {
            h.append(
                header::SET_COOKIE,
                HeaderValue::from_str(&c.to_string()).unwrap(),
            );
        }
        let before: Vec<String> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        mark_secure(&mut h);
        let after: Vec<String> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(after.len(), 3, "{after:?}");
        for (b, a) in before.iter().zip(&after) {
            assert!(a.contains("Secure"), "{a}");
            assert_eq!(a.replace("; Secure", ""), *b, "only Secure is added");
        }
    }
}
