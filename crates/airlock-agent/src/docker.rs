//! The Docker Engine API, through bollard: the only place that talks to
//! Docker.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, HostConfigLogConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
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

/// Where the runner binary is mounted in every container.
pub const RUNNER_IN_CONTAINER: &str = "/opt/airlock/airlock-runner";

/// The capabilities a session container keeps (all others are dropped):
/// what the runner needs as root at start-up to create the account `work`
/// (CHOWN, DAC_OVERRIDE, FOWNER: write its home and keys, hand them over),
/// to become `work` (SETUID, SETGID) and, as PID 1, to pass SIGTERM on to
/// the SSH server running as `work` (KILL). The SSH server and every login
/// run as `work` with no capabilities at all (setuid clears them).
pub const SESSION_CAPS: [&str; 6] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETUID",
    "SETGID",
    "KILL",
];

/// Container log bound: each session's log (json-file) is rotated at this
/// size…
pub const LOG_MAX_SIZE: &str = "10m";
/// …keeping this many files.
pub const LOG_MAX_FILE: &str = "3";

/// A connection to the local Docker engine.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
}

/// A session container found on the engine.
#[derive(Debug, Clone)]
pub struct Found {
    /// Container id.
    pub id: String,
    /// Session id label.
    pub session_id: String,
    /// Whether it is running.
    pub running: bool,
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

/// A command running in a container: its stdout as a stream, stdin as a
/// writer; [`Engine::exec_exit_code`] gives the result afterwards.
pub struct Exec {
    /// Exec id.
    pub id: String,
    /// stdout chunks (stderr is collected into the error on failure).
    pub output: Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
    /// stdin.
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl Engine {
    /// Connects to the engine (`DOCKER_HOST` or the local socket) and
    /// negotiates the API version.
    pub async fn connect() -> Result<Self, AgentError> {
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| h.starts_with("unix://"))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        // Streams (logs, exec output, image import) can run for hours; our
        // own deadlines guard the short calls.
        let docker = Docker::connect_with_unix(&socket, 24 * 3600, bollard::API_DEFAULT_VERSION)
            .map_err(|e| {
                AgentError::Docker(format!("cannot connect to Docker at {socket}: {e}"))
            })?;
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| AgentError::Docker(format!("Docker at {socket} does not answer")))?
            .map_err(|e| AgentError::Docker(format!("cannot talk to Docker at {socket}: {e}")))?;
        Ok(Self { docker })
    }

    /// The bollard handle.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// CPU cores and memory of the engine's host.
    pub async fn capacity(&self) -> Result<(f64, u64), AgentError> {
        let info = self.docker.info().await.map_err(AgentError::from)?;
        let cpus = info.ncpu.unwrap_or(1).max(1);
        let mem = u64::try_from(info.mem_total.unwrap_or(0)).unwrap_or(0);
        Ok((f64::from(i32::try_from(cpus).unwrap_or(1)), mem))
    }

    /// Whether an image is present.
    pub async fn has_image(&self, image: &str) -> Result<bool, AgentError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Tagged images on the engine.
    pub async fn images(&self) -> Result<Vec<(String, u64)>, AgentError> {
        let list = self
            .docker
            .list_images(Some(ListImagesOptionsBuilder::default().build()))
            .await?;
        let mut out = Vec::new();
        for img in list {
            for tag in img.repo_tags {
                if tag != "<none>:<none>" {
                    out.push((tag, u64::try_from(img.size).unwrap_or(0)));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Creates and starts a container.
    pub async fn create_and_start(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, AgentError> {
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        let created = self.docker.create_container(Some(opts), body).await?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let _ = self.remove(&created.id).await;
            return Err(e.into());
        }
        Ok(created.id)
    }

    /// Force-removes a container (no error if it is already gone).
    pub async fn remove(&self, id: &str) -> Result<(), AgentError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()), // removal already in progress
            Err(e) => Err(e.into()),
        }
    }

    /// Session containers of this agent.
    pub async fn list(&self, agent_id: &str) -> Result<Vec<Found>, AgentError> {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_owned(),
            vec![
                format!("{LABEL_AGENT}={agent_id}"),
                LABEL_SESSION.to_owned(),
            ],
        );
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self.docker.list_containers(Some(opts)).await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let session_id = c.labels.as_ref()?.get(LABEL_SESSION)?.clone();
                Some(Found {
                    id: c.id?,
                    session_id,
                    running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
                })
            })
            .collect())
    }

    /// State of a container: `(running, exit code, oom killed, IP address)`;
    /// `None` when it does not exist.
    pub async fn inspect(
        &self,
        id: &str,
    ) -> Result<Option<(bool, i64, bool, Option<String>)>, AgentError> {
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => {
                let state = c.state.unwrap_or_default();
                let ip = c.network_settings.and_then(|n| {
                    n.networks?
                        .into_values()
                        .find_map(|net| net.ip_address.filter(|ip| !ip.is_empty()))
                });
                Ok(Some((
                    state.running.unwrap_or(false),
                    state.exit_code.unwrap_or(0),
                    state.oom_killed.unwrap_or(false),
                    ip,
                )))
            }
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The container's log (stdout and stderr), optionally followed.
    pub fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<usize>,
    ) -> impl Stream<Item = Result<LogOutput, bollard::errors::Error>> + use<> {
        let tail = tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
        let opts = LogsOptionsBuilder::default()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        self.docker.logs(id, Some(opts))
    }

    /// Starts `cmd` in a container as `user` with stdin attached.
    pub async fn exec(&self, id: &str, user: &str, cmd: Vec<String>) -> Result<Exec, AgentError> {
        let created = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    cmd: Some(cmd),
                    user: Some(user.to_owned()),
                    working_dir: Some(airlock_proto::CONTAINER_HOME.to_owned()),
                    env: Some(vec![
                        "HOME=/home/work".to_owned(),
                        "LANG=C.UTF-8".to_owned(),
                    ]),
                    ..Default::default()
                },
            )
            .await?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: Some(256 * 1024),
                }),
            )
            .await?;
        match started {
            StartExecResults::Attached { output, input } => Ok(Exec {
                id: created.id,
                output,
                input,
            }),
            StartExecResults::Detached => {
                Err(AgentError::Docker("the exec started detached".to_owned()))
            }
        }
    }

    /// Exit code of a finished exec (waits briefly for it to be recorded).
    pub async fn exec_exit_code(&self, exec_id: &str) -> Result<i64, AgentError> {
        for _ in 0..100 {
            let info = self.docker.inspect_exec(exec_id).await?;
            if info.running != Some(true) {
                return Ok(info.exit_code.unwrap_or(-1));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(AgentError::Docker(format!("exec {exec_id} did not finish")))
    }

    /// Runs a command to completion, capturing its output.
    pub async fn exec_capture(
        &self,
        id: &str,
        user: &str,
        cmd: Vec<String>,
    ) -> Result<ExecOutput, AgentError> {
        let mut exec = self.exec(id, user, cmd).await?;
        drop(exec.input);
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Some(chunk) = exec.output.next().await {
            match chunk? {
                LogOutput::StdOut { message } => stdout.extend_from_slice(&message),
                LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                _ => {}
            }
        }
        let code = self.exec_exit_code(&exec.id).await?;
        Ok(ExecOutput {
            code,
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// The container's IP address: on `network` when it is attached to it
    /// (new sessions), else on whichever network it has (containers started
    /// before the session network existed).
    pub async fn ip(&self, id: &str, network: &str) -> Result<Option<String>, AgentError> {
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => {
                let mut networks = c
                    .network_settings
                    .and_then(|n| n.networks)
                    .unwrap_or_default();
                let preferred = networks
                    .remove(network)
                    .and_then(|n| n.ip_address.filter(|ip| !ip.is_empty()));
                Ok(preferred.or_else(|| {
                    networks
                        .into_values()
                        .find_map(|n| n.ip_address.filter(|ip| !ip.is_empty()))
                }))
            }
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Body of a session container.
pub struct ContainerSpec<'a> {
    pub image: &'a str,
    pub hostname: String,
    pub labels: HashMap<String, String>,
    pub env: Vec<String>,
    pub binds: Vec<String>,
    pub nano_cpus: i64,
    pub memory: i64,
    /// Docker network to attach to.
    pub network: String,
}

impl ContainerSpec<'_> {
    /// The Docker create body: the runner as entrypoint (PID 1), no
    /// published ports, on the session network, resource limits, no new
    /// privileges, only [`SESSION_CAPS`], a bounded log.
    pub fn into_body(self) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(self.image.to_owned()),
            hostname: Some(self.hostname),
            user: Some("0:0".to_owned()),
            entrypoint: Some(vec![RUNNER_IN_CONTAINER.to_owned(), "boot".to_owned()]),
            cmd: Some(Vec::new()),
            env: Some(self.env),
            labels: Some(self.labels),
            working_dir: Some(airlock_proto::CONTAINER_HOME.to_owned()),
            host_config: Some(HostConfig {
                binds: Some(self.binds),
                nano_cpus: Some(self.nano_cpus),
                memory: Some(self.memory),
                memory_swap: Some(self.memory),
                pids_limit: Some(8192),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                cap_drop: Some(vec!["ALL".to_owned()]),
                cap_add: Some(SESSION_CAPS.iter().map(|c| (*c).to_owned()).collect()),
                network_mode: Some(self.network),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".to_owned()),
                    config: Some(HashMap::from([
                        ("max-size".to_owned(), LOG_MAX_SIZE.to_owned()),
                        ("max-file".to_owned(), LOG_MAX_FILE.to_owned()),
                    ])),
                }),
                init: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Converts a log chunk into bytes.
pub fn chunk_bytes(out: LogOutput) -> Bytes {
    out.into_bytes()
}
