//! Login, cookies, HMAC signatures, `/func/` routing, problem bodies.

use std::time::Duration;

use airlock_gateway::GatewayConfig;
use airlock_proto::sign::{self, SignedParts};

use crate::harness::{Gateway, client, login, within};

#[tokio::test]
async fn version_handshake_bare_and_under_func() {
    within(async {
        let gw = Gateway::start().await;
        for path in ["/", "/func/", "/func"] {
            let v: serde_json::Value = client()
                .get(gw.url(path))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["version"], "v9.20250722", "{path}");
            assert!(
                v["manager"].as_str().unwrap().starts_with("airlock "),
                "{path}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn login_success_sets_a_lasting_cookie() {
    within(async {
        let gw = Gateway::start().await;
        let resp = client()
            .post(gw.url("/server/login"))
            .json(&serde_json::json!({"username": gw.user.email, "password": gw.user.password}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.starts_with("AIOHTTP_SESSION="), "{cookie}");
        let value = cookie
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("AIOHTTP_SESSION=");
        assert_eq!(value.len(), 32);
        assert!(value.chars().all(|c| c.is_ascii_hexdigit()));
        for attr in ["Path=/", "HttpOnly", "Max-Age=604800"] {
            assert!(cookie.contains(attr), "{cookie} lacks {attr}");
        }
        assert!(!cookie.to_ascii_lowercase().contains("domain"), "{cookie}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["authenticated"], true);
        assert_eq!(body["data"]["role"], "user");
        assert_eq!(body["data"]["access_key"], gw.user.access_key);
    })
    .await;
}

#[tokio::test]
async fn login_failure_is_200_with_details() {
    within(async {
        let gw = Gateway::start().await;
        for (user, pw) in [
            (gw.user.email.as_str(), "wrong"),
            ("nobody@test.local", "x"),
        ] {
            let resp = client()
                .post(gw.url("/server/login"))
                .json(&serde_json::json!({"username": user, "password": pw}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            assert!(resp.headers().get("set-cookie").is_none());
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["authenticated"], false);
            assert_eq!(
                body["data"]["type"],
                "https://api.backend.ai/probs/auth-failed"
            );
            assert_eq!(body["data"]["title"], "Unauthorized access");
            assert!(
                body["data"]["details"]
                    .as_str()
                    .unwrap()
                    .contains("Invalid")
            );
        }
        let resp = client()
            .post(gw.url("/server/login"))
            .json(&serde_json::json!({"username": gw.user.email}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
    })
    .await;
}

#[tokio::test]
async fn repeated_failures_are_rate_limited_per_account_and_address() {
    within(async {
        let gw = Gateway::start_with(GatewayConfig {
            login_free_failures: 3,
            login_backoff_base: Duration::from_secs(600),
            login_failures_per_address: 5,
            login_window: Duration::from_secs(600),
            ..GatewayConfig::default()
        })
        .await;
        let attempt = |user: String, pw: &'static str| {
            let url = gw.url("/server/login");
            async move {
                client()
                    .post(url)
                    .json(&serde_json::json!({"username": user, "password": pw}))
                    .send()
                    .await
                    .unwrap()
            }
        };
        for _ in 0..3 {
            assert_eq!(attempt(gw.user.email.clone(), "bad").await.status(), 200);
        }
        // This client must wait now, even with the right password.
        let locked = client()
            .post(gw.url("/server/login"))
            .json(&serde_json::json!({"username": gw.user.email, "password": gw.user.password}))
            .send()
            .await
            .unwrap();
        assert_eq!(locked.status(), 429);
        assert!(locked.headers().contains_key("retry-after"));
        let problem: serde_json::Value = locked.json().await.unwrap();
        assert_eq!(
            problem["type"],
            "https://api.backend.ai/probs/too-many-requests"
        );
        // Another account from the same address still works until the
        // address limit (5 failures) is reached.
        login(&gw, &gw.admin.email, &gw.admin.password).await;
        for _ in 0..2 {
            assert_eq!(
                attempt("someone@test.local".into(), "bad").await.status(),
                200
            );
        }
        assert_eq!(attempt(gw.admin.email.clone(), "bad").await.status(), 429);
    })
    .await;
}

#[tokio::test]
async fn encrypted_login_body_over_http() {
    within(async {
        let gw = Gateway::start().await;
        let body = serde_json::json!({"username": gw.user.email, "password": gw.user.password});
        let endpoint = format!("http://{}", gw.host());
        for ep in [endpoint.clone(), format!("{endpoint}/")] {
            let enc = airlock_proto::login::encrypt(&ep, body.to_string().as_bytes());
            let resp = client()
                .post(gw.url("/server/login"))
                .header("X-BackendAI-Encoded", "true")
                .header("Content-Type", "application/octet-stream")
                .body(enc)
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(v["authenticated"], true, "{ep}: {v}");
        }
        // Encrypted for a different endpoint: unreadable, a clear 400.
        let enc = airlock_proto::login::encrypt("http://elsewhere:1", body.to_string().as_bytes());
        let resp = client()
            .post(gw.url("/server/login"))
            .header("X-BackendAI-Encoded", "true")
            .body(enc)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
    })
    .await;
}

#[tokio::test]
async fn cookie_is_reused_across_requests_and_logout_ends_it() {
    within(async {
        let gw = Gateway::start().await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let c = client();
        for path in [
            "/func/user/settings",
            "/user/settings",
            "/func/user/ssh-keys",
        ] {
            let r = c
                .get(gw.url(path))
                .header("Cookie", format!("AIOHTTP_SESSION={cookie}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            assert!(
                r.headers().get("set-cookie").is_none(),
                "cookie must not rotate"
            );
        }
        // The desktop app's header form works too.
        let r = c
            .get(gw.url("/func/user/settings"))
            .header("X-BackendAI-SessionID", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let check: serde_json::Value = gw
            .get_json("/server/login-check", format!("AIOHTTP_SESSION={cookie}"))
            .await;
        assert_eq!(check["authenticated"], true);
        // The cookie is HttpOnly: its value is not echoed to scripts.
        assert!(check["session_id"].is_null(), "{check}");
        assert!(!check.to_string().contains(&cookie), "{check}");
        let r = c
            .post(gw.url("/server/logout"))
            .header("Cookie", format!("AIOHTTP_SESSION={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = c
            .get(gw.url("/func/user/settings"))
            .header("Cookie", format!("AIOHTTP_SESSION={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let p: serde_json::Value = r.json().await.unwrap();
        assert_eq!(p["type"], "https://api.backend.ai/probs/auth-failed");
        assert_eq!(p["title"], "Unauthorized access");
        assert!(p["msg"].is_string());
    })
    .await;
}

pub(crate) async fn signed_get(
    gw: &Gateway,
    path: &str,
    sign_path: &str,
    access_key: &str,
    secret: &str,
    date: chrono::DateTime<chrono::Utc>,
) -> reqwest::Response {
    let date = sign::format_date(date);
    let host = gw.host();
    let sig = SignedParts {
        method: "GET",
        target: sign_path,
        date: &date,
        host: &host,
        content_type: "text/plain",
        api_version: "v9.20250722",
    }
    .sign(secret)
    .unwrap();
    client()
        .get(gw.url(path))
        .header("Date", &date)
        .header("X-BackendAI-Version", "v9.20250722")
        .header("Content-Type", "text/plain")
        .header(
            "Authorization",
            sign::authorization_header(access_key, &sig),
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn hmac_signatures_accepted_and_rejected() {
    within(async {
        let gw = Gateway::start().await;
        let (ak, sk) = (gw.user.access_key.clone(), gw.user.secret_key.clone());
        let now = chrono::Utc::now();
        // Valid, bare and under /func/, with a query string.
        for p in [
            "/user/settings",
            "/func/user/settings",
            "/user/settings?x=1&y=%20",
        ] {
            let r = signed_get(&gw, p, p, &ak, &sk, now).await;
            assert_eq!(r.status(), 200, "{p}");
        }
        // Wrong secret key.
        let r = signed_get(
            &gw,
            "/user/settings",
            "/user/settings",
            &ak,
            "wrong-secret",
            now,
        )
        .await;
        assert_eq!(r.status(), 401);
        // Unknown access key.
        let r = signed_get(
            &gw,
            "/user/settings",
            "/user/settings",
            "AKIANOSUCHKEY0000000",
            &sk,
            now,
        )
        .await;
        assert_eq!(r.status(), 401);
        // Date too far off.
        let skewed = now - chrono::Duration::minutes(20);
        let r = signed_get(&gw, "/user/settings", "/user/settings", &ak, &sk, skewed).await;
        assert_eq!(r.status(), 401);
        let p: serde_json::Value = r.json().await.unwrap();
        assert!(p["msg"].as_str().unwrap().contains("Date/time sync"), "{p}");
        // Within the window is fine.
        let r = signed_get(
            &gw,
            "/user/settings",
            "/user/settings",
            &ak,
            &sk,
            now - chrono::Duration::minutes(10),
        )
        .await;
        assert_eq!(r.status(), 200);
        // Signature for another path (tampered target).
        let r = signed_get(&gw, "/user/ssh-keys", "/user/settings", &ak, &sk, now).await;
        assert_eq!(r.status(), 401);
        // Malformed header.
        let r = client()
            .get(gw.url("/user/settings"))
            .header("Authorization", "BackendAI garbage")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    })
    .await;
}

#[tokio::test]
async fn problem_bodies_for_unknown_paths_and_methods() {
    within(async {
        let gw = Gateway::start().await;
        let r = client()
            .get(gw.url("/func/no/such/thing"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: serde_json::Value = r.json().await.unwrap();
        assert!(
            p["type"]
                .as_str()
                .unwrap()
                .starts_with("https://api.backend.ai/probs/")
        );
        assert!(p["title"].is_string());
        assert!(p["msg"].is_string());
        let r = client()
            .delete(gw.url("/server/login"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
        let p: serde_json::Value = r.json().await.unwrap();
        assert!(p["title"].is_string() && p["type"].is_string());
        // Unauthenticated API call: 401 problem.
        let r = client()
            .get(gw.url("/func/user/settings"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let p: serde_json::Value = r.json().await.unwrap();
        assert_eq!(p["type"], "https://api.backend.ai/probs/auth-failed");
    })
    .await;
}

#[tokio::test]
async fn behind_https_every_cookie_is_secure_and_over_http_none_is() {
    within(async {
        for secure in [true, false] {
            let gw = Gateway::start_with(GatewayConfig {
                secure_cookies: secure,
                ..GatewayConfig::default()
            })
            .await;
            let c = client();
            let form = c.get(gw.url("/ui/login")).send().await.unwrap();
            let login = c
                .post(gw.url("/server/login"))
                .json(&serde_json::json!({"username": gw.user.email, "password": gw.user.password}))
                .send()
                .await
                .unwrap();
            let mut set = Vec::new();
            for r in [&form, &login] {
                set.extend(
                    r.headers()
                        .get_all("set-cookie")
                        .iter()
                        .map(|v| v.to_str().unwrap().to_owned()),
                );
            }
            assert!(
                set.iter().any(|c| c.starts_with("airlock_login=")),
                "{set:?}"
            );
            assert!(
                set.iter().any(|c| c.starts_with("AIOHTTP_SESSION=")),
                "{set:?}"
            );
            for cookie in &set {
                assert_eq!(cookie.contains("Secure"), secure, "{cookie}");
            }
        }
    })
    .await;
}
