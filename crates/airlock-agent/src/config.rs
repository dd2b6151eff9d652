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
    /// The folder storage root: the only directory whose direct children
    /// may be mounted into sessions. `None`: no folder mounts at all.
    pub storage_root: Option<PathBuf>,
    /// The session network and its firewall.
    pub network: NetworkPolicy,
    /// Image name globs users may start sessions from (`*` and `?`);
    /// empty: any image the engine has.
    pub allowed_images: Vec<String>,
    /// How long a resumable tunnel whose client went away keeps its
    /// runner connection and replay buffer for a reconnect.
    pub tunnel_grace: Duration,
    /// Whether session runners record SSH and SFTP events for the audit
    /// trail (`AIRLOCK_AUDIT=off` in the container when not).
    pub runner_audit: bool,
}

/// Outbound traffic from sessions to the world beyond the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Egress {
    /// Sessions may open connections out (to the internet, e.g. `pip
    /// install`), but never to the node itself, other sessions or
    /// link-local (cloud metadata) addresses.
    #[default]
    Open,
    /// No connection may leave the session network.
    None,
}

/// Where session containers are attached and how they are fenced in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Docker network for new session containers (created if missing,
    /// inter-container traffic off).
    pub network: String,
    /// Linux bridge interface name used when the network is created (empty:
    /// Docker's choice, `br-<id>`).
    pub bridge: String,
    /// Outbound policy.
    pub egress: Egress,
    /// Install the host firewall rules (iptables). `false` only when the
    /// operator accepts that sessions can reach the node's services.
    pub firewall: bool,
    /// The network namespace holding Docker's bridges (e.g.
    /// `/proc/1/ns/net`) when the agent runs in another one; `None`: the
    /// agent's own.
    pub firewall_netns: Option<std::path::PathBuf>,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        Self {
            network: crate::firewall::NETWORK.to_owned(),
            bridge: crate::firewall::BRIDGE.to_owned(),
            egress: Egress::Open,
            firewall: true,
            firewall_netns: None,
        }
    }
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
            storage_root: None,
            network: NetworkPolicy::default(),
            allowed_images: Vec::new(),
            tunnel_grace: airlock_tunnel::resume::DEFAULT_GRACE,
            runner_audit: true,
        }
    }
}
