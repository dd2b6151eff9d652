//! Talking to agents: the HTTP client for their API, scheduling, and the
//! heartbeat reconciliation that keeps session states true.

use std::sync::Arc;
use std::time::Duration;

use airlock_proto::agent::{
    ContainerPhase, CreateContainer, DownloadRequest, FileChange, Heartbeat, HeartbeatReply,
    ImageInfo,
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
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Whom the gateway trusts when an agent serves https: the platform's
/// roots (on Linux the system store, `SSL_CERT_FILE`, `SSL_CERT_DIR`), for
/// the REST calls and the tunnel upgrades alike.
fn agent_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl AgentClient {
    /// A client presenting `token` (the shared agent token; empty when
    /// only enrolled agents are accepted) to agents without their own.
    pub fn new(token: String) -> Self {
        let tls = agent_tls()
            .inspect_err(|e| {
                tracing::warn!(error = %e, "no certificate verification for agents: https:// agents are refused");
            })
            .ok();
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(config) = &tls {
            http = http.tls_backend_preconfigured((**config).clone());
        }
        Self {
            http: http.build().unwrap_or_default(),
            token,
            tls,
        }
    }

    /// The TLS configuration for https:// agents (none when the platform
    /// gave no certificate verification).
    pub fn tls(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.tls.as_ref()
    }

    /// The shared token: what agents without their own credential present
    /// to us (empty: none is accepted).
    pub fn shared_token(&self) -> &str {
        &self.token
    }

    /// What we present to `agent`: its own credential when it is enrolled,
    /// else the shared token.
    pub fn token_for<'a>(&'a self, agent: &'a AgentRow) -> &'a str {
        agent
            .credential
            .as_ref()
            .map_or(self.token.as_str(), |c| c.expose())
    }

    fn url(base: &str, path: &str) -> String {
        format!("{}{path}", base.trim_end_matches('/'))
    }

    /// Sends a request; non-2xx answers become [`AgentCallError::Rejected`].
    pub async fn send(
        &self,
        agent: &AgentRow,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, AgentCallError> {
        let resp = req
            .bearer_auth(self.token_for(agent))
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
    pub async fn create(
        &self,
        agent: &AgentRow,
        spec: &CreateContainer,
    ) -> Result<(), AgentCallError> {
        self.send(
            agent,
            self.http
                .post(Self::url(&agent.url, "/v1/sessions"))
                .timeout(Duration::from_secs(30))
                .json(spec),
        )
        .await
        .map(drop)
    }

    /// Removes a session container.
    pub async fn destroy(&self, agent: &AgentRow, id: &str) -> Result<(), AgentCallError> {
        self.send(
            agent,
            self.http
                .delete(Self::url(&agent.url, &format!("/v1/sessions/{id}")))
                .timeout(Duration::from_secs(60)),
        )
        .await
        .map(drop)
    }

    /// Streams files out of a session (multipart/mixed of tar archives).
    pub async fn download(
        &self,
        agent: &AgentRow,
        id: &str,
        paths: Vec<String>,
    ) -> Result<reqwest::Response, AgentCallError> {
        self.send(
            agent,
            self.http
                .post(Self::url(
                    &agent.url,
                    &format!("/v1/sessions/{id}/download"),
                ))
                .json(&DownloadRequest { paths }),
        )
        .await
    }

    /// Streams a framed upload into a session.
    pub async fn upload(
        &self,
        agent: &AgentRow,
        id: &str,
        body: reqwest::Body,
    ) -> Result<serde_json::Value, AgentCallError> {
        let resp = self
            .send(
                agent,
                self.http
                    .post(Self::url(&agent.url, &format!("/v1/sessions/{id}/upload")))
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
        agent: &AgentRow,
        id: &str,
        path: &str,
    ) -> Result<serde_json::Value, AgentCallError> {
        let resp = self
            .send(
                agent,
                self.http
                    .get(Self::url(&agent.url, &format!("/v1/sessions/{id}/files")))
                    .query(&[("path", path)])
                    .timeout(Duration::from_secs(60)),
            )
            .await?;
        resp.json()
            .await
            .map_err(|e| AgentCallError::Unreachable(e.to_string()))
    }

    /// Renames, removes or creates a path in a session.
    pub async fn change_files(
        &self,
        agent: &AgentRow,
        id: &str,
        change: &FileChange,
    ) -> Result<(), AgentCallError> {
        self.send(
            agent,
            self.http
                .post(Self::url(&agent.url, &format!("/v1/sessions/{id}/files")))
                .timeout(Duration::from_secs(120))
                .json(change),
        )
        .await
        .map(drop)
    }

    /// The container log.
    pub async fn logs(
        &self,
        agent: &AgentRow,
        id: &str,
        tail: usize,
    ) -> Result<String, AgentCallError> {
        let resp = self
            .send(
                agent,
                self.http
                    .get(Self::url(&agent.url, &format!("/v1/sessions/{id}/logs")))
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
        agent: &AgentRow,
        id: &str,
        tail: usize,
    ) -> Result<reqwest::Response, AgentCallError> {
        self.send(
            agent,
            self.http
                .get(Self::url(&agent.url, &format!("/v1/sessions/{id}/logs")))
                .query(&[("tail", tail.to_string()), ("follow", "true".to_owned())]),
        )
        .await
    }

    /// Images on a node.
    pub async fn images(&self, agent: &AgentRow) -> Result<Vec<ImageInfo>, AgentCallError> {
        let resp = self
            .send(
                agent,
                self.http
                    .get(Self::url(&agent.url, "/v1/images"))
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
        agent: &AgentRow,
        id: &str,
    ) -> Result<airlock_proto::agent::RunnerPing, AgentCallError> {
        let resp = self
            .send(
                agent,
                self.http
                    .get(Self::url(&agent.url, &format!("/v1/sessions/{id}/ping")))
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

/// Where new sessions go among the nodes with room (`--placement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// The node with the most free CPU (then memory): load spreads out.
    #[default]
    Spread,
    /// The fullest node that still fits: whole nodes stay free for large
    /// sessions.
    Pack,
}

impl std::str::FromStr for Placement {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spread" => Ok(Self::Spread),
            "pack" => Ok(Self::Pack),
            other => Err(format!("{other:?} is not a placement: use spread or pack")),
        }
    }
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The node.
    pub agent: AgentRow,
    /// CPU millicores not held by live sessions.
    pub free_cpu_milli: i64,
    /// Memory not held by live sessions.
    pub free_mem_bytes: i64,
    /// Whole GPUs not held by live sessions.
    pub free_gpus: i64,
}

/// What a session asks for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// CPU millicores.
    pub cpu_milli: i64,
    /// Memory.
    pub mem_bytes: i64,
    /// Whole GPUs.
    pub gpus: i64,
    /// This node only (administrators).
    pub node: Option<&'a str>,
}

/// The most a node has free (for "the largest free slot is …").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// CPU millicores.
    pub cpu_milli: i64,
    /// Memory bytes.
    pub mem_bytes: i64,
    /// Whole GPUs.
    pub gpus: i64,
    /// The node.
    pub node: String,
}

/// Why no node was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoNode {
    /// No agent is online.
    NoneOnline,
    /// The named node is not online.
    UnknownNode(String),
    /// The named node is drained.
    Draining(String),
    /// Every node is drained.
    AllDraining,
    /// GPUs were asked for and no open node (or not the named one) has any.
    NoGpus,
    /// No node has room; the largest free slot, if any.
    NoRoom(Option<Slot>),
}

/// Chooses a node for `req` by `placement` (pure: the data in, the choice
/// out). Drained nodes get nothing, not even when named. A session that
/// asks for no GPU goes to a node without GPUs when one fits, so GPU nodes
/// stay free for the sessions that need them.
pub fn place(
    candidates: Vec<Candidate>,
    req: Request<'_>,
    placement: Placement,
) -> Result<AgentRow, NoNode> {
    if candidates.is_empty() {
        return Err(NoNode::NoneOnline);
    }
    let candidates: Vec<Candidate> = match req.node {
        Some(name) => {
            let named: Vec<Candidate> = candidates
                .into_iter()
                .filter(|c| c.agent.id == name)
                .collect();
            if named.is_empty() {
                return Err(NoNode::UnknownNode(name.to_owned()));
            }
            if named.iter().all(|c| c.agent.draining) {
                return Err(NoNode::Draining(name.to_owned()));
            }
            named
        }
        None => candidates,
    };
    let mut open: Vec<Candidate> = candidates
        .into_iter()
        .filter(|c| !c.agent.draining)
        .collect();
    if open.is_empty() {
        return Err(NoNode::AllDraining);
    }
    if req.gpus > 0 {
        open.retain(|c| c.agent.gpus > 0);
        if open.is_empty() {
            return Err(NoNode::NoGpus);
        }
    }
    let slot = |c: &Candidate| (c.free_gpus, c.free_cpu_milli, c.free_mem_bytes);
    let largest = open
        .iter()
        .max_by_key(|c| {
            if req.gpus > 0 {
                slot(c)
            } else {
                (0, c.free_cpu_milli, c.free_mem_bytes)
            }
        })
        .map(|c| Slot {
            cpu_milli: c.free_cpu_milli,
            mem_bytes: c.free_mem_bytes,
            gpus: c.free_gpus,
            node: c.agent.id.clone(),
        });
    let mut fits: Vec<Candidate> = open
        .into_iter()
        .filter(|c| {
            c.free_cpu_milli >= req.cpu_milli
                && c.free_mem_bytes >= req.mem_bytes
                && c.free_gpus >= req.gpus
        })
        .collect();
    if req.gpus == 0 && fits.iter().any(|c| c.agent.gpus == 0) {
        fits.retain(|c| c.agent.gpus == 0);
    }
    let key = |c: &Candidate| (c.free_cpu_milli, c.free_mem_bytes);
    let chosen = match placement {
        // Ties go to the first id either way (candidates come sorted).
        Placement::Spread => fits.into_iter().rev().max_by_key(key),
        Placement::Pack => fits.into_iter().min_by_key(key),
    };
    chosen.map(|c| c.agent).ok_or(NoNode::NoRoom(
        largest.filter(|l| l.cpu_milli > 0 && l.mem_bytes > 0),
    ))
}

fn mib(bytes: i64) -> i64 {
    bytes / (1024 * 1024)
}

fn cpus(milli: i64) -> String {
    format!("{:.1}", milli as f64 / 1000.0)
}

/// Picks a node for a new session (see [`place`]), with errors for people.
pub async fn schedule(state: &AppState, req: Request<'_>) -> Result<AgentRow, ApiError> {
    let mut candidates = Vec::new();
    for a in online(state).await? {
        let used = state.store().agent_usage(&a.id).await?;
        candidates.push(Candidate {
            free_cpu_milli: a.cpu_milli - used.cpu_milli,
            free_mem_bytes: a.mem_bytes - used.mem_bytes,
            free_gpus: a.gpus - used.gpus,
            agent: a,
        });
    }
    place(candidates, req, state.config().placement).map_err(|e| match e {
        NoNode::NoneOnline => ApiError::unavailable("no node is online to run sessions").hint(
            "start an agent (`airlockd agent`), or check that `airlockd up` can reach Docker",
        ),
        NoNode::UnknownNode(n) => {
            ApiError::not_found("node-not-found", format!("no node named {n:?} is online"))
                .hint("see the nodes with `airlock admin cluster` or the web UI's Cluster page")
        }
        NoNode::Draining(n) => {
            no_resource(format!("node {n:?} is drained: it takes no new sessions")).hint(format!(
                "leave out --node, or end the drain: `airlock admin node undrain {n}`"
            ))
        }
        NoNode::AllDraining => no_resource("every online node is drained".to_owned())
            .hint("an administrator can end a drain: `airlock admin node undrain NODE`"),
        NoNode::NoGpus => no_resource(match req.node {
            Some(n) => format!("node {n:?} has no GPU"),
            None => "no online node has a GPU".to_owned(),
        })
        .hint("leave out --gpus, or ask an administrator for a node with NVIDIA GPUs (`airlock admin cluster` shows each node's)"),
        NoNode::NoRoom(largest) => {
            let gpus = |n: i64| {
                if req.gpus > 0 {
                    format!(", {n} GPU{}", if n == 1 { "" } else { "s" })
                } else {
                    String::new()
                }
            };
            let asked = format!(
                "no node has {} CPU, {} MiB of memory{} free",
                cpus(req.cpu_milli),
                mib(req.mem_bytes),
                gpus(req.gpus)
            );
            let msg = match largest {
                Some(l) => format!(
                    "{asked}; the largest free slot is {} CPU, {} MiB{} (node {})",
                    cpus(l.cpu_milli),
                    mib(l.mem_bytes),
                    gpus(l.gpus),
                    l.node
                ),
                None => format!("{asked}; every node is full"),
            };
            no_resource(msg).hint(
                "ask for less (--cpu, --mem, --gpus) or terminate sessions you no longer need",
            )
        }
    })
}

fn no_resource(msg: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no-available-resource",
        "Not enough resources",
    )
    .msg(msg)
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
            gpus: i64::try_from(hb.gpus.len()).unwrap_or(0),
            load_milli: (hb.load.load1 * 1000.0).round() as i64,
            mem_available: i64::try_from(hb.load.mem_available).unwrap_or(i64::MAX),
            last_seen: 0,
            draining: false,
            credential: None,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GIB: i64 = 1 << 30;

    fn node(id: &str, free_cpu: i64, free_gib: i64, draining: bool) -> Candidate {
        Candidate {
            agent: AgentRow {
                id: id.into(),
                url: format!("http://{id}"),
                version: "t".into(),
                cpu_milli: 8000,
                mem_bytes: 32 * GIB,
                gpus: 0,
                load_milli: 0,
                mem_available: 0,
                last_seen: 0,
                draining,
                credential: None,
            },
            free_cpu_milli: free_cpu,
            free_mem_bytes: free_gib * GIB,
            free_gpus: 0,
        }
    }

    fn gpu_node(id: &str, free_cpu: i64, gpus: i64, free_gpus: i64) -> Candidate {
        let mut n = node(id, free_cpu, 16, false);
        n.agent.gpus = gpus;
        n.free_gpus = free_gpus;
        n
    }

    fn ask(cpu: i64, gib: i64) -> Request<'static> {
        Request {
            cpu_milli: cpu,
            mem_bytes: gib * GIB,
            gpus: 0,
            node: None,
        }
    }

    fn slot(cpu: i64, gib: i64, gpus: i64, node: &str) -> Option<Slot> {
        Some(Slot {
            cpu_milli: cpu,
            mem_bytes: gib * GIB,
            gpus,
            node: node.into(),
        })
    }

    #[test]
    fn gpus_are_whole_devices_on_nodes_that_have_them() {
        let n = vec![
            node("cpu1", 8000, 16, false),
            gpu_node("gpu1", 4000, 2, 1),
            gpu_node("gpu2", 2000, 4, 4),
        ];
        let gpus = |g| Request {
            gpus: g,
            ..ask(1000, 1)
        };
        // One GPU: both GPU nodes fit; spread takes the one with more CPU.
        assert_eq!(
            place(n.clone(), gpus(1), Placement::Spread).unwrap().id,
            "gpu1"
        );
        // Two: only gpu2 has two free.
        assert_eq!(
            place(n.clone(), gpus(2), Placement::Spread).unwrap().id,
            "gpu2"
        );
        // Five: nobody; the largest slot is the one with the most free GPUs.
        assert_eq!(
            place(n.clone(), gpus(5), Placement::Spread).unwrap_err(),
            NoNode::NoRoom(slot(2000, 16, 4, "gpu2"))
        );
        // No GPU asked: a node without GPUs, even when packing.
        assert_eq!(
            place(n.clone(), ask(1000, 1), Placement::Pack).unwrap().id,
            "cpu1"
        );
        // ...unless none without fits.
        assert_eq!(
            place(n.clone(), ask(9000, 1), Placement::Spread).unwrap_err(),
            NoNode::NoRoom(slot(8000, 16, 0, "cpu1"))
        );
        let busy = vec![node("cpu1", 0, 0, false), gpu_node("gpu1", 4000, 2, 2)];
        assert_eq!(
            place(busy, ask(1000, 1), Placement::Spread).unwrap().id,
            "gpu1"
        );
        // No node with GPUs at all, or not the named one.
        assert_eq!(
            place(nodes(), gpus(1), Placement::Spread).unwrap_err(),
            NoNode::NoGpus
        );
        let on_cpu1 = Request {
            node: Some("cpu1"),
            ..gpus(1)
        };
        assert_eq!(
            place(n, on_cpu1, Placement::Spread).unwrap_err(),
            NoNode::NoGpus
        );
    }

    fn nodes() -> Vec<Candidate> {
        vec![
            node("a", 1000, 2, false),
            node("b", 6000, 16, false),
            node("c", 3000, 8, false),
        ]
    }

    #[test]
    fn spread_takes_the_emptiest_and_pack_the_fullest_that_fits() {
        assert_eq!(
            place(nodes(), ask(1000, 1), Placement::Spread).unwrap().id,
            "b"
        );
        assert_eq!(
            place(nodes(), ask(1000, 1), Placement::Pack).unwrap().id,
            "a"
        );
        assert_eq!(
            place(nodes(), ask(2000, 4), Placement::Pack).unwrap().id,
            "c"
        );
        // Memory counts too: "a" has the CPU but not the memory.
        assert_eq!(
            place(nodes(), ask(500, 4), Placement::Pack).unwrap().id,
            "c"
        );
    }

    #[test]
    fn ties_go_to_the_first_node() {
        let same = vec![node("x", 2000, 4, false), node("y", 2000, 4, false)];
        assert_eq!(
            place(same.clone(), ask(1000, 1), Placement::Spread)
                .unwrap()
                .id,
            "x"
        );
        assert_eq!(place(same, ask(1000, 1), Placement::Pack).unwrap().id, "x");
    }

    #[test]
    fn no_room_names_the_largest_free_slot() {
        assert_eq!(
            place(nodes(), ask(7000, 1), Placement::Spread).unwrap_err(),
            NoNode::NoRoom(slot(6000, 16, 0, "b"))
        );
        let full = vec![node("a", 0, 0, false)];
        assert_eq!(
            place(full, ask(1000, 1), Placement::Spread).unwrap_err(),
            NoNode::NoRoom(None)
        );
        assert_eq!(
            place(Vec::new(), ask(1000, 1), Placement::Spread).unwrap_err(),
            NoNode::NoneOnline
        );
    }

    #[test]
    fn drained_nodes_get_nothing_even_when_named() {
        let mut n = nodes();
        n[1].agent.draining = true;
        assert_eq!(
            place(n.clone(), ask(1000, 1), Placement::Spread)
                .unwrap()
                .id,
            "c"
        );
        // The largest slot ignores drained nodes.
        assert_eq!(
            place(n.clone(), ask(5000, 1), Placement::Spread).unwrap_err(),
            NoNode::NoRoom(slot(3000, 8, 0, "c"))
        );
        let named = Request {
            node: Some("b"),
            ..ask(1000, 1)
        };
        assert_eq!(
            place(n.clone(), named, Placement::Spread).unwrap_err(),
            NoNode::Draining("b".into())
        );
        for c in &mut n {
            c.agent.draining = true;
        }
        assert_eq!(
            place(n, ask(1000, 1), Placement::Spread).unwrap_err(),
            NoNode::AllDraining
        );
    }

    #[test]
    fn a_named_node_is_the_only_choice() {
        let on_a = Request {
            node: Some("a"),
            ..ask(1000, 1)
        };
        assert_eq!(place(nodes(), on_a, Placement::Spread).unwrap().id, "a");
        let too_big = Request {
            node: Some("a"),
            ..ask(2000, 1)
        };
        assert_eq!(
            place(nodes(), too_big, Placement::Spread).unwrap_err(),
            NoNode::NoRoom(slot(1000, 2, 0, "a"))
        );
        let nowhere = Request {
            node: Some("zz"),
            ..ask(1000, 1)
        };
        assert_eq!(
            place(nodes(), nowhere, Placement::Spread).unwrap_err(),
            NoNode::UnknownNode("zz".into())
        );
    }

    #[test]
    fn placement_parses() {
        assert_eq!("pack".parse::<Placement>().unwrap(), Placement::Pack);
        assert!("random".parse::<Placement>().is_err());
    }
}
