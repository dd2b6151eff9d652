//! Failed-login limits under concurrency, per-client backoff, trusted
//! proxies, keypair regeneration/revocation and what a password change or
//! a disabled account ends.

use std::net::IpAddr;
use std::time::Duration;

use airlock_gateway::GatewayConfig;

use crate::auth::signed_get;
use crate::harness::{Gateway, client, cookie_header, login, within};

/// A client whose connections come from `local` (any 127/8 address works
/// on loopback), so tests can play several client addresses.
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .local_address(local.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn try_login(
    c: &reqwest::Client,
    gw: &Gateway,
    email: &str,
    password: &str,
    xff: Option<&str>,
) -> (u16, serde_json::Value, Option<u64>) {
    let mut req = c
        .post(gw.url("/server/login"))
        .json(&serde_json::json!({"username": email, "password": password}));
    if let Some(x) = xff {
        req = req.header("X-Forwarded-For", x);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, r.json().await.unwrap(), retry)
}

/// Counts (checked-and-wrong, refused-by-limit) answers.
fn tally(results: &[(u16, serde_json::Value, Option<u64>)]) -> (usize, usize) {
    let wrong = results
        .iter()
        .filter(|(s, b, _)| *s == 200 && b["authenticated"] == false)
        .count();
    let limited = results.iter().filter(|(s, _, _)| *s == 429).count();
    (wrong, limited)
}

#[tokio::test]
async fn concurrent_wrong_guesses_cannot_overshoot_and_owner_gets_in_from_elsewhere() {
    within(async {
        let gw = Gateway::start_with(GatewayConfig {
            login_free_failures: 5,
            login_backoff_base: Duration::from_secs(60),
            ..GatewayConfig::default()
        })
        .await;
        let attacker = client_from("127.0.0.2");
        let burst = (0..20).map(|i| {
            let (attacker, gw) = (&attacker, &gw);
            async move {
                try_login(
                    attacker,
                    gw,
                    &gw.user.email,
                    &format!("wrong-{i}"),
                    None,
                )
                .await
            }
        });
        let results = futures_util::future::join_all(burst).await;
        let (wrong, limited) = tally(&results);
        // 20 guesses cost 20 attempts: 5 were checked, 15 refused unchecked.
        assert_eq!(
            (wrong, limited),
            (5, 15),
            "{:?}",
            results.iter().map(|r| r.0).collect::<Vec<_>>()
        );
        for (status, body, retry) in &results {
            if *status == 429 {
                assert_eq!(
                    body["type"],
                    "https://api.backend.ai/probs/too-many-requests"
                );
                assert!(retry.is_some_and(|s| s > 0 && s <= 60), "{retry:?}");
            }
        }
        // The attacker's address keeps waiting, even with the right password…
        let (status, _, _) =
            try_login(&attacker, &gw, &gw.user.email, &gw.user.password, None).await;
        assert_eq!(status, 429);
        // …while the owner, from another address, logs in at once.
        let owner = client_from("127.0.0.1");
        let (status, body, _) =
            try_login(&owner, &gw, &gw.user.email, &gw.user.password, None).await;
        assert_eq!(
            (status, &body["authenticated"]),
            (200, &true.into()),
            "{body}"
        );
    })
    .await;
}

#[tokio::test]
async fn account_ceiling_is_short() {
    within(async {
        let gw = Gateway::start_with(GatewayConfig {
            login_free_failures: 100,
            login_failures_per_account: 6,
            login_account_window: Duration::from_secs(2),
            ..GatewayConfig::default()
        })
        .await;
        // Guesses from two addresses add up to the account's ceiling.
        for local in ["127.0.0.2", "127.0.0.3"] {
            let c = client_from(local);
            for _ in 0..3 {
                let (status, _, _) = try_login(&c, &gw, &gw.user.email, "bad", None).await;
                assert_eq!(status, 200);
            }
        }
        let owner = client_from("127.0.0.1");
        let (status, _, retry) =
            try_login(&owner, &gw, &gw.user.email, &gw.user.password, None).await;
        assert_eq!(status, 429, "the ceiling holds for every address");
        let retry = retry.unwrap();
        assert!(
            retry <= 2,
            "the ceiling lasts at most its short window: {retry}"
        );
        // Other accounts are not affected.
        login(&gw, &gw.admin.email, &gw.admin.password).await;
        tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(200)).await;
        let (status, body, _) =
            try_login(&owner, &gw, &gw.user.email, &gw.user.password, None).await;
        assert_eq!(
            (status, &body["authenticated"]),
            (200, &true.into()),
            "{body}"
        );
    })
    .await;
}

#[tokio::test]
async fn x_forwarded_for_only_from_trusted_proxies() {
    within(async {
        // No trusted proxy: whatever X-Forwarded-For says, the client is the
        // peer, so rotating the header does not escape the backoff.
        let gw = Gateway::start_with(GatewayConfig {
            login_free_failures: 3,
            login_backoff_base: Duration::from_secs(60),
            ..GatewayConfig::default()
        })
        .await;
        let c = client();
        let mut statuses = Vec::new();
        for i in 0..6 {
            let xff = format!("198.51.100.{i}");
            statuses.push(
                try_login(&c, &gw, &gw.user.email, "bad", Some(&xff))
                    .await
                    .0,
            );
        }
        assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
        drop(gw);

        // 127.0.0.1 is a trusted proxy: its X-Forwarded-For names the
        // client, and clients behind it are told apart.
        let gw = Gateway::start_with(GatewayConfig {
            login_free_failures: 3,
            login_backoff_base: Duration::from_secs(60),
            trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
            ..GatewayConfig::default()
        })
        .await;
        let proxy = client_from("127.0.0.1");
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(
                try_login(&proxy, &gw, &gw.user.email, "bad", Some("203.0.113.9"))
                    .await
                    .0,
            );
        }
        assert_eq!(statuses, [200, 200, 200, 429]);
        // A client cannot choose its address by prepending entries.
        let (status, _, _) = try_login(
            &proxy,
            &gw,
            &gw.user.email,
            "bad",
            Some("203.0.113.77, 203.0.113.9"),
        )
        .await;
        assert_eq!(status, 429);
        let (status, body, _) = try_login(
            &proxy,
            &gw,
            &gw.user.email,
            &gw.user.password,
            Some("203.0.113.10"),
        )
        .await;
        assert_eq!((status, &body["authenticated"]), (200, &true.into()));
        // An untrusted peer's header is ignored even with proxies configured.
        let other = client_from("127.0.0.2");
        for _ in 0..3 {
            let (status, _, _) =
                try_login(&other, &gw, &gw.user.email, "bad", Some("203.0.113.10")).await;
            assert_eq!(status, 200);
        }
        let (status, _, _) =
            try_login(&other, &gw, &gw.user.email, "bad", Some("203.0.113.11")).await;
        assert_eq!(status, 429, "the untrusted peer itself is the client");
    })
    .await;
}

#[tokio::test]
async fn keypair_regenerate_and_revoke_take_effect_at_once() {
    within(async {
        let gw = Gateway::start().await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let c = client();
        let now = chrono::Utc::now();
        let (old_ak, old_sk) = (gw.user.access_key.clone(), gw.user.secret_key.clone());
        let r = signed_get(&gw, "/user/settings", "/user/settings", &old_ak, &old_sk, now).await;
        assert_eq!(r.status(), 200);
        // Showing it never shows the secret.
        let shown: serde_json::Value = gw.get_json("/user/keypair", cookie_header(&cookie)).await;
        assert_eq!(shown["access_key"], old_ak.as_str());
        assert!(shown.get("secret_key").is_none(), "{shown}");
        assert!(!shown.to_string().contains(&old_sk));
        // Nor does the GraphQL keypair query the official client sends.
        let gql: serde_json::Value = c
            .post(gw.url("/admin/gql"))
            .header("Cookie", cookie_header(&cookie))
            .json(&serde_json::json!({"query": "query { keypair { user_id access_key secret_key is_active is_admin } }"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(gql["data"]["keypair"]["is_admin"], false, "{gql}");
        assert!(!gql.to_string().contains(&old_sk), "{gql}");

        // Regenerate (cookie): the new secret is in this answer only.
        let r = c
            .post(gw.url("/user/keypair"))
            .header("Cookie", cookie_header(&cookie))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let new: serde_json::Value = r.json().await.unwrap();
        let new_ak = new["access_key"].as_str().unwrap().to_owned();
        let new_sk = new["secret_key"].as_str().unwrap().to_owned();
        assert_ne!(new_ak, old_ak);
        let r = signed_get(&gw, "/user/settings", "/user/settings", &old_ak, &old_sk, now).await;
        assert_eq!(r.status(), 401, "the old keypair must stop working at once");
        let r = signed_get(&gw, "/user/settings", "/user/settings", &new_ak, &new_sk, now).await;
        assert_eq!(r.status(), 200);

        // Revoke: signed requests stop; the cookie login is unaffected.
        let r = c
            .delete(gw.url("/user/keypair"))
            .header("Cookie", cookie_header(&cookie))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = signed_get(&gw, "/user/settings", "/user/settings", &new_ak, &new_sk, now).await;
        assert_eq!(r.status(), 401);
        let shown: serde_json::Value = gw.get_json("/user/keypair", cookie_header(&cookie)).await;
        assert!(shown["access_key"].is_null(), "{shown}");
    })
    .await;
}

async fn status_with_cookie(gw: &Gateway, cookie: &str) -> u16 {
    client()
        .get(gw.url("/user/settings"))
        .header("Cookie", cookie_header(cookie))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn password_change_and_disable_end_web_sessions() {
    within(async {
        let gw = Gateway::start().await;
        let a = login(&gw, &gw.user.email, &gw.user.password).await;
        let b = login(&gw, &gw.user.email, &gw.user.password).await;
        let admin = login(&gw, &gw.admin.email, &gw.admin.password).await;
        let change = |cookie: String, old: &str, new: &str| {
            let body = serde_json::json!({"old_password": old, "new_password": new});
            let url = gw.url("/user/password");
            async move {
                client()
                    .post(url)
                    .header("Cookie", cookie_header(&cookie))
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
            }
        };
        // Wrong current password: refused, nothing ends.
        let r = change(a.clone(), "not-it", "new-password-1").await;
        assert_eq!(r.status(), 403);
        // Too short.
        let r = change(a.clone(), &gw.user.password, "short").await;
        assert_eq!(r.status(), 400);
        assert_eq!(status_with_cookie(&gw, &b).await, 200);
        let r = change(a.clone(), &gw.user.password, "new-password-1").await;
        assert_eq!(r.status(), 200);
        // Every cookie of the account is dead; another account's is not.
        assert_eq!(status_with_cookie(&gw, &a).await, 401);
        assert_eq!(status_with_cookie(&gw, &b).await, 401);
        assert_eq!(status_with_cookie(&gw, &admin).await, 200);
        let (status, body, _) =
            try_login(&client(), &gw, &gw.user.email, &gw.user.password, None).await;
        assert_eq!((status, &body["authenticated"]), (200, &false.into()));
        let c = login(&gw, &gw.user.email, "new-password-1").await;
        assert_eq!(status_with_cookie(&gw, &c).await, 200);

        // Disabling the account ends its cookies too, and refuses its keys.
        let user = gw
            .store
            .user_by_email(&gw.user.email)
            .await
            .unwrap()
            .unwrap();
        gw.store
            .set_account(&user.id, airlock_gateway::store::Account::Disabled)
            .await
            .unwrap();
        assert_eq!(status_with_cookie(&gw, &c).await, 401);
        gw.store
            .set_account(&user.id, airlock_gateway::store::Account::Enabled)
            .await
            .unwrap();
        assert_eq!(
            status_with_cookie(&gw, &c).await,
            401,
            "re-enabling does not revive ended sessions"
        );
        let r = signed_get(
            &gw,
            "/user/settings",
            "/user/settings",
            &gw.user.access_key,
            &gw.user.secret_key,
            chrono::Utc::now(),
        )
        .await;
        assert_eq!(r.status(), 200);
    })
    .await;
}
