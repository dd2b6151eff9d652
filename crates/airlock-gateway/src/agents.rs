//! Talking to agents: the HTTP client for their API, scheduling, and the
//! heartbeat reconciliation that keeps session states true.

use std::time::Duration;

use airlock_proto::agent::{
    ContainerPhase, CreateContainer, DownloadRequest, Heartbeat, HeartbeatReply, ImageInfo,
};
use airlock_proto::problem::Problem;
use http::StatusCode;

use crate::AppState;
use crate::error::ApiError;
use crate::store::{AgentRow, Status};

/// A failed call to an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentCallError {
    /// The agent could not be reached.
    #[error("the node is unreachable: {0}")]
    Unreachable(String),
    /// The agent answered with an error.
    #[error("{}", .problem.message())]
    Rejected {
        /// HTTP status.
        status: StatusCode,
        /// Its problem body.
        problem: Box<Problem>,
    },
}

impl From<AgentCallError> for ApiError {
    fn from(e: AgentCallError) -> Self {
        match e {
            AgentCallError::Unreachable(detail) => {
                tracing::warn!(%detail, "agent unreachable");
                ApiError::unavailable("the node running this session is unreachable right now")
                    .hint("try again in a minute; if it persists, ask an administrator to check the agent")
            }
            AgentCallError::Rejected { status, problem } => {
                let mut e = ApiError::new(status, problem.slug(), &problem.title);
                if let Some(m) = problem.msg {
                    e = e.msg(m);
                }
                if let Some(h) = problem.hint {
                    e = e.hint(h);
                }
                e
            }
        }
    }
}

/// HTTP client for agent APIs.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    token: String,
}

impl AgentClient {
    /// A client presenting `token`.
    pub fn new(token: String) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self { http, token }
    }

    /// The token agents must present to us.
    pub fn token(&self) -> &str {
        &self.token
    }

    fn url(base: &str, path: &str) -> String {
        format!("{}{path}", base.trim_end_matches('/'))
    }

    /// Sends a request; non-2xx answers become [`AgentCallError::Rejected`].
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, AgentCallError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| AgentCallError::Unreachable(e.to_string()))?;
        if resp.status().is_success() || resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(resp);
        }
        let status = resp.status();
        let problem = resp.json::<Problem>().await.unwrap_or_else(|_| {
            Problem::new("agent-error", "Agent error").msg(format!("the node answered {status}"))
        });
        Err(AgentCallError::Rejected {
            status,
            problem: Box::new(problem),
        })
    }

    /// Starts a session container.
    pub async fn create(&self, base: &str, spec: &CreateContainer) -> Result<(), AgentCallError> {
        self.send(
            self.http
                .post(Self::url(base, "/v1/sessions"))
                .timeout(Duration::from_secs(30))
                .json(spec),
        )
        .await
        .map(drop)
    }

    /// Removes a session container.
    pub async fn destroy(&self, base: &str, id: &str) -> Result<(), AgentCallError> {
        self.send(
            self.http
                .delete(Self::url(base, &format!("/v1/sessions/{id}")))
                .timeout(Duration::from_secs(60)),
        )
        .await
        .map(drop)
    }

    /// Streams files out of a session (multipart/mixed of tar archives).
    pub async fn download(
        &self,
        base: &str,
        id: &str,
        paths: Vec<String>,
    ) -> Result<reqwest::Response, AgentCallError> {
        self.send(
            self.http
                .post(Self::url(base, &format!("/v1/sessions/{id}/download")))
                .json(&DownloadRequest { paths }),
        )
        .await
    }

    /// Streams a framed upload into a session.
    pub async fn upload(
        &self,
        base: &str,
        id: &str,
        body: reqwest::Body,
    ) -> Result<serde_json::Value, AgentCallError> {
        let resp = self
            .send(
                self.http
                    .post(Self::url(base, &format!("/v1/sessions/{id}/upload")))
                    .body(body),
            )
            .await?;
        resp.json()
            .await
            .map_err(|e| AgentCallError::Unreachable(e.to_string()))
    }

    /// Lists a directory in a session.
    pub async fn files(
        &self,
        base: &str,
        id: &str,
        path: &str,
    ) -> Result<serde_json::Value, AgentCallError> {
        let resp = self
            .send(
                self.http
                    .get(Self::url(base, &format!("/v1/sessions/{id}/files")))
                    .query(&[("path", path)])
                    .timeout(Duration::from_secs(60)),
            )
            .await?;
        resp.json()
            .await
            .map_err(|e| AgentCallError::Unreachable(e.to_string()))
    }

    /// The container log.
    pub async fn logs(&self, base: &str, id: &str, tail: usize) -> Result<String, AgentCallError> {
        let resp = self
            .send(
                self.http
                    .get(Self::url(base, &format!("/v1/sessions/{id}/logs")))
                    .query(&[("tail", tail)])
                    .timeout(Duration::from_secs(60)),
            )
            .await?;
        resp.text()
            .await
            .map_err(|e| AgentCallError::Unreachable(e.to_string()))
    }

    /// A session's container log as it grows (`docker logs -f`), starting
    /// with its last `tail` lines; ends when the container stops.
    pub async fn follow_logs(
        &self,
        base: &str,
        id: &str,
        tail: usize,
    ) -> Result<reqwest::Response, AgentCallError> {
        self.send(
            self.http
                .get(Self::url(base, &format!("/v1/sessions/{id}/logs")))
                .query(&[("tail", tail.to_string()), ("follow", "true".to_owned())]),
        )
        .await
    }

    /// Images on a node.
    pub async fn images(&self, base: &str) -> Result<Vec<ImageInfo>, AgentCallError> {
        let resp = self
            .send(
                self.http
                    .get(Self::url(base, "/v1/images"))
                    .timeout(Duration::from_secs(30)),
            )
            .await?;
        resp.json()
            .await
            .map_err(|e| AgentCallError::Unreachable(e.to_string()))
    }

    /// Times a session's runner from its node (`airlock ping`).
    pub async fn ping(
        &self,
        base: &str,
        id: &str,
    ) -> Result<airlock_proto::agent::RunnerPing, AgentCallError> {
        let resp = self
            .send(
                self.http
                    .get(Self::url(base, &format!("/v1/sessions/{id}/ping")))
                    .timeout(Duration::from_secs(30)),
            )
            .await?;
        resp.json()
            .await
            .map_err(|e| AgentCallError::Unreachable(e.to_string()))
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// Agents heard from recently enough to schedule on.
pub async fn online(state: &AppState) -> Result<Vec<AgentRow>, ApiError> {
    let max_age = i64::try_from(state.config().agent_offline_after.as_millis()).unwrap_or(i64::MAX);
    Ok(state.store().online_agents(max_age).await?)
}

/// Picks the online agent with the most free CPU that fits the request.
pub async fn schedule(
    state: &AppState,
    cpu_milli: i64,
    mem_bytes: i64,
) -> Result<AgentRow, ApiError> {
    let agents = online(state).await?;
    if agents.is_empty() {
        return Err(
            ApiError::unavailable("no node is online to run sessions").hint(
                "start an agent (`airlockd agent`), or check that `airlockd up` can reach Docker",
            ),
        );
    }
    let mut best: Option<(i64, AgentRow)> = None;
    for a in agents {
        let (cpu, mem) = state.store().agent_usage(&a.id).await?;
        let free_cpu = a.cpu_milli - cpu;
        let free_mem = a.mem_bytes - mem;
        if free_cpu >= cpu_milli
            && free_mem >= mem_bytes
            && best.as_ref().is_none_or(|(f, _)| free_cpu > *f)
        {
            best = Some((free_cpu, a));
        }
    }
    best.map(|(_, a)| a).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-available-resource",
            "Not enough resources",
        )
        .msg(format!(
            "no node has {:.1} CPU and {} MiB of memory free",
            cpu_milli as f64 / 1000.0,
            mem_bytes / (1024 * 1024)
        ))
        .hint("ask for less (--cpu, --mem) or terminate sessions you no longer need")
    })
}

/// Applies a heartbeat: records the agent, moves sessions to the states
/// their containers are in, and lists containers that should not exist.
pub async fn apply_heartbeat(state: &AppState, hb: Heartbeat) -> Result<HeartbeatReply, ApiError> {
    let store = state.store();
    store
        .upsert_agent(&AgentRow {
            id: hb.agent_id.clone(),
            url: hb.url.clone(),
            version: hb.version.clone(),
            cpu_milli: (hb.cpu * 1000.0) as i64,
            mem_bytes: i64::try_from(hb.mem_bytes).unwrap_or(i64::MAX),
            last_seen: 0,
        })
        .await?;
    let mut reply = HeartbeatReply::default();
    let mut reported = std::collections::HashSet::new();
    for c in &hb.containers {
        reported.insert(c.session_id.clone());
        let Some(s) = store.session(&c.session_id).await? else {
            if c.phase != ContainerPhase::Removed {
                tracing::warn!(session = %c.session_id, agent = %hb.agent_id, "unknown session container; asking the agent to remove it");
                reply.destroy.push(c.session_id.clone());
            }
            continue;
        };
        let changed = match (s.status, c.phase) {
            (Status::Terminating | Status::Terminated, ContainerPhase::Removed) => {
                store.set_status(&s.id, Status::Terminated, None).await?
            }
            (Status::Terminating | Status::Terminated, _) => {
                reply.destroy.push(s.id.clone());
                false
            }
            (Status::Pending | Status::Preparing, ContainerPhase::Running) => {
                let changed = store
                    .set_running(&s.id, c.host_key.as_deref(), c.container_id.as_deref())
                    .await?;
                if changed {
                    crate::audit::session_event(state, &s, "session.started", None).await;
                }
                changed
            }
            (
                Status::Pending | Status::Preparing | Status::Running,
                ContainerPhase::Exited | ContainerPhase::Failed | ContainerPhase::Removed,
            ) => {
                let reason = c
                    .reason
                    .clone()
                    .unwrap_or_else(|| "the container stopped".into());
                tracing::warn!(session = %s.id, name = %s.name, %reason, "session failed");
                let changed = store
                    .set_status(&s.id, Status::Error, Some(&reason))
                    .await?;
                if changed {
                    crate::audit::session_event(state, &s, "session.failed", Some(&reason)).await;
                }
                changed
            }
            _ => false,
        };
        if changed {
            state.notify_session(&s.id);
        }
    }
    if !hb.partial {
        // Sessions this agent should have but did not report.
        let grace = i64::try_from(state.config().agent_offline_after.as_millis()).unwrap_or(0);
        for s in store.sessions_on_agent(&hb.agent_id).await? {
            if reported.contains(&s.id) {
                continue;
            }
            let old = crate::store::now_ms() - s.status_changed > grace;
            let changed = match s.status {
                Status::Terminating => store.set_status(&s.id, Status::Terminated, None).await?,
                Status::Running => {
                    let reason = "the container was removed outside airlock";
                    let changed = store.set_status(&s.id, Status::Error, Some(reason)).await?;
                    if changed {
                        crate::audit::session_event(state, &s, "session.failed", Some(reason))
                            .await;
                    }
                    changed
                }
                Status::Pending | Status::Preparing if old => {
                    let reason = "the node lost the session while starting it";
                    let changed = store.set_status(&s.id, Status::Error, Some(reason)).await?;
                    if changed {
                        crate::audit::session_event(state, &s, "session.failed", Some(reason))
                            .await;
                    }
                    changed
                }
                _ => false,
            };
            if changed {
                state.notify_session(&s.id);
            }
        }
    }
    Ok(reply)
}
