//! Cross-site requests: what a page on another origin can make a logged-in
//! browser send (form posts in every encoding, WebSocket handshakes) is
//! refused; the same requests from the gateway's own origin, from clients
//! that send no `Origin` (CLI, official client) and signed ones are not.

use airlock_proto::sign::{self, SignedParts};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{Gateway, client, login, within};

const EVIL: &str = "http://127.0.0.1:9";

async fn folders(gw: &Gateway, cookie: &str) -> Vec<String> {
    let v: serde_json::Value = gw
        .get_json("/folders", format!("AIOHTTP_SESSION={cookie}"))
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn assert_refused(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 403, "{what}");
    let p: serde_json::Value = r.json().await.unwrap();
    let msg = p["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("cross-"), "{what}: {p}");
    assert!(p["hint"].is_string(), "{what}: {p}");
}

#[tokio::test]
async fn cross_origin_posts_refused_in_every_encoding() {
    within(async {
        let gw = Gateway::start().await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let c = client();
        let post = |path: &str| {
            c.post(gw.url(path))
                .header("Cookie", format!("AIOHTTP_SESSION={cookie}"))
        };
        // The body a text/plain form can forge: `{"name":"evil1","x":"="}`.
        let forged = r#"{"name":"evil1","x":"="}"#;
        let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
            (
                "urlencoded",
                post("/folders")
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body("name=evil2"),
            ),
            (
                "multipart",
                post("/folders").multipart(reqwest::multipart::Form::new().text("name", "evil3")),
            ),
            (
                "text/plain",
                post("/folders")
                    .header("Content-Type", "text/plain")
                    .body(forged),
            ),
            (
                "json",
                post("/folders").json(&serde_json::json!({"name": "evil4"})),
            ),
            (
                "web UI form",
                post("/ui/folders")
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body("name=evil5"),
            ),
            (
                "session create",
                post("/session").json(&serde_json::json!({"name": "evil6"})),
            ),
            ("logout", post("/server/logout")),
        ];
        for (what, req) in cases {
            assert_refused(req.header("Origin", EVIL).send().await.unwrap(), what).await;
        }
        // Sec-Fetch-Site alone (a browser that omits Origin) is enough.
        for site in ["cross-site", "same-site"] {
            let r = post("/folders")
                .header("Sec-Fetch-Site", site)
                .json(&serde_json::json!({"name": "evil7"}))
                .send()
                .await
                .unwrap();
            assert_refused(r, site).await;
        }
        // A `null` origin (sandboxed frame, data: URL) is foreign too.
        let r = post("/folders")
            .header("Origin", "null")
            .json(&serde_json::json!({"name": "evil8"}))
            .send()
            .await
            .unwrap();
        assert_refused(r, "null origin").await;
        // Another port on the same host is another origin.
        let r = post("/folders")
            .header("Origin", format!("http://127.0.0.1:{}", gw.addr.port() + 1))
            .json(&serde_json::json!({"name": "evil9"}))
            .send()
            .await
            .unwrap();
        assert_refused(r, "other port").await;
        // Nothing was created; the login still works.
        assert!(folders(&gw, &cookie).await.is_empty());

        // Same origin (the web UI's own fetches): accepted.
        let r = post("/folders")
            .header("Origin", format!("http://{}", gw.host()))
            .header("Sec-Fetch-Site", "same-origin")
            .json(&serde_json::json!({"name": "mine1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        // No Origin at all (the CLI, the official client): accepted.
        let r = post("/folders")
            .json(&serde_json::json!({"name": "mine2"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        // GET stays readable cross-origin-free (no state change).
        let r = c
            .get(gw.url("/folders"))
            .header("Cookie", format!("AIOHTTP_SESSION={cookie}"))
            .header("Origin", EVIL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut names = folders(&gw, &cookie).await;
        names.sort();
        assert_eq!(names, ["mine1", "mine2"]);

        // A signed request is not a browser's: an Origin does not matter.
        let date = sign::format_date(chrono::Utc::now());
        let host = gw.host();
        let sig = SignedParts {
            method: "POST",
            target: "/folders",
            date: &date,
            host: &host,
            content_type: "application/json",
            api_version: "v9.20250722",
        }
        .sign(&gw.user.secret_key)
        .unwrap();
        let r = c
            .post(gw.url("/folders"))
            .header("Date", &date)
            .header("X-BackendAI-Version", "v9.20250722")
            .header("Content-Type", "application/json")
            .header("Origin", EVIL)
            .header(
                "Authorization",
                sign::authorization_header(&gw.user.access_key, &sig),
            )
            .body(r#"{"name":"signed1"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    })
    .await;
}

async fn ws_status(gw: &Gateway, cookie: &str, origin: Option<&str>) -> (u16, String) {
    let url = format!("ws://{}/stream/session/nosuch/tcpproxy?app=sshd", gw.host());
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Cookie",
        format!("AIOHTTP_SESSION={cookie}").parse().unwrap(),
    );
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => (101, String::new()),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("websocket handshake failed oddly: {e}"),
    }
}

#[tokio::test]
async fn cross_origin_tunnel_websocket_refused() {
    within(async {
        let gw = Gateway::start().await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let (status, body) = ws_status(&gw, &cookie, Some(EVIL)).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("cross-origin WebSocket"), "{body}");
        // Same origin and no origin pass the check and reach the handler,
        // which looks the session up (there is none here: 404).
        let own = format!("http://{}", gw.host());
        for origin in [Some(own.as_str()), None] {
            let (status, body) = ws_status(&gw, &cookie, origin).await;
            assert_eq!(status, 404, "{origin:?}: {body}");
            assert!(!body.contains("cross-"), "{body}");
        }
    })
    .await;
}

#[tokio::test]
async fn origin_behind_a_proxy_and_configured_public_url() {
    within(async {
        let gw = Gateway::start_with(airlock_gateway::GatewayConfig {
            public_origins: vec!["https://airlock.example.org".into()],
            ..airlock_gateway::GatewayConfig::default()
        })
        .await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let create = |host: &str, origin: &str, name: &str| {
            client()
                .post(gw.url("/folders"))
                .header("Cookie", format!("AIOHTTP_SESSION={cookie}"))
                .header("Host", host)
                .header("Origin", origin)
                .json(&serde_json::json!({ "name": name }))
                .send()
        };
        // A TLS proxy passing `Host: name` (no port, no X-Forwarded-Proto).
        let r = create("airlock.example.com", "https://airlock.example.com", "p1")
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        // The configured public URL.
        let r = create("10.0.0.1:8090", "https://airlock.example.org", "p2")
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        // Other names and explicit other ports are foreign.
        for (host, origin) in [
            ("airlock.example.com", "https://evil.example.com"),
            ("airlock.example.com", "https://airlock.example.com:8443"),
            ("airlock.example.com:8090", "http://airlock.example.com"),
            (
                "airlock.example.com",
                "https://airlock.example.com.evil.net",
            ),
        ] {
            let r = create(host, origin, "p3").await.unwrap();
            assert_refused(r, origin).await;
        }
        let mut names = folders(&gw, &cookie).await;
        names.sort();
        assert_eq!(names, ["p1", "p2"]);
    })
    .await;
}
