//! Sessions and folders through the gateway's own logic, against fake
//! agents (`fake_agent.rs`): real HTTP servers on 127.0.0.1 that record what
//! the gateway asks of them and report containers in heartbeats as a node
//! would. No Docker: the gateway's half of a session's life runs here in
//! seconds. A node in the gateway's own process (`airlockd up`) is faked
//! through the `LocalAgent` trait.

use std::time::{Duration, Instant};

use airlock_gateway::GatewayConfig;
use airlock_gateway::store::{NewUser, Role};
use airlock_gateway::tunnels::{Attaching, ClientLink, LocalAgent, Opening};
use airlock_proto::agent::TunnelOrigin;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::fake_agent::{FakeAgent, HOST_KEY, Options, running};
use crate::harness::{Gateway, client, cookie_header, echo, login, open_tunnel, within};

const AGENT_TOKEN: &str = "sessions-test-agent-token-0123456789";

/// A gateway, its nodes, and a logged-in user.
struct World {
    gw: Gateway,
    nodes: Vec<FakeAgent>,
    cookie: String,
}

impl World {
    /// A gateway with nodes of these (id, cores), each reported once.
    async fn with_nodes(nodes: &[(&str, f64)]) -> Self {
        let gw = Gateway::start_with(GatewayConfig {
            agent_token: AGENT_TOKEN.to_owned(),
            ..GatewayConfig::default()
        })
        .await;
        let mut started = Vec::new();
        for &(id, cpu) in nodes {
            let opts = Options {
                cpu,
                ..Options::default()
            };
            let node = FakeAgent::start(id, AGENT_TOKEN, opts).await;
            node.heartbeat(&gw, Vec::new(), true).await;
            started.push(node);
        }
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        World {
            gw,
            nodes: started,
            cookie,
        }
    }

    /// One node, `node-a`, with 8 cores.
    async fn new() -> Self {
        Self::with_nodes(&[("node-a", 8.0)]).await
    }

    fn node(&self) -> &FakeAgent {
        &self.nodes[0]
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        call_as(&self.gw, &self.cookie, method, path, body).await
    }

    /// Creates a session without waiting for it (`enqueueOnly`).
    async fn create(&self, body: Value) -> (u16, Value) {
        let mut body = body;
        body["enqueueOnly"] = json!(true);
        self.call(reqwest::Method::POST, "/session", Some(body))
            .await
    }

    /// Creates a session on the first node and has the node report it
    /// running; its id.
    async fn running(&self, body: Value) -> String {
        let (status, v) = self.create(body).await;
        assert_eq!(status, 201, "{v}");
        let id = v["sessionId"].as_str().unwrap().to_owned();
        let node = self.node();
        eventually("the node was asked to create it", async || {
            node.created().iter().any(|c| c.session_id == id)
        })
        .await;
        node.heartbeat(&self.gw, vec![running(&id)], false).await;
        id
    }

    /// `GET /session/{ident}`.
    async fn session(&self, ident: &str) -> Value {
        let (status, v) = self
            .call(reqwest::Method::GET, &format!("/session/{ident}"), None)
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }

    async fn folder(&self, name: &str) {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                "/folders",
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "{v}");
    }
}

async fn call_as(
    gw: &Gateway,
    cookie: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client()
        .request(method, gw.url(path))
        .header("Cookie", cookie_header(cookie));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

async fn eventually<F: AsyncFn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_session_reaches_its_node_with_folders_env_and_resources_and_runs_when_reported() {
    within(async {
        let w = World::new().await;
        for folder in ["data", ".ssh", "other"] {
            w.folder(folder).await;
        }
        let (status, v) = w
            .create(json!({"name": "sess-one", "image": "test/img", "config": {
                "mounts": ["data"], "environ": {"HF_HOME": "/home/work/data/hf"},
                "resources": {"cpu": "2", "mem": "1g"}}}))
            .await;
        assert_eq!(status, 201, "{v}");
        let id = v["sessionId"].as_str().unwrap().to_owned();
        let node = w.node();
        eventually("the node was asked to create it", async || {
            !node.created().is_empty()
        })
        .await;
        let asked = node.created().remove(0);
        assert_eq!(asked.session_id, id);
        assert_eq!(asked.session_name, "sess-one");
        assert_eq!(asked.image, "test/img");
        assert_eq!(asked.cpu, 2.0);
        assert_eq!(asked.mem_bytes, 1 << 30);
        let mut mounted: Vec<&str> = asked
            .mounts
            .iter()
            .filter_map(|m| m.container_path.strip_prefix("/home/work/"))
            .collect();
        mounted.sort_unstable();
        // The folder asked for, and every dot-folder; not the others.
        assert_eq!(mounted, [".ssh", "data"]);
        let hf = ("HF_HOME".to_owned(), "/home/work/data/hf".to_owned());
        assert!(asked.env.contains(&hf), "{:?}", asked.env);

        let s = w.session("sess-one").await;
        assert_ne!(s["status"], "RUNNING", "{s}");
        assert_eq!(s["agent"], "node-a", "{s}");
        node.heartbeat(&w.gw, vec![running(&id)], false).await;
        let s = w.session("sess-one").await;
        assert_eq!(s["status"], "RUNNING", "{s}");
        assert_eq!(s["host_key"], HOST_KEY, "{s}");

        // A second live session of the same name is refused, naming it.
        let (status, v) = w
            .create(json!({"name": "sess-one", "image": "test/img"}))
            .await;
        assert_eq!(status, 409, "{v}");
        let kind = "https://api.backend.ai/probs/session-already-exists";
        assert_eq!(v["type"], kind, "{v}");
    })
    .await;
}

#[tokio::test]
async fn terminating_asks_the_node_and_the_folders_stay() {
    within(async {
        let w = World::new().await;
        w.folder("data").await;
        let id = w
            .running(json!({"name": "sess-two", "image": "i", "config": {"mounts": ["data"]}}))
            .await;
        let (status, v) = w
            .call(reqwest::Method::DELETE, "/session/sess-two", None)
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(w.node().destroyed(), std::slice::from_ref(&id));
        assert_eq!(w.session(&id).await["status"], "TERMINATED");
        let (status, folders) = w.call(reqwest::Method::GET, "/folders", None).await;
        assert_eq!(status, 200);
        assert!(folders.to_string().contains("\"data\""), "{folders}");
        // Gone means gone: a second terminate finds no live session.
        let (status, _) = w
            .call(reqwest::Method::DELETE, "/session/sess-two", None)
            .await;
        assert_eq!(status, 404);
    })
    .await;
}

#[tokio::test]
async fn a_mounted_folder_is_neither_renamed_nor_deleted_and_keeps_its_files_after_the_session() {
    within(async {
        let w = World::new().await;
        w.folder("keep").await;
        // A file put through the API, then the folder mounted in a session.
        let put = client()
            .put(w.gw.url("/folders/keep/file?path=notes.txt"))
            .header("Cookie", cookie_header(&w.cookie))
            .body("kept through the session\n")
            .send()
            .await
            .unwrap();
        assert_eq!(put.status().as_u16(), 201, "{}", put.text().await.unwrap());
        let id = w
            .running(json!({"name": "sess-f", "image": "i", "config": {"mounts": ["keep"]}}))
            .await;
        let asked = w.node().created();
        let mount = asked.iter().find(|c| c.session_id == id).and_then(|c| {
            c.mounts
                .iter()
                .find(|m| m.container_path == "/home/work/keep")
        });
        assert!(mount.is_some(), "{asked:?}");
        let (status, v) = w.call(reqwest::Method::GET, "/folders/keep", None).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["mounted_in"], json!(["sess-f"]), "{v}");

        // While the session lives: no rename, no delete, each saying why.
        let rename = json!({"new_name": "moved"});
        let (status, v) = w
            .call(
                reqwest::Method::POST,
                "/folders/keep/rename",
                Some(rename.clone()),
            )
            .await;
        assert_eq!(status, 409, "{v}");
        assert!(v.to_string().contains("mounted in session"), "{v}");
        let (status, v) = w.call(reqwest::Method::DELETE, "/folders/keep", None).await;
        assert_eq!(status, 409, "{v}");
        assert!(v.to_string().contains("terminate the sessions"), "{v}");

        // Another user sees neither the folder nor its file.
        let other = NewUser {
            email: "eve@test.local",
            password: "pw-eve",
            role: Role::User,
        };
        w.gw.store.create_user(other).await.unwrap();
        let eve = login(&w.gw, "eve@test.local", "pw-eve").await;
        for path in ["/folders/keep", "/folders/keep/file?path=notes.txt"] {
            let (status, _) = call_as(&w.gw, &eve, reqwest::Method::GET, path, None).await;
            assert_eq!(status, 404, "{path}");
        }

        // The session ends; the folder, its file and its name stay ours to change.
        let (status, v) = w
            .call(reqwest::Method::DELETE, "/session/sess-f", None)
            .await;
        assert_eq!(status, 200, "{v}");
        let (status, v) = w
            .call(reqwest::Method::POST, "/folders/keep/rename", Some(rename))
            .await;
        assert_eq!(status, 200, "{v}");
        let got = client()
            .get(w.gw.url("/folders/moved/file?path=notes.txt"))
            .header("Cookie", cookie_header(&w.cookie))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status().as_u16(), 200);
        assert_eq!(got.text().await.unwrap(), "kept through the session\n");
        let (status, v) = w
            .call(reqwest::Method::DELETE, "/folders/moved", None)
            .await;
        assert!(status < 300, "{status} {v}");
    })
    .await;
}

#[tokio::test]
async fn a_node_that_cannot_be_reached_leaves_the_session_terminating_until_forced() {
    within(async {
        let w = World::new().await;
        let id = w.running(json!({"name": "sess-three", "image": "i"})).await;
        // The node now reports from an address where nothing answers (port
        // 1 on loopback: connections are refused).
        let gone = FakeAgent {
            url: "http://127.0.0.1:1".to_owned(),
            ..w.node().clone()
        };
        gone.heartbeat(&w.gw, vec![running(&id)], false).await;
        let (status, v) = w
            .call(reqwest::Method::DELETE, "/session/sess-three", None)
            .await;
        assert!(status < 500, "{status} {v}");
        assert_eq!(w.session(&id).await["status"], "TERMINATING");
        let forced = "/session/sess-three?forced=true";
        let (status, v) = w.call(reqwest::Method::DELETE, forced, None).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(w.session(&id).await["status"], "TERMINATED");
    })
    .await;
}

#[tokio::test]
async fn a_container_missing_from_a_complete_report_makes_the_session_an_error() {
    within(async {
        let w = World::new().await;
        let id = w.running(json!({"name": "sess-four", "image": "i"})).await;
        assert_eq!(w.session("sess-four").await["status"], "RUNNING");
        // The node's full list no longer has it (killed outside airlock).
        w.node().heartbeat(&w.gw, Vec::new(), true).await;
        let s = w.session(&id).await;
        assert_eq!(s["status"], "ERROR", "{s}");
        assert!(!s["status_info"].as_str().unwrap_or("").is_empty(), "{s}");
    })
    .await;
}

#[tokio::test]
async fn another_user_can_neither_see_nor_end_a_session() {
    within(async {
        let w = World::new().await;
        let mallory = NewUser {
            email: "mallory@test.local",
            password: "pw-mallory",
            role: Role::User,
        };
        w.gw.store.create_user(mallory).await.unwrap();
        let theirs = login(&w.gw, "mallory@test.local", "pw-mallory").await;
        let id = w.running(json!({"name": "mine", "image": "i"})).await;
        for path in ["/session/mine".to_owned(), format!("/session/{id}")] {
            let (status, _) = call_as(&w.gw, &theirs, reqwest::Method::GET, &path, None).await;
            assert_eq!(status, 404, "{path}");
            let (status, _) = call_as(&w.gw, &theirs, reqwest::Method::DELETE, &path, None).await;
            assert_eq!(status, 404, "{path}");
        }
        assert!(w.node().destroyed().is_empty());
        let (_, list) = call_as(&w.gw, &theirs, reqwest::Method::GET, "/session", None).await;
        assert!(!list.to_string().contains(&id), "{list}");
        // The administrator sees it.
        let admin = login(&w.gw, &w.gw.admin.email, &w.gw.admin.password).await;
        let path = format!("/session/{id}");
        let (status, _) = call_as(&w.gw, &admin, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200);
    })
    .await;
}

#[tokio::test]
async fn sessions_go_where_they_fit_and_a_request_no_node_meets_names_the_largest_slot() {
    within(async {
        let w = World::with_nodes(&[("small", 2.0), ("big", 16.0)]).await;
        let (small, big) = (&w.nodes[0], &w.nodes[1]);
        let wide = json!({"name": "wide", "image": "i",
            "config": {"resources": {"cpu": "8", "mem": "1g"}}});
        let (status, v) = w.create(wide).await;
        assert_eq!(status, 201, "{v}");
        eventually("created on the big node", async || {
            !big.created().is_empty()
        })
        .await;
        assert!(small.created().is_empty());
        assert_eq!(w.session("wide").await["agent"], "big");

        let huge = json!({"name": "huge", "image": "i",
            "config": {"resources": {"cpu": "64", "mem": "1g"}}});
        let (status, v) = w.create(huge).await;
        assert_eq!(status, 503, "{v}");
        let kind = "https://api.backend.ai/probs/no-available-resource";
        assert_eq!(v["type"], kind, "{v}");
        let msg = v["msg"].as_str().unwrap_or_default();
        // 16 cores on the big node, 8 of them taken: 8 free is the largest.
        assert!(
            msg.contains("largest free slot is 8.0 CPU") && msg.contains("node big"),
            "{v}"
        );
        assert!(!v["hint"].as_str().unwrap_or_default().is_empty(), "{v}");
    })
    .await;
}

/// An in-process agent (what `airlockd up` registers): records the tunnels
/// it is asked for and serves them from a local echo server, or refuses
/// sessions it does not hold with a reason.
#[derive(Debug, Default)]
struct InProcessAgent {
    asked: std::sync::Mutex<Vec<(String, Option<TunnelOrigin>)>>,
    holds: std::sync::Mutex<Option<String>>,
}

impl LocalAgent for InProcessAgent {
    fn connect<'a>(
        &'a self,
        session_id: &'a str,
        origin: Option<&'a TunnelOrigin>,
    ) -> Opening<'a, tokio::net::TcpStream> {
        Box::pin(async move {
            self.asked
                .lock()
                .unwrap()
                .push((session_id.to_owned(), origin.cloned()));
            if self.holds.lock().unwrap().as_deref() != Some(session_id) {
                return Err("the container is gone".to_owned());
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
            Ok(tokio::net::TcpStream::connect(addr).await.unwrap())
        })
    }

    fn holds(&self, _session_id: &str) -> Result<(), String> {
        Err("not in this test".to_owned())
    }

    fn attach<'a>(
        &'a self,
        _session_id: &'a str,
        _origin: Option<&'a TunnelOrigin>,
        _link: &'a mut ClientLink,
    ) -> Attaching<'a> {
        Box::pin(async {})
    }
}

#[tokio::test]
async fn a_tunnel_to_a_node_in_this_process_goes_through_its_local_agent_with_the_origin() {
    within(async {
        let w = World::new().await;
        let id = w.running(json!({"name": "near", "image": "base"})).await;
        let local = std::sync::Arc::new(InProcessAgent::default());
        *local.holds.lock().unwrap() = Some(id.clone());
        w.gw.state.register_local_agent("node-a", local.clone());

        let mut ws = open_tunnel(&w.gw, &w.cookie, "near").await.unwrap();
        echo(&mut ws, "hello through the local agent").await;
        let asked = local.asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert_eq!(asked[0].0, id);
        let origin = asked[0].1.as_ref().expect("the client connection is named");
        assert_eq!(origin.client, "127.0.0.1", "the client's address");
        assert!(!origin.conn.is_empty(), "{origin:?}");
        drop(ws);

        // The agent no longer holds it: the client is told why and to
        // try again later.
        *local.holds.lock().unwrap() = None;
        let mut ws = open_tunnel(&w.gw, &w.cookie, "near").await.unwrap();
        let close = loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => break frame,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(u16::from(close.code), 1013);
        assert_eq!(close.reason.as_str(), "the container is gone");
    })
    .await;
}

#[tokio::test]
async fn tunnels_open_at_shutdown_record_their_end_before_the_gateway_returns() {
    within(async {
        let mut w = World::new().await;
        let id = w.running(json!({"name": "near", "image": "base"})).await;
        let local = std::sync::Arc::new(InProcessAgent::default());
        *local.holds.lock().unwrap() = Some(id.clone());
        w.gw.state.register_local_agent("node-a", local.clone());
        let mut open = Vec::new();
        for i in 0..8 {
            let mut ws = open_tunnel(&w.gw, &w.cookie, "near").await.unwrap();
            echo(&mut ws, &format!("tunnel {i}, open at shutdown")).await;
            open.push(ws);
        }
        assert_eq!(w.gw.state.tunnels().count(), 8);

        w.gw.stop().await;
        // Every tunnel task has ended and recorded how: nothing is left for
        // a store that closes next (`airlockd up` closes it right after).
        assert_eq!(w.gw.state.tunnels().count(), 0);
        let events =
            w.gw.store
                .events(&airlock_gateway::store::EventFilter::default())
                .await
                .unwrap();
        let ends: Vec<_> = events
            .iter()
            .filter(|e| e.what.kind == "tunnel.closed")
            .map(|e| e.what.detail["reason"].clone())
            .collect();
        assert_eq!(ends.len(), 8, "{ends:?}");
        assert!(ends.iter().all(|r| r == "gateway shutdown"), "{ends:?}");
        drop(open);
    })
    .await;
}

#[tokio::test]
async fn a_file_name_that_is_not_utf8_is_listed_fetched_and_deleted_by_its_listed_name() {
    use std::os::unix::ffi::OsStrExt;
    within(async {
        let w = World::new().await;
        w.folder("bytes").await;
        // A session wrote a name in Latin-1 into the folder.
        let root = w.gw.data_dir().join("vfolders");
        let dirs: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
        assert_eq!(dirs.len(), 1, "one folder on disk");
        let dir = dirs.into_iter().next().unwrap().unwrap().path();
        let raw = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        std::fs::write(dir.join(raw), "latin-1 name").unwrap();

        let (status, v) = w
            .call(reqwest::Method::GET, "/folders/bytes/files", None)
            .await;
        assert_eq!(status, 200, "{v}");
        let name = v[0]["name"].as_str().unwrap().to_owned();
        assert!(!name.contains('\u{FFFD}'), "listed without loss: {name:?}");
        assert_eq!(airlock_beneath::names::unescape(&name), raw.as_bytes());
        let got = client()
            .get(w.gw.url("/folders/bytes/file"))
            .query(&[("path", &name)])
            .header("Cookie", cookie_header(&w.cookie))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status().as_u16(), 200);
        assert_eq!(got.text().await.unwrap(), "latin-1 name");
        let gone = client()
            .delete(w.gw.url("/folders/bytes/file"))
            .query(&[("path", &name)])
            .header("Cookie", cookie_header(&w.cookie))
            .send()
            .await
            .unwrap();
        assert!(gone.status().is_success(), "{}", gone.status());
        assert!(!dir.join(raw).exists());
    })
    .await;
}
