//! The gateway ↔ agent protocol (HTTP + JSON, authenticated both ways with a
//! shared bearer token).
//!
//! Agent → gateway: `POST /agent/v1/heartbeat` with a [`Heartbeat`] every few
//! seconds and whenever a container changes state; the reply lists sessions
//! the gateway wants gone (so a session terminated while its agent was down
//! does not leave an orphan container).
//!
//! Gateway → agent (`/v1/…` on the agent's advertised URL): create and
//! destroy session containers, stream files in and out, and
//! `GET /v1/sessions/{id}/connect?port=2200` upgraded to a raw TCP stream
//! (`Upgrade: airlock-tcp`) that is spliced to the runner in the container.

use serde::{Deserialize, Serialize};

/// The `Upgrade` protocol token of a raw TCP stream.
pub const TCP_UPGRADE: &str = "airlock-tcp";

/// A bind mount into a session container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Path on the agent's host.
    pub host_path: String,
    /// Path inside the container.
    pub container_path: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// `POST /v1/sessions`: start a session container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateContainer {
    /// Session UUID.
    pub session_id: String,
    /// Session name (used as the container hostname).
    pub session_name: String,
    /// Owner's user id (a container label).
    pub owner_id: String,
    /// Image reference.
    pub image: String,
    /// CPU cores (may be fractional).
    pub cpu: f64,
    /// Memory limit in bytes.
    pub mem_bytes: u64,
    /// Whole NVIDIA GPUs the node gives the session (0: none).
    #[serde(default)]
    pub gpus: u32,
    /// Folder mounts.
    pub mounts: Vec<Mount>,
    /// Account SSH public keys to authorise in the session.
    pub authorized_keys: Vec<String>,
    /// Environment variables for the session (also seen by SSH logins).
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

/// Where a session container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerPhase {
    /// Being created or started; the runner is not ready yet.
    Preparing,
    /// The runner serves SSH.
    Running,
    /// The container stopped (by itself or killed outside airlock).
    Exited,
    /// Creating or starting failed.
    Failed,
    /// The container was removed (normal after destroy).
    Removed,
}

/// The state of one session container, as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerReport {
    /// Session UUID.
    pub session_id: String,
    /// Phase.
    pub phase: ContainerPhase,
    /// Human-readable reason for `exited`/`failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The runner's host public key (OpenSSH line), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Docker container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// Agent → gateway status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Stable agent id.
    pub agent_id: String,
    /// URL the gateway reaches this agent at.
    pub url: String,
    /// Agent version.
    pub version: String,
    /// Schedulable CPU cores.
    pub cpu: f64,
    /// Schedulable memory in bytes.
    pub mem_bytes: u64,
    /// The node's NVIDIA GPUs (none without `nvidia-smi`).
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// How busy the node is now (what sessions reserve is the gateway's
    /// count; this is what the machine says).
    #[serde(default)]
    pub load: NodeLoad,
    /// Every session container the agent knows, or a single changed one
    /// when `partial` is set.
    pub containers: Vec<ContainerReport>,
    /// Whether `containers` is only a change (no reconciliation).
    #[serde(default)]
    pub partial: bool,
}

/// A node's load as its kernel reports it (zero when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// The 1-minute load average (`/proc/loadavg`).
    pub load1: f64,
    /// Memory available to new processes, bytes (`MemAvailable`).
    pub mem_available: u64,
}

/// An NVIDIA GPU of a node, as `nvidia-smi` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// Its UUID (`GPU-…`), what Docker's device request names.
    pub uuid: String,
    /// The model, e.g. "NVIDIA H200".
    pub name: String,
    /// Its memory in MiB.
    pub mem_mib: u64,
}

/// Agent → gateway (`POST /agent/v1/events`, agent token): what the
/// runners of this agent's sessions reported for the audit trail.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunnerEvents {
    /// The reporting agent.
    pub agent_id: String,
    /// Oldest first.
    pub events: Vec<RunnerEvent>,
}

/// One event from inside a session's SSH server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerEvent {
    /// The session whose container reported it.
    pub session_id: String,
    /// Epoch milliseconds (the node's clock).
    pub at: i64,
    /// `ssh.auth`, `ssh.exec`, `sftp.write`, …
    pub kind: String,
    /// The SSH connection's peer as the runner saw it (ties the event to
    /// the gateway's tunnel).
    #[serde(default)]
    pub peer: String,
    /// Kind-specific facts.
    #[serde(default)]
    pub detail: serde_json::Value,
    /// The gateway connection whose tunnel reached the runner from `peer`,
    /// as the gateway told the agent when it opened the tunnel (filled by
    /// the agent, never taken from the runner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<TunnelOrigin>,
}

/// Which client connection a tunnel serves: sent by the gateway when it
/// asks an agent for a tunnel (headers [`ORIGIN_CONN_HEADER`] and
/// [`ORIGIN_CLIENT_HEADER`]), so the agent can tie the runner's audit
/// events to it, on any node and through resumed tunnels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelOrigin {
    /// The gateway's connection id.
    pub conn: String,
    /// The client's address.
    pub client: String,
}

/// Header carrying [`TunnelOrigin::conn`].
pub const ORIGIN_CONN_HEADER: &str = "x-airlock-conn";
/// Header carrying [`TunnelOrigin::client`].
pub const ORIGIN_CLIENT_HEADER: &str = "x-airlock-client";

/// Path of [`RunnerEvents`] on the gateway.
pub const EVENTS_PATH: &str = "/agent/v1/events";

/// Gateway → agent answer to a heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Sessions whose containers must be removed.
    #[serde(default)]
    pub destroy: Vec<String>,
}

/// An image the agent can start sessions from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `repo:tag`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// A change to a session's files (`POST /v1/sessions/{id}/files/{op}`),
/// carried out by the runner as the session user and confined to the home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum FileChange {
    /// Rename `from` to `to` (which must not exist).
    Rename {
        /// Path relative to the home directory.
        from: String,
        /// New path relative to the home directory.
        to: String,
    },
    /// Remove a file, a link or a directory tree.
    Remove {
        /// Path relative to the home directory.
        path: String,
    },
    /// Create one directory.
    Mkdir {
        /// Path relative to the home directory.
        path: String,
    },
}

impl FileChange {
    /// The `airlock-runner files` subcommand and its paths.
    pub fn runner_args(&self) -> (&'static str, Vec<String>) {
        match self {
            FileChange::Rename { from, to } => ("mv", vec![from.clone(), to.clone()]),
            FileChange::Remove { path } => ("rm", vec![path.clone()]),
            FileChange::Mkdir { path } => ("mkdir", vec![path.clone()]),
        }
    }
}

/// `POST /v1/sessions/{id}/download` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownloadRequest {
    /// Paths relative to the home directory (or absolute under it).
    pub paths: Vec<String>,
}

/// Response header of an agent's download: what each requested path is,
/// in the order asked, comma-separated: its size in bytes for a file, `d`
/// for a directory (for the gateway's audit trail). Left out when the
/// request named more than [`SIZES_MAX_PATHS`] paths.
pub const SIZES_HEADER: &str = "x-airlock-sizes";

/// Most paths [`SIZES_HEADER`] describes (keeps the header small).
pub const SIZES_MAX_PATHS: usize = 1000;

/// The [`SIZES_HEADER`] value for `sizes` (`None`: a directory).
pub fn format_sizes(sizes: &[Option<u64>]) -> String {
    sizes
        .iter()
        .map(|s| s.map_or_else(|| "d".to_owned(), |n| n.to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a [`SIZES_HEADER`] value; `None` when malformed.
pub fn parse_sizes(v: &str) -> Option<Vec<Option<u64>>> {
    v.split(',')
        .map(|p| match p.trim() {
            "d" => Some(None),
            n => n.parse().ok().map(Some),
        })
        .collect()
}

/// An entry of a directory listing in a session (`session ls`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name.
    pub filename: String,
    /// `ls -l` style mode string (`-rw-------`).
    pub mode: String,
    /// Size in bytes.
    pub size: u64,
    /// Change time (epoch seconds).
    pub ctime: f64,
    /// Modification time.
    pub mtime: f64,
    /// Access time.
    pub atime: f64,
}

/// `GET /v1/sessions/{id}/ping` answer: the agent's hop to the runner
/// (`airlock ping`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerPing {
    /// TCP connect to the runner's SSH port, in milliseconds.
    pub connect_ms: f64,
    /// From the connection to the runner's SSH identification line, in ms.
    pub banner_ms: f64,
    /// The identification line (`SSH-2.0-…`).
    pub banner: String,
}

#[cfg(test)]
mod tests {
    use super::{format_sizes, parse_sizes};

    #[test]
    fn sizes_round_trip() {
        let v = vec![Some(0), None, Some(3_145_728)];
        assert_eq!(format_sizes(&v), "0,d,3145728");
        assert_eq!(parse_sizes(&format_sizes(&v)), Some(v));
        assert_eq!(parse_sizes("12,x"), None);
        assert_eq!(parse_sizes("-1"), None);
    }
}
