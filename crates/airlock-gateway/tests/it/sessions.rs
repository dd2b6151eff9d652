//! Sessions and folders through the gateway's own logic, against fake
//! agents: real HTTP servers on 127.0.0.1 that record what the gateway asks
//! of them (create with which mounts, environment and resources; destroy)
//! and report containers in heartbeats as a node would. No Docker: the
//! gateway's half of a session's life runs here in seconds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_gateway::GatewayConfig;
use airlock_gateway::store::{NewUser, Role};
use airlock_proto::agent::{ContainerPhase, ContainerReport, CreateContainer, Heartbeat};
use serde_json::{Value, json};

use crate::harness::{Gateway, client, cookie_header, login, within};

const AGENT_TOKEN: &str = "sessions-test-agent-token-0123456789";
const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN9PsX/zmh4cZgQXQjwHFIEDmEjWwlU7uubLkarg9Tua";

fn config() -> GatewayConfig {
    GatewayConfig {
        agent_token: AGENT_TOKEN.to_owned(),
        ..GatewayConfig::default()
    }
}

/// What a fake agent was asked, and how it answers.
#[derive(Default)]
struct Seen {
    created: Vec<CreateContainer>,
    destroyed: Vec<String>,
}

/// A fake node: its id, URL and what it saw.
struct FakeAgent {
    id: String,
    url: String,
    seen: Arc<Mutex<Seen>>,
    cpu: f64,
}

impl FakeAgent {
    async fn start(id: &str, cpu: f64) -> Self {
        use axum::extract::{Path, State};
        use axum::routing::{delete, post};
        type Shared = Arc<Mutex<Seen>>;
        async fn create(
            State(seen): State<Shared>,
            axum::Json(req): axum::Json<CreateContainer>,
        ) -> http::StatusCode {
            seen.lock().unwrap().created.push(req);
            http::StatusCode::CREATED
        }
        async fn destroy(State(seen): State<Shared>, Path(id): Path<String>) -> http::StatusCode {
            seen.lock().unwrap().destroyed.push(id);
            http::StatusCode::NO_CONTENT
        }
        let seen: Shared = Arc::default();
        let app = axum::Router::new()
            .route("/v1/sessions", post(create))
            .route("/v1/sessions/{id}", delete(destroy))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeAgent {
            id: id.to_owned(),
            url,
            seen,
            cpu,
        }
    }

    /// Reports `containers` (all of this node's when `complete`).
    async fn heartbeat(&self, gw: &Gateway, containers: Vec<ContainerReport>, complete: bool) {
        let hb = Heartbeat {
            agent_id: self.id.clone(),
            url: self.url.clone(),
            version: "test".into(),
            cpu: self.cpu,
            mem_bytes: 64 << 30,
            gpus: Vec::new(),
            load: Default::default(),
            containers,
            partial: !complete,
        };
        let r = client()
            .post(gw.url("/agent/v1/heartbeat"))
            .bearer_auth(AGENT_TOKEN)
            .json(&hb)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    fn created(&self) -> Vec<CreateContainer> {
        self.seen.lock().unwrap().created.clone()
    }

    fn destroyed(&self) -> Vec<String> {
        self.seen.lock().unwrap().destroyed.clone()
    }
}

fn report(session_id: &str, phase: ContainerPhase) -> ContainerReport {
    ContainerReport {
        session_id: session_id.to_owned(),
        phase,
        reason: None,
        host_key: (phase == ContainerPhase::Running).then(|| HOST_KEY.to_owned()),
        container_id: Some(format!("c-{session_id}")),
    }
}

async fn call(
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
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn session(gw: &Gateway, cookie: &str, name: &str) -> Value {
    let (status, v) = call(
        gw,
        cookie,
        reqwest::Method::GET,
        &format!("/session/{name}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Creates a session without waiting for it (`enqueueOnly`).
async fn create(gw: &Gateway, cookie: &str, body: Value) -> (u16, Value) {
    let mut body = body;
    body["enqueueOnly"] = json!(true);
    call(gw, cookie, reqwest::Method::POST, "/session", Some(body)).await
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
        let gw = Gateway::start_with(config()).await;
        let node = FakeAgent::start("node-a", 8.0).await;
        node.heartbeat(&gw, Vec::new(), true).await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        for folder in ["data", ".ssh", "other"] {
            let (status, v) = call(
                &gw,
                &cookie,
                reqwest::Method::POST,
                "/folders",
                Some(json!({"name": folder})),
            )
            .await;
            assert_eq!(status, 201, "{v}");
        }
        let (status, v) = create(
            &gw,
            &cookie,
            json!({"name": "sess-one", "image": "test/img", "config": {
                "mounts": ["data"], "environ": {"HF_HOME": "/home/work/data/hf"},
                "resources": {"cpu": "2", "mem": "1g"}}}),
        )
        .await;
        assert_eq!(status, 201, "{v}");
        let id = v["sessionId"].as_str().unwrap().to_owned();

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
        assert!(
            asked
                .env
                .contains(&("HF_HOME".to_owned(), "/home/work/data/hf".to_owned())),
            "{:?}",
            asked.env
        );

        let s = session(&gw, &cookie, "sess-one").await;
        assert_ne!(s["status"], "RUNNING", "{s}");
        assert_eq!(s["agent"], "node-a", "{s}");
        node.heartbeat(&gw, vec![report(&id, ContainerPhase::Running)], false)
            .await;
        let s = session(&gw, &cookie, "sess-one").await;
        assert_eq!(s["status"], "RUNNING", "{s}");
        assert_eq!(s["host_key"], HOST_KEY, "{s}");

        // A second live session of the same name is refused, naming it.
        let (status, v) = create(
            &gw,
            &cookie,
            json!({"name": "sess-one", "image": "test/img"}),
        )
        .await;
        assert_eq!(status, 409, "{v}");
        assert_eq!(
            v["type"], "https://api.backend.ai/probs/session-already-exists",
            "{v}"
        );
    })
    .await;
}

#[tokio::test]
async fn terminating_asks_the_node_and_the_folders_stay() {
    within(async {
        let gw = Gateway::start_with(config()).await;
        let node = FakeAgent::start("node-a", 8.0).await;
        node.heartbeat(&gw, Vec::new(), true).await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        call(
            &gw,
            &cookie,
            reqwest::Method::POST,
            "/folders",
            Some(json!({"name": "data"})),
        )
        .await;
        let (_, v) = create(
            &gw,
            &cookie,
            json!({"name": "sess-two", "image": "i", "config": {"mounts": ["data"]}}),
        )
        .await;
        let id = v["sessionId"].as_str().unwrap().to_owned();
        eventually("created", async || !node.created().is_empty()).await;
        node.heartbeat(&gw, vec![report(&id, ContainerPhase::Running)], false)
            .await;

        let (status, v) = call(
            &gw,
            &cookie,
            reqwest::Method::DELETE,
            "/session/sess-two",
            None,
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(node.destroyed(), std::slice::from_ref(&id));
        assert_eq!(session(&gw, &cookie, &id).await["status"], "TERMINATED");
        let (status, folders) = call(&gw, &cookie, reqwest::Method::GET, "/folders", None).await;
        assert_eq!(status, 200);
        assert!(folders.to_string().contains("\"data\""), "{folders}");
        // Gone means gone: a second terminate finds no live session.
        let (status, _) = call(
            &gw,
            &cookie,
            reqwest::Method::DELETE,
            "/session/sess-two",
            None,
        )
        .await;
        assert_eq!(status, 404);
    })
    .await;
}

#[tokio::test]
async fn a_node_that_cannot_remove_leaves_the_session_terminating_until_forced() {
    within(async {
        let gw = Gateway::start_with(config()).await;
        let node = FakeAgent::start("node-a", 8.0).await;
        node.heartbeat(&gw, Vec::new(), true).await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let (_, v) = create(&gw, &cookie, json!({"name": "sess-three", "image": "i"})).await;
        let id = v["sessionId"].as_str().unwrap().to_owned();
        eventually("created", async || !node.created().is_empty()).await;
        node.heartbeat(&gw, vec![report(&id, ContainerPhase::Running)], false)
            .await;

        // The node now reports from an address where nothing answers
        // (port 1 on loopback: connections are refused).
        let gone = FakeAgent {
            url: "http://127.0.0.1:1".to_owned(),
            ..node
        };
        gone.heartbeat(&gw, vec![report(&id, ContainerPhase::Running)], false)
            .await;
        let (status, v) = call(
            &gw,
            &cookie,
            reqwest::Method::DELETE,
            "/session/sess-three",
            None,
        )
        .await;
        assert!(status < 500, "{status} {v}");
        assert_eq!(session(&gw, &cookie, &id).await["status"], "TERMINATING");
        let (status, v) = call(
            &gw,
            &cookie,
            reqwest::Method::DELETE,
            "/session/sess-three?forced=true",
            None,
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(session(&gw, &cookie, &id).await["status"], "TERMINATED");
    })
    .await;
}

#[tokio::test]
async fn a_container_missing_from_a_complete_report_makes_the_session_an_error() {
    within(async {
        let gw = Gateway::start_with(config()).await;
        let node = FakeAgent::start("node-a", 8.0).await;
        node.heartbeat(&gw, Vec::new(), true).await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let (_, v) = create(&gw, &cookie, json!({"name": "sess-four", "image": "i"})).await;
        let id = v["sessionId"].as_str().unwrap().to_owned();
        eventually("created", async || !node.created().is_empty()).await;
        node.heartbeat(&gw, vec![report(&id, ContainerPhase::Running)], false)
            .await;
        assert_eq!(
            session(&gw, &cookie, "sess-four").await["status"],
            "RUNNING"
        );
        // The node's full list no longer has it (killed outside airlock).
        node.heartbeat(&gw, Vec::new(), true).await;
        let s = session(&gw, &cookie, &id).await;
        assert_eq!(s["status"], "ERROR", "{s}");
        assert!(!s["status_info"].as_str().unwrap_or("").is_empty(), "{s}");
    })
    .await;
}

#[tokio::test]
async fn another_user_can_neither_see_nor_end_a_session() {
    within(async {
        let gw = Gateway::start_with(config()).await;
        let node = FakeAgent::start("node-a", 8.0).await;
        node.heartbeat(&gw, Vec::new(), true).await;
        gw.store
            .create_user(NewUser {
                email: "mallory@test.local",
                password: "pw-mallory",
                role: Role::User,
            })
            .await
            .unwrap();
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let mallory = login(&gw, "mallory@test.local", "pw-mallory").await;
        let (_, v) = create(&gw, &cookie, json!({"name": "mine", "image": "i"})).await;
        let id = v["sessionId"].as_str().unwrap().to_owned();
        for path in ["/session/mine".to_owned(), format!("/session/{id}")] {
            let (status, _) = call(&gw, &mallory, reqwest::Method::GET, &path, None).await;
            assert_eq!(status, 404, "{path}");
            let (status, _) = call(&gw, &mallory, reqwest::Method::DELETE, &path, None).await;
            assert_eq!(status, 404, "{path}");
        }
        assert!(node.destroyed().is_empty());
        let (_, list) = call(&gw, &mallory, reqwest::Method::GET, "/session", None).await;
        assert!(!list.to_string().contains(&id), "{list}");
        // The administrator sees it.
        let admin = login(&gw, &gw.admin.email, &gw.admin.password).await;
        let (status, _) = call(
            &gw,
            &admin,
            reqwest::Method::GET,
            &format!("/session/{id}"),
            None,
        )
        .await;
        assert_eq!(status, 200);
    })
    .await;
}

#[tokio::test]
async fn sessions_go_where_they_fit_and_a_request_no_node_meets_names_the_largest_slot() {
    within(async {
        let gw = Gateway::start_with(config()).await;
        let small = FakeAgent::start("small", 2.0).await;
        let big = FakeAgent::start("big", 16.0).await;
        small.heartbeat(&gw, Vec::new(), true).await;
        big.heartbeat(&gw, Vec::new(), true).await;
        let cookie = login(&gw, &gw.user.email, &gw.user.password).await;
        let (status, v) = create(
            &gw,
            &cookie,
            json!({"name": "wide", "image": "i",
            "config": {"resources": {"cpu": "8", "mem": "1g"}}}),
        )
        .await;
        assert_eq!(status, 201, "{v}");
        eventually("created on the big node", async || {
            !big.created().is_empty()
        })
        .await;
        assert!(small.created().is_empty());
        assert_eq!(session(&gw, &cookie, "wide").await["agent"], "big");

        let (status, v) = create(
            &gw,
            &cookie,
            json!({"name": "huge", "image": "i",
            "config": {"resources": {"cpu": "64", "mem": "1g"}}}),
        )
        .await;
        assert_eq!(status, 503, "{v}");
        assert_eq!(
            v["type"], "https://api.backend.ai/probs/no-available-resource",
            "{v}"
        );
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
