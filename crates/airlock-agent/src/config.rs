//! Agent settings.

use std::path::PathBuf;
use std::time::Duration;

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Stable id of this node.
    pub agent_id: String,
    /// Gateway base URL (`http://host:port`).
    pub gateway_url: String,
    /// Shared secret between gateway and agents.
    pub token: String,
    /// URL at which the gateway reaches this agent.
    pub advertise_url: String,
    /// The static runner binary on this host.
    pub runner: PathBuf,
    /// Agent state directory (runner copy).
    pub data_dir: PathBuf,
    /// Multiply the host's CPU count by this for scheduling.
    pub cpu_overcommit: f64,
    /// Extra labels for every container (e.g. `airlock.test=1`).
    pub extra_labels: Vec<(String, String)>,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// uid/gid of the session user `work`.
    pub uid: u32,
    /// Group id of `work`.
    pub gid: u32,
    /// How long a container may take to become ready.
    pub ready_timeout: Duration,
}

impl AgentConfig {
    /// A configuration with defaults for everything but the essentials.
    pub fn new(
        agent_id: impl Into<String>,
        gateway_url: impl Into<String>,
        token: impl Into<String>,
        runner: PathBuf,
        data_dir: PathBuf,
    ) -> Self {
        Self {
            agent_id: agent_id.into(),
            gateway_url: gateway_url.into(),
            token: token.into(),
            advertise_url: String::new(),
            runner,
            data_dir,
            cpu_overcommit: 1.0,
            extra_labels: Vec::new(),
            heartbeat: Duration::from_secs(5),
            uid: 1000,
            gid: 1000,
            ready_timeout: Duration::from_secs(90),
        }
    }
}
