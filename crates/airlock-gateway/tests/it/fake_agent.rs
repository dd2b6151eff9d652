//! A fake node for in-process tests: a real HTTP server on 127.0.0.1 that
//! records what the gateway asks of it (create with which mounts,
//! environment and resources; destroy), echoes tunnel bytes, and reports
//! containers in heartbeats as a node would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_proto::agent::{ContainerPhase, ContainerReport, CreateContainer, Heartbeat};

use crate::harness::{Gateway, client};

/// What a fake agent was asked.
#[derive(Default)]
pub struct Seen {
    pub created: Vec<CreateContainer>,
    pub destroyed: Vec<String>,
}

/// A fake node: its id, URL, token and what it saw (clones share it).
#[derive(Clone)]
pub struct FakeAgent {
    pub id: String,
    pub url: String,
    pub token: String,
    pub seen: Arc<Mutex<Seen>>,
    pub cpu: f64,
}

/// How a fake node behaves.
pub struct Options {
    /// Cores it reports.
    pub cpu: f64,
    /// How long a create takes (to widen races).
    pub create_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cpu: 8.0,
            create_delay: Duration::ZERO,
        }
    }
}

impl FakeAgent {
    pub async fn start(id: &str, token: &str, opts: Options) -> Self {
        use axum::extract::{Path, Request, State};
        use axum::response::Response;
        use axum::routing::{delete, get, post};
        #[derive(Clone)]
        struct Shared {
            seen: Arc<Mutex<Seen>>,
            delay: Duration,
        }
        async fn create(
            State(s): State<Shared>,
            axum::Json(req): axum::Json<CreateContainer>,
        ) -> http::StatusCode {
            tokio::time::sleep(s.delay).await;
            s.seen.lock().unwrap().created.push(req);
            http::StatusCode::CREATED
        }
        async fn destroy(State(s): State<Shared>, Path(id): Path<String>) -> http::StatusCode {
            s.seen.lock().unwrap().destroyed.push(id);
            http::StatusCode::NO_CONTENT
        }
        // A tunnel: the raw stream echoes what it gets.
        async fn connect(mut req: Request) -> Response {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on_upgrade.await {
                    let io = hyper_util::rt::TokioIo::new(up);
                    let (mut r, mut w) = tokio::io::split(io);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            Response::builder()
                .status(http::StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", airlock_proto::agent::TCP_UPGRADE)
                .body(axum::body::Body::empty())
                .unwrap()
        }
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let app = axum::Router::new()
            .route("/v1/sessions", post(create))
            .route("/v1/sessions/{id}", delete(destroy))
            .route("/v1/sessions/{id}/connect", get(connect))
            .with_state(Shared {
                seen: seen.clone(),
                delay: opts.create_delay,
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeAgent {
            id: id.to_owned(),
            url,
            token: token.to_owned(),
            seen,
            cpu: opts.cpu,
        }
    }

    /// Reports `containers` (all of this node's when `complete`).
    pub async fn heartbeat(&self, gw: &Gateway, containers: Vec<ContainerReport>, complete: bool) {
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
            .bearer_auth(&self.token)
            .json(&hb)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    pub fn created(&self) -> Vec<CreateContainer> {
        self.seen.lock().unwrap().created.clone()
    }

    pub fn destroyed(&self) -> Vec<String> {
        self.seen.lock().unwrap().destroyed.clone()
    }
}

/// A host key a fake node reports for its running sessions.
pub const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN9PsX/zmh4cZgQXQjwHFIEDmEjWwlU7uubLkarg9Tua";

/// A report of a session's container in `phase`.
pub fn report(session_id: &str, phase: ContainerPhase) -> ContainerReport {
    ContainerReport {
        session_id: session_id.to_owned(),
        phase,
        reason: None,
        host_key: (phase == ContainerPhase::Running).then(|| HOST_KEY.to_owned()),
        container_id: Some(format!("c-{session_id}")),
    }
}

/// A report of a running session.
pub fn running(session_id: &str) -> ContainerReport {
    report(session_id, ContainerPhase::Running)
}
