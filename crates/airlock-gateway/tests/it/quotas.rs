//! Quotas (sessions, tunnels, folders, upload size) and HTTP connection
//! limits (header-read timeout, connection caps), against a real gateway
//! over real SQLite. Sessions and tunnels run on a fake agent: a real HTTP
//! server on 127.0.0.1 that accepts containers and echoes tunnel bytes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use airlock_gateway::quotas::{Limit, Limits};
use airlock_gateway::{GatewayConfig, HttpLimits};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fake_agent::{FakeAgent, Options, running};
use crate::harness::{Gateway, client, cookie_header, echo, login, open_tunnel, within};

const AGENT_TOKEN: &str = "quota-test-agent-token-0123456789";

fn config(limits: Limits) -> GatewayConfig {
    GatewayConfig {
        agent_token: AGENT_TOKEN.to_owned(),
        default_limits: limits,
        ..GatewayConfig::default()
    }
}

async fn problem(resp: reqwest::Response) -> Value {
    resp.json().await.unwrap()
}

fn assert_quota_problem(p: &Value, what: &str) {
    assert_eq!(
        p["type"], "https://api.backend.ai/probs/quota-exceeded",
        "{p}"
    );
    assert!(p["msg"].as_str().unwrap().contains(what), "{p}");
    assert!(!p["hint"].as_str().unwrap().is_empty(), "{p}");
}

async fn create_folder(gw: &Gateway, cookie: &str, name: &str) -> reqwest::Response {
    client()
        .post(gw.url("/folders"))
        .header("Cookie", cookie_header(cookie))
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn folder_count_limit_holds_under_parallel_creates_and_admin_can_raise_it() {
    within(async {
        let gw = Gateway::start_with(config(Limits {
            folders: Limit::Max(3),
            ..Limits::default()
        }))
        .await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let creates = (0..8).map(|i| {
            let (gw, cookie) = (&gw, cookie.clone());
            async move { create_folder(gw, &cookie, &format!("f{i}")).await }
        });
        let answers = futures_util::future::join_all(creates).await;
        let mut created = 0;
        for r in answers {
            match r.status().as_u16() {
                201 => created += 1,
                429 => assert_quota_problem(&problem(r).await, "3 folders"),
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!(created, 3, "exactly the limit of folders is created");
        let list: Vec<Value> = gw.get_json("/folders", cookie_header(&cookie)).await;
        assert_eq!(list.len(), 3);

        // Users cannot raise their own limit.
        let r = client()
            .patch(gw.url(&format!("/admin/users/{}/limits", gw.user.email)))
            .header("Cookie", cookie_header(&cookie))
            .json(&json!({"folders": 100}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);

        // An administrator can.
        let admin = login(&gw, &gw.admin.email, &gw.admin.password).await;
        let r = client()
            .patch(gw.url(&format!("/admin/users/{}/limits", gw.user.email)))
            .header("Cookie", cookie_header(&admin))
            .json(&json!({"folders": 4, "upload_size": "10M"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["limits"]["folders"], 4, "{v}");
        assert_eq!(v["limits"]["upload_size"], 10 << 20, "{v}");
        assert_eq!(v["overrides"]["sessions"], Value::Null, "{v}");
        let r = client()
            .patch(gw.url(&format!("/admin/users/{}/limits", gw.user.email)))
            .header("Cookie", cookie_header(&admin))
            .json(&json!({"folders": "lots"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(problem(r).await["hint"].is_string());

        assert_eq!(create_folder(&gw, &cookie, "fourth").await.status(), 201);
        let r = create_folder(&gw, &cookie, "fifth").await;
        assert_eq!(r.status(), 429);
        assert_quota_problem(&problem(r).await, "4 folders");

        // The user sees their limits and what is in use.
        let mine: Value = gw.get_json("/user/limits", cookie_header(&cookie)).await;
        assert_eq!(mine["limits"]["folders"], 4, "{mine}");
        assert_eq!(mine["in_use"]["folders"], 4, "{mine}");

        // The limit is per account: the administrator is not affected by
        // the user's folders.
        assert_eq!(create_folder(&gw, &admin, "admins").await.status(), 201);
    })
    .await;
}

/// Files under the gateway's folder storage (relative paths), temporary
/// upload files included.
fn files_on_disk(gw: &Gateway) -> Vec<(String, u64)> {
    fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<(String, u64)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                walk(&e.path(), base, out);
            } else {
                let rel = e.path().strip_prefix(base).unwrap().display().to_string();
                out.push((rel, meta.len()));
            }
        }
    }
    let base = gw.data_dir().join("vfolders");
    let mut out = Vec::new();
    walk(&base, &base, &mut out);
    out.sort();
    out
}

/// Sends raw bytes on a fresh connection and reads the answer until the
/// server closes (or `wait` passes).
async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn upload_size_limit_on_put_and_tus() {
    within(async {
        let gw = Gateway::start_with(config(Limits {
            upload_bytes: Limit::Max(1000),
            ..Limits::default()
        }))
        .await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        assert_eq!(create_folder(&gw, &cookie, "data").await.status(), 201);
        let put = |path: &str| {
            client()
                .put(gw.url(&format!("/folders/data/file?path={path}")))
                .header("Cookie", cookie_header(&cookie))
        };

        // At the limit: fine.
        let r = put("ok.bin").body(vec![b'a'; 1000]).send().await.unwrap();
        assert_eq!(r.status(), 201);

        // Announced over the limit: refused before any body byte is sent.
        let req = format!(
            "PUT /folders/data/file?path=big.bin HTTP/1.1\r\nHost: {}\r\n\
             Cookie: {}\r\nContent-Length: 5000\r\n\r\n",
            gw.host(),
            cookie_header(&cookie)
        );
        let answer = raw_exchange(gw.addr, req.as_bytes(), Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("upload-too-large"), "{answer}");
        assert!(answer.contains("\"hint\""), "{answer}");

        // No length announced (chunked): counted while streaming.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            (0..6).map(|_| Ok(vec![b'b'; 500])).collect();
        let r = put("chunked.bin")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        let p = problem(r).await;
        assert_eq!(p["type"], "https://api.backend.ai/probs/upload-too-large");
        assert!(p["hint"].as_str().unwrap().contains("administrator"), "{p}");

        // Content-Length lie: announce 10 bytes, send 5000. The body is the
        // announced 10 bytes; the rest is never written anywhere.
        let mut req = format!(
            "PUT /folders/data/file?path=lie.bin HTTP/1.1\r\nHost: {}\r\n\
             Cookie: {}\r\nContent-Length: 10\r\nConnection: close\r\n\r\n",
            gw.host(),
            cookie_header(&cookie)
        )
        .into_bytes();
        req.extend(std::iter::repeat_n(b'c', 5000));
        let answer = raw_exchange(gw.addr, &req, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

        // Only the complete files exist: no over-limit file, no temporary
        // file of the refused uploads.
        let files = files_on_disk(&gw);
        let names: Vec<(&str, u64)> = files
            .iter()
            .map(|(p, n)| (p.rsplit('/').next().unwrap(), *n))
            .collect();
        assert_eq!(names, [("lie.bin", 10), ("ok.bin", 1000)], "{files:?}");

        // tus: the announced size decides.
        let request_upload = |size: u64| {
            client()
                .post(gw.url("/folders/data/request-upload"))
                .header("Cookie", cookie_header(&cookie))
                .json(&json!({"path": "tus.bin", "size": size}))
                .send()
        };
        let r = request_upload(5000).await.unwrap();
        assert_eq!(r.status(), 413);
        assert!(problem(r).await["hint"].is_string());
        let r = request_upload(1000).await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert!(v["token"].is_string());
    })
    .await;
}

/// Posts one file through the web UI's upload form; returns the flash
/// message the gateway left for the next page.
async fn web_upload(
    gw: &Gateway,
    cookie: &str,
    folder_hex: &str,
    name: &str,
    len: usize,
) -> String {
    let page = client()
        .get(gw.url(&format!("/ui/folders/{folder_hex}")))
        .header("Cookie", cookie_header(cookie))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field on the folder page")
        .to_owned();
    let mut body = format!(
        "--XQUOTAX\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
         --XQUOTAX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend(std::iter::repeat_n(b'w', len));
    body.extend_from_slice(b"\r\n--XQUOTAX--\r\n");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let r = no_redirects
        .post(gw.url(&format!("/ui/folders/{folder_hex}/upload?path=")))
        .header("Cookie", cookie_header(cookie))
        .header("Origin", format!("http://{}", gw.host()))
        .header("Content-Type", "multipart/form-data; boundary=XQUOTAX")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let flash = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("airlock_flash="))
        .expect("a flash message")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    percent_encoding::percent_decode_str(&flash)
        .decode_utf8_lossy()
        .into_owned()
}

#[tokio::test]
async fn web_upload_is_counted_while_it_streams() {
    within(async {
        let gw = Gateway::start_with(config(Limits {
            upload_bytes: Limit::Max(1000),
            ..Limits::default()
        }))
        .await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let r = create_folder(&gw, &cookie, "web").await;
        assert_eq!(r.status(), 201);
        let hex = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let flash = web_upload(&gw, &cookie, &hex, "big.bin", 3000).await;
        assert!(
            flash.starts_with("error:") && flash.contains("larger than your limit of 1000 bytes"),
            "{flash}"
        );
        let flash = web_upload(&gw, &cookie, &hex, "small.bin", 1000).await;
        assert!(flash.starts_with("ok:"), "{flash}");
        let files = files_on_disk(&gw);
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(
            files[0].0.ends_with("/small.bin") && files[0].1 == 1000,
            "{files:?}"
        );
    })
    .await;
}

/// A fake node whose creates take a while (to widen races); it echoes
/// tunnel bytes.
async fn fake_agent() -> FakeAgent {
    let opts = Options {
        cpu: 64.0,
        create_delay: Duration::from_millis(150),
    };
    FakeAgent::start("fake", AGENT_TOKEN, opts).await
}

async fn create_session(gw: &Gateway, cookie: &str, name: &str) -> reqwest::Response {
    client()
        .post(gw.url("/session"))
        .header("Cookie", cookie_header(cookie))
        .json(&json!({"name": name, "image": "test/image", "enqueueOnly": true}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn parallel_session_creates_make_exactly_the_limit() {
    within(async {
        let gw = Gateway::start_with(config(Limits {
            sessions: Limit::Max(3),
            ..Limits::default()
        }))
        .await;
        let agent = fake_agent().await;
        agent.heartbeat(&gw, Vec::new(), false).await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let creates = (0..10).map(|i| {
            let (gw, cookie) = (&gw, cookie.clone());
            async move { create_session(gw, &cookie, &format!("sess{i}")).await }
        });
        let answers = futures_util::future::join_all(creates).await;
        let mut ids = Vec::new();
        for r in answers {
            match r.status().as_u16() {
                201 => ids.push(r.json::<Value>().await.unwrap()["sessionId"].to_string()),
                429 => assert_quota_problem(&problem(r).await, "3 concurrent sessions"),
                other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
            }
        }
        assert_eq!(ids.len(), 3, "exactly the limit of sessions is created");
        let live: Vec<Value> = gw.get_json("/session", cookie_header(&cookie)).await;
        assert_eq!(live.len(), 3);

        // Terminating one frees its place.
        let name = live[0]["name"].as_str().unwrap().to_owned();
        let r = client()
            .delete(gw.url(&format!("/session/{name}")))
            .header("Cookie", cookie_header(&cookie))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        assert_eq!(create_session(&gw, &cookie, "again").await.status(), 201);
        assert_eq!(create_session(&gw, &cookie, "over").await.status(), 429);
    })
    .await;
}

#[tokio::test]
async fn tunnel_limit_counts_open_tunnels() {
    within(async {
        let gw = Gateway::start_with(config(Limits {
            tunnels: Limit::Max(2),
            ..Limits::default()
        }))
        .await;
        let agent = fake_agent().await;
        agent.heartbeat(&gw, Vec::new(), false).await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let r = create_session(&gw, &cookie, "tunnel").await;
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().await.unwrap()["sessionId"]
            .as_str()
            .unwrap()
            .to_owned();
        agent.heartbeat(&gw, vec![running(&id)], false).await;

        let mut first = open_tunnel(&gw, &cookie, "tunnel").await.unwrap();
        echo(&mut first, "one").await;
        let mut second = open_tunnel(&gw, &cookie, "tunnel").await.unwrap();
        echo(&mut second, "two").await;
        assert_eq!(open_tunnel(&gw, &cookie, "tunnel").await.err(), Some(429));
        // The refusal is an API problem a client can show.
        let r = client()
            .get(gw.url("/stream/session/tunnel/tcpproxy?app=sshd"))
            .header("Cookie", cookie_header(&cookie))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        assert_quota_problem(&problem(r).await, "2 concurrent tunnels");

        // Closing a tunnel frees its place (once the gateway sees it end).
        first.close(None).await.unwrap();
        drop(first);
        let started = Instant::now();
        let mut third = loop {
            match open_tunnel(&gw, &cookie, "tunnel").await {
                Ok(ws) => break ws,
                Err(429) if started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => panic!("tunnel refused with {s} after closing one"),
            }
        };
        echo(&mut third, "three").await;
        echo(&mut second, "still").await;
    })
    .await;
}

/// `GET /admin/tunnels` and `/admin/cluster` list open tunnels with their
/// byte counts while they run (administrators only).
#[tokio::test]
async fn admin_sees_open_tunnels_with_live_byte_counts() {
    within(async {
        let gw = Gateway::start_with(config(Limits::default())).await;
        let agent = fake_agent().await;
        agent.heartbeat(&gw, Vec::new(), false).await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let admin = cookie_header(&login(&gw, &gw.admin.email, &gw.admin.password).await);
        let r = create_session(&gw, &cookie, "counted").await;
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().await.unwrap()["sessionId"]
            .as_str()
            .unwrap()
            .to_owned();
        agent.heartbeat(&gw, vec![running(&id)], false).await;
        let mut ws = open_tunnel(&gw, &cookie, "counted").await.unwrap();
        let text = "x".repeat(5000);
        echo(&mut ws, &text).await;
        echo(&mut ws, "yz").await;
        // The relay counts a chunk just after passing it on: poll briefly.
        let started = Instant::now();
        let t = loop {
            let v: Value = gw.get_json("/admin/tunnels", &admin).await;
            assert_eq!(v["active"], 1, "{v}");
            let t = v["tunnels"][0].clone();
            if t["bytes_up"] == 5002 && t["bytes_down"] == 5002 {
                break t;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "live counts never arrived: {t}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(t["session_name"], "counted");
        assert_eq!(t["session_id"], id);
        assert_eq!(t["user"], gw.user.email);
        assert_eq!(t["client_addr"], "127.0.0.1");
        assert!(t["duration_s"].is_u64() && t["conn"].is_string(), "{t}");
        let cluster: Value = gw.get_json("/admin/cluster", &admin).await;
        assert_eq!(cluster["tunnels"][0]["bytes_up"], 5002, "{cluster}");
        // Users do not see the registry.
        let r = client()
            .get(gw.url("/admin/tunnels"))
            .header("Cookie", cookie_header(&cookie))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        // A closed tunnel leaves the registry.
        ws.close(None).await.unwrap();
        drop(ws);
        let started = Instant::now();
        loop {
            let v: Value = gw.get_json("/admin/tunnels", &admin).await;
            if v["active"] == 0 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

fn http_config(limits: HttpLimits) -> GatewayConfig {
    GatewayConfig {
        http_limits: limits,
        ..GatewayConfig::default()
    }
}

/// Reads until the server closes the connection; returns what came and how
/// long it took. Fails the test past `limit`.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(limit, async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server did not close the connection in time");
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn slow_headers_are_cut_off_by_the_header_timeout() {
    within(async {
        let gw = Gateway::start_with(http_config(HttpLimits {
            header_read_timeout: Duration::from_secs(1),
            ..HttpLimits::default()
        }))
        .await;
        // Half a request head, then nothing (slowloris).
        let mut slow = TcpStream::connect(gw.addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        // A connection that never sends anything.
        let mut idle = TcpStream::connect(gw.addr).await.unwrap();
        let (answer, took) = read_until_closed(&mut slow, Duration::from_secs(10)).await;
        assert!(
            took >= Duration::from_millis(800),
            "closed before the timeout: {took:?}"
        );
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
        let (answer, _) = read_until_closed(&mut idle, Duration::from_secs(10)).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
        // Requests that arrive in time are served.
        let r = client().get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    })
    .await;
}

/// Opens `n` idle connections and waits until the gateway holds them all
/// (a normal request on a later connection proves the earlier ones were
/// accepted first).
async fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(TcpStream::connect(addr).await.unwrap());
    }
    // Give the accept loop a moment to take them in order.
    tokio::time::sleep(Duration::from_millis(300)).await;
    v
}

async fn expect_refused(addr: SocketAddr, what: &str) {
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let (answer, _) = read_until_closed(&mut extra, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(what), "{answer}");
    assert!(answer.contains("\"hint\""), "{answer}");
}

async fn served_again(gw: &Gateway) {
    let started = Instant::now();
    loop {
        match client().get(gw.url("/")).send().await {
            Ok(r) if r.status() == 200 => return,
            _ if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(r) => panic!("still refused: {}", r.status()),
            Err(e) => panic!("still refused: {e}"),
        }
    }
}

#[tokio::test]
async fn connection_cap_refuses_the_extra_connection() {
    within(async {
        let gw = Gateway::start_with(http_config(HttpLimits {
            max_connections: Limit::Max(3),
            max_connections_per_ip: Limit::Unlimited,
            ..HttpLimits::default()
        }))
        .await;
        let mut held = idle_connections(gw.addr, 3).await;
        expect_refused(gw.addr, "too many open connections").await;
        // Closing some makes room again.
        held.truncate(1);
        served_again(&gw).await;
    })
    .await;
}

#[tokio::test]
async fn per_address_cap_refuses_the_extra_connection() {
    within(async {
        let gw = Gateway::start_with(http_config(HttpLimits {
            max_connections: Limit::Unlimited,
            max_connections_per_ip: Limit::Max(2),
            ..HttpLimits::default()
        }))
        .await;
        let mut held = idle_connections(gw.addr, 2).await;
        expect_refused(gw.addr, "from your address (at most 2)").await;
        held.clear();
        served_again(&gw).await;
    })
    .await;
}
