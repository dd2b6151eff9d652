//! The seam between the agent's logic and the container engine.
//!
//! [`Runtime`] is everything the agent asks of an engine: list its session
//! containers by label, create and remove them, inspect one into a plain
//! [`ContainerState`], read and follow logs, run commands (`exec`), watch
//! for containers that stop, and set up the session network. Its types are
//! plain data: no engine type crosses this seam, and `sessions.rs`, `api.rs`,
//! `audit.rs` and `firewall.rs` call no engine directly. [`crate::docker`] is
//! the implementation (and the only code that talks to Docker); a
//! Kubernetes one would be another (see docs/kubernetes.md).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::pin::Pin;

use airlock_proto::agent::ImageInfo;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use tokio::io::AsyncWrite;

use crate::error::AgentError;

/// Label holding the session id on every session container.
pub const LABEL_SESSION: &str = "airlock.session";
/// Label holding the agent id.
pub const LABEL_AGENT: &str = "airlock.agent";
/// Label holding the owner's user id.
pub const LABEL_OWNER: &str = "airlock.owner";
/// Label holding the session name.
pub const LABEL_NAME: &str = "airlock.name";
/// Label holding the UUIDs of the GPUs a session holds (comma-separated),
/// so a restarted agent knows which are taken.
pub const LABEL_GPUS: &str = "airlock.gpus";

/// Where the runner binary is mounted in every container.
pub const RUNNER_IN_CONTAINER: &str = "/opt/airlock/airlock-runner";

/// A session container of this agent, as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Container id.
    pub id: String,
    /// Its session (the [`LABEL_SESSION`] label).
    pub session_id: String,
    /// Whether it is running.
    pub running: bool,
    /// The GPUs it holds (the [`LABEL_GPUS`] label).
    pub gpus: Vec<String>,
}

/// What inspecting a container says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerState {
    /// Whether it is running.
    pub running: bool,
    /// Exit code of its main process (0 while it runs).
    pub exit_code: i64,
    /// Whether the kernel killed it for running out of memory.
    pub oom_killed: bool,
    /// Its IP address on each network it is attached to.
    pub addresses: BTreeMap<String, String>,
}

impl ContainerState {
    /// The IP address on `network` when attached to it (new sessions), else
    /// on whichever network it has (containers started before the session
    /// network existed).
    pub fn ip_on(&self, network: &str) -> Option<&str> {
        self.addresses
            .get(network)
            .or_else(|| self.addresses.values().next())
            .map(String::as_str)
    }
}

/// CPU cores and memory of the engine's host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// CPU cores.
    pub cpus: f64,
    /// Memory in bytes.
    pub mem_bytes: u64,
}

/// The session network as the engine has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionNetwork {
    /// The Linux bridge interface behind it.
    pub bridge: String,
    /// Whether the engine lets its containers talk to each other (the
    /// firewall blocks that anyway).
    pub inter_container: bool,
}

/// A session container to create.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Container name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Host name inside.
    pub hostname: String,
    /// Labels ([`LABEL_SESSION`], …).
    pub labels: HashMap<String, String>,
    /// `NAME=value` environment.
    pub env: Vec<String>,
    /// `host:container:ro|rw` bind mounts, the runner first.
    pub binds: Vec<String>,
    /// CPU limit in billionths of a core.
    pub nano_cpus: i64,
    /// Memory limit in bytes (swap included).
    pub memory: i64,
    /// UUIDs of whole NVIDIA GPUs to pass through (empty: none).
    pub gpus: Vec<String>,
    /// Network to attach to.
    pub network: String,
}

/// Whether to keep reading a log as it grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    /// What is logged so far, then the end.
    Existing,
    /// What is logged so far, then new lines until the container stops.
    Follow,
}

/// A piece of a container log or of a command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogChunk {
    /// From stdout.
    Stdout(Bytes),
    /// From stderr.
    Stderr(Bytes),
    /// From elsewhere (a terminal's merged output, echoed stdin).
    Other(Bytes),
}

impl LogChunk {
    /// The bytes, whichever stream they came from.
    pub fn bytes(&self) -> &Bytes {
        match self {
            LogChunk::Stdout(b) | LogChunk::Stderr(b) | LogChunk::Other(b) => b,
        }
    }
}

/// A log or an output, chunk by chunk.
pub type LogStream = BoxStream<'static, Result<LogChunk, AgentError>>;

/// One item per event that should make the agent report at once (a
/// container of this agent died, ran out of memory or was removed).
pub type EventStream = BoxStream<'static, Result<(), AgentError>>;

/// A command running in a container: its output as a stream, stdin as a
/// writer; [`Runtime::exec_exit_code`] gives the result afterwards.
pub struct Exec {
    /// Exec id.
    pub id: String,
    /// stdout and stderr chunks.
    pub output: LogStream,
    /// stdin (drop or shut it down to send end-of-file).
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

/// Output of a finished command.
#[derive(Debug)]
pub struct ExecOutput {
    /// Exit code.
    pub code: i64,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: String,
}

/// A container engine, as the agent uses it. Object safe: the agent holds
/// an `Arc<dyn Runtime>`.
pub trait Runtime: Send + Sync + fmt::Debug {
    /// CPU cores and memory of the engine's host.
    fn capacity(&self) -> BoxFuture<'_, Result<Capacity, AgentError>>;

    /// Creates the session network `name` (Linux bridge `bridge`,
    /// inter-container traffic off) unless it exists.
    fn ensure_network<'a>(
        &'a self,
        name: &'a str,
        bridge: &'a str,
    ) -> BoxFuture<'a, Result<SessionNetwork, AgentError>>;

    /// Whether an image is present.
    fn has_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<bool, AgentError>>;

    /// Tagged images, sorted by name.
    fn images(&self) -> BoxFuture<'_, Result<Vec<ImageInfo>, AgentError>>;

    /// Session containers of agent `agent_id` (running or not); containers
    /// without a [`LABEL_SESSION`] label are not listed.
    fn list<'a>(&'a self, agent_id: &'a str) -> BoxFuture<'a, Result<Vec<Container>, AgentError>>;

    /// Creates and starts a container; returns its id. A container that
    /// was created but could not start is removed again.
    fn create_and_start(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<String, AgentError>>;

    /// Force-removes a container (no error if it is already gone).
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), AgentError>>;

    /// A container's state; `None` when it does not exist.
    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ContainerState>, AgentError>>;

    /// The container's log (stdout and stderr), the last `tail` lines
    /// (`None`: all of it).
    fn logs(&self, id: &str, mode: LogMode, tail: Option<usize>) -> LogStream;

    /// Starts `cmd` in a container as `user` (`uid:gid`) in the session
    /// home, with stdin attached.
    fn exec<'a>(
        &'a self,
        id: &'a str,
        user: &'a str,
        cmd: Vec<String>,
    ) -> BoxFuture<'a, Result<Exec, AgentError>>;

    /// Exit code of a finished exec (waits briefly for it to be recorded).
    fn exec_exit_code<'a>(&'a self, exec_id: &'a str) -> BoxFuture<'a, Result<i64, AgentError>>;

    /// Events about agent `agent_id`'s containers (see [`EventStream`]);
    /// the stream ends or fails when the engine's event feed does.
    fn events(&self, agent_id: &str) -> EventStream;

    /// Runs a command to completion, capturing its output.
    fn exec_capture<'a>(
        &'a self,
        id: &'a str,
        user: &'a str,
        cmd: Vec<String>,
    ) -> BoxFuture<'a, Result<ExecOutput, AgentError>> {
        async move {
            let mut exec = self.exec(id, user, cmd).await?;
            drop(exec.input);
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            while let Some(chunk) = exec.output.next().await {
                match chunk? {
                    LogChunk::Stdout(b) => stdout.extend_from_slice(&b),
                    LogChunk::Stderr(b) => stderr.extend_from_slice(&b),
                    LogChunk::Other(_) => {}
                }
            }
            let code = self.exec_exit_code(&exec.id).await?;
            Ok(ExecOutput {
                code,
                stdout,
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_session_network_address() {
        let mut s = ContainerState::default();
        assert_eq!(s.ip_on("airlock-sessions"), None);
        s.addresses.insert("bridge".into(), "172.17.0.5".into());
        assert_eq!(s.ip_on("airlock-sessions"), Some("172.17.0.5"));
        s.addresses
            .insert("airlock-sessions".into(), "172.30.0.9".into());
        assert_eq!(s.ip_on("airlock-sessions"), Some("172.30.0.9"));
    }
}
