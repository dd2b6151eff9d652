//! The Docker Engine API, through bollard: the only code that talks to
//! Docker. [`Engine`] implements [`Runtime`] for the agent's logic and
//! imports the base image for [`crate::image`]; no bollard type leaves
//! this file.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use airlock_proto::agent::ImageInfo;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, ContainerSummaryStateEnum,
    DeviceRequest, HostConfig, HostConfigLogConfig, NetworkCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    InspectContainerOptions, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream, StreamExt};

use crate::error::AgentError;
use crate::runtime::{
    Capacity, Container, ContainerSpec, ContainerState, EventStream, Exec, LABEL_AGENT, LABEL_GPUS,
    LABEL_SESSION, LogChunk, LogMode, LogStream, RUNNER_IN_CONTAINER, Runtime, SessionNetwork,
};

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

/// Docker's network options for the session bridge.
const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
const OPT_BRIDGE: &str = "com.docker.network.bridge.name";
const OPT_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";

/// A connection to the local Docker engine.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
}

fn not_found(e: &bollard::errors::Error) -> bool {
    status_is(e, 404)
}

fn status_is(e: &bollard::errors::Error, status: u16) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code, .. } if *status_code == status
    )
}

impl From<bollard::errors::Error> for AgentError {
    fn from(e: bollard::errors::Error) -> Self {
        match e {
            bollard::errors::Error::DockerResponseServerError { message, .. } => {
                AgentError::Docker(message)
            }
            other => AgentError::Docker(other.to_string()),
        }
    }
}

impl From<LogOutput> for LogChunk {
    fn from(out: LogOutput) -> Self {
        match out {
            LogOutput::StdOut { message } => LogChunk::Stdout(message),
            LogOutput::StdErr { message } => LogChunk::Stderr(message),
            LogOutput::StdIn { message } | LogOutput::Console { message } => {
                LogChunk::Other(message)
            }
        }
    }
}

fn chunks<S>(stream: S) -> LogStream
where
    S: Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send + 'static,
{
    stream
        .map(|r| r.map(LogChunk::from).map_err(AgentError::from))
        .boxed()
}

/// A listed container as the agent sees it; `None` without a session label
/// or an id.
fn session_container(c: ContainerSummary) -> Option<Container> {
    let session_id = c.labels.as_ref()?.get(LABEL_SESSION)?.clone();
    let gpus = c
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_GPUS))
        .map(|g| {
            g.split(',')
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Some(Container {
        id: c.id?,
        session_id,
        running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
        gpus,
    })
}

/// The plain state of an inspected container.
fn container_state(c: ContainerInspectResponse) -> ContainerState {
    let state = c.state.unwrap_or_default();
    let addresses: BTreeMap<String, String> = c
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, net)| Some((name, net.ip_address.filter(|ip| !ip.is_empty())?)))
        .collect();
    ContainerState {
        running: state.running.unwrap_or(false),
        exit_code: state.exit_code.unwrap_or(0),
        oom_killed: state.oom_killed.unwrap_or(false),
        addresses,
    }
}

/// The Docker create body of a session container: the runner as entrypoint
/// (PID 1), no published ports, on the session network, resource limits,
/// no new privileges, only [`SESSION_CAPS`], a bounded log.
fn create_body(spec: ContainerSpec) -> ContainerCreateBody {
    // Whole GPUs by UUID, for the NVIDIA container runtime (what `docker
    // run --gpus '"device=UUID,…"'` sends).
    let device_requests = (!spec.gpus.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".to_owned()),
            device_ids: Some(spec.gpus.clone()),
            capabilities: Some(vec![vec!["gpu".to_owned()]]),
            ..Default::default()
        }]
    });
    ContainerCreateBody {
        image: Some(spec.image),
        hostname: Some(spec.hostname),
        user: Some("0:0".to_owned()),
        entrypoint: Some(vec![RUNNER_IN_CONTAINER.to_owned(), "boot".to_owned()]),
        cmd: Some(Vec::new()),
        env: Some(spec.env),
        labels: Some(spec.labels),
        working_dir: Some(airlock_proto::CONTAINER_HOME.to_owned()),
        host_config: Some(HostConfig {
            binds: Some(spec.binds),
            nano_cpus: Some(spec.nano_cpus),
            memory: Some(spec.memory),
            memory_swap: Some(spec.memory),
            pids_limit: Some(8192),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: Some(SESSION_CAPS.iter().map(|c| (*c).to_owned()).collect()),
            network_mode: Some(spec.network),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), LOG_MAX_SIZE.to_owned()),
                    ("max-file".to_owned(), LOG_MAX_FILE.to_owned()),
                ])),
            }),
            init: Some(false),
            device_requests,
            ..Default::default()
        }),
        ..Default::default()
    }
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

    /// Whether an image is present.
    pub async fn has_image(&self, image: &str) -> Result<bool, AgentError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Imports a root file system (a tar `stream`) as image `repo:tag`,
    /// with Dockerfile `changes` (`CMD …`, `ENV …`).
    pub async fn import_image<S>(
        &self,
        repo: &str,
        tag: &str,
        changes: Vec<String>,
        stream: S,
    ) -> Result<(), AgentError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let options = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(changes)
            .build();
        let mut progress =
            self.docker
                .create_image(Some(options), Some(bollard::body_try_stream(stream)), None);
        while let Some(item) = progress.next().await {
            item?;
        }
        Ok(())
    }

    async fn list_containers(&self, agent_id: &str) -> Result<Vec<Container>, AgentError> {
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
        Ok(list.into_iter().filter_map(session_container).collect())
    }

    async fn remove_container(&self, id: &str) -> Result<(), AgentError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) if status_is(&e, 409) => Ok(()), // removal already in progress
            Err(e) => Err(e.into()),
        }
    }

    async fn network(&self, name: &str, bridge: &str) -> Result<SessionNetwork, AgentError> {
        let existing = match self.docker.inspect_network(name, None).await {
            Ok(n) => Some(n),
            Err(e) if not_found(&e) => None,
            Err(e) => return Err(e.into()),
        };
        let network = match existing {
            Some(n) => n,
            None => {
                let options: HashMap<String, String> = [
                    (OPT_ICC, "false"),
                    (OPT_BRIDGE, bridge),
                    (OPT_MASQUERADE, "true"),
                ]
                .into_iter()
                // No bridge name: Docker picks br-<id>.
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
                let req = NetworkCreateRequest {
                    name: name.to_owned(),
                    driver: Some("bridge".to_owned()),
                    options: Some(options),
                    labels: Some(HashMap::from([(
                        "airlock.network".to_owned(),
                        "sessions".to_owned(),
                    )])),
                    ..Default::default()
                };
                let created = self.docker.create_network(req).await;
                match (created, self.docker.inspect_network(name, None).await) {
                    (Ok(_), Ok(n)) => {
                        tracing::info!(network = %name, %bridge, "created the session network");
                        n
                    }
                    // Another agent on this host created it at the same
                    // moment (Docker answers 409, or 403 "same bridge name").
                    (Err(_), Ok(n)) => n,
                    (Err(e), Err(_)) => {
                        return Err(AgentError::Docker(format!(
                            "cannot create the session network {name}: {e}"
                        )));
                    }
                    (Ok(_), Err(e)) => return Err(e.into()),
                }
            }
        };
        if network.driver.as_deref() != Some("bridge") {
            return Err(AgentError::Docker(format!(
                "the session network {name} exists but is not a bridge network"
            )));
        }
        let options = network.options.unwrap_or_default();
        let inter_container = options.get(OPT_ICC).map(String::as_str) != Some("false");
        // Docker names the bridge br-<first 12 digits of the id> unless told.
        let bridge = match options.get(OPT_BRIDGE) {
            Some(b) if !b.is_empty() => b.clone(),
            _ => {
                let id = network.id.unwrap_or_default();
                format!("br-{}", id.get(..12).unwrap_or(&id))
            }
        };
        Ok(SessionNetwork {
            bridge,
            inter_container,
        })
    }

    async fn start_exec(&self, id: &str, user: &str, cmd: Vec<String>) -> Result<Exec, AgentError> {
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
                output: chunks(output),
                input,
            }),
            StartExecResults::Detached => {
                Err(AgentError::Docker("the exec started detached".to_owned()))
            }
        }
    }
}

impl Runtime for Engine {
    fn capacity(&self) -> BoxFuture<'_, Result<Capacity, AgentError>> {
        async move {
            let info = self.docker.info().await.map_err(AgentError::from)?;
            let cpus = info.ncpu.unwrap_or(1).max(1);
            let mem = u64::try_from(info.mem_total.unwrap_or(0)).unwrap_or(0);
            Ok(Capacity {
                cpus: f64::from(i32::try_from(cpus).unwrap_or(1)),
                mem_bytes: mem,
            })
        }
        .boxed()
    }

    fn ensure_network<'a>(
        &'a self,
        name: &'a str,
        bridge: &'a str,
    ) -> BoxFuture<'a, Result<SessionNetwork, AgentError>> {
        self.network(name, bridge).boxed()
    }

    fn has_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<bool, AgentError>> {
        Engine::has_image(self, image).boxed()
    }

    fn images(&self) -> BoxFuture<'_, Result<Vec<ImageInfo>, AgentError>> {
        async move {
            let list = self
                .docker
                .list_images(Some(ListImagesOptionsBuilder::default().build()))
                .await?;
            let mut out = Vec::new();
            for img in list {
                for tag in img.repo_tags {
                    if tag != "<none>:<none>" {
                        out.push(ImageInfo {
                            name: tag,
                            size: u64::try_from(img.size).unwrap_or(0),
                        });
                    }
                }
            }
            out.sort_by(|a, b| (&a.name, a.size).cmp(&(&b.name, b.size)));
            Ok(out)
        }
        .boxed()
    }

    fn list<'a>(&'a self, agent_id: &'a str) -> BoxFuture<'a, Result<Vec<Container>, AgentError>> {
        self.list_containers(agent_id).boxed()
    }

    fn create_and_start(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<String, AgentError>> {
        async move {
            let opts = CreateContainerOptionsBuilder::default()
                .name(&spec.name)
                .build();
            let created = self
                .docker
                .create_container(Some(opts), create_body(spec))
                .await?;
            if let Err(e) = self.docker.start_container(&created.id, None).await {
                let _ = self.remove_container(&created.id).await;
                return Err(e.into());
            }
            Ok(created.id)
        }
        .boxed()
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), AgentError>> {
        self.remove_container(id).boxed()
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ContainerState>, AgentError>> {
        async move {
            match self
                .docker
                .inspect_container(id, None::<InspectContainerOptions>)
                .await
            {
                Ok(c) => Ok(Some(container_state(c))),
                Err(e) if not_found(&e) => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
        .boxed()
    }

    fn logs(&self, id: &str, mode: LogMode, tail: Option<usize>) -> LogStream {
        let tail = tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
        let opts = LogsOptionsBuilder::default()
            .follow(mode == LogMode::Follow)
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        chunks(self.docker.logs(id, Some(opts)))
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        user: &'a str,
        cmd: Vec<String>,
    ) -> BoxFuture<'a, Result<Exec, AgentError>> {
        self.start_exec(id, user, cmd).boxed()
    }

    fn exec_exit_code<'a>(&'a self, exec_id: &'a str) -> BoxFuture<'a, Result<i64, AgentError>> {
        async move {
            for _ in 0..100 {
                let info = self.docker.inspect_exec(exec_id).await?;
                if info.running != Some(true) {
                    return Ok(info.exit_code.unwrap_or(-1));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(AgentError::Docker(format!("exec {exec_id} did not finish")))
        }
        .boxed()
    }

    fn events(&self, agent_id: &str) -> EventStream {
        let mut filters = HashMap::new();
        filters.insert("type".to_owned(), vec!["container".to_owned()]);
        filters.insert(
            "label".to_owned(),
            vec![format!("{LABEL_AGENT}={agent_id}")],
        );
        filters.insert(
            "event".to_owned(),
            vec!["die".to_owned(), "destroy".to_owned(), "oom".to_owned()],
        );
        let opts = EventsOptionsBuilder::default().filters(&filters).build();
        self.docker
            .events(Some(opts))
            .map(|ev| ev.map(drop).map_err(AgentError::from))
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerState as DockerState, EndpointSettings, NetworkSettings};

    fn summary(labels: &[(&str, &str)], state: ContainerSummaryStateEnum) -> ContainerSummary {
        ContainerSummary {
            id: Some("c1".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            state: Some(state),
            ..Default::default()
        }
    }

    #[test]
    fn listing_keeps_only_session_containers() {
        let running = summary(
            &[(LABEL_SESSION, "s1"), (LABEL_AGENT, "a")],
            ContainerSummaryStateEnum::RUNNING,
        );
        assert_eq!(
            session_container(running),
            Some(Container {
                id: "c1".into(),
                session_id: "s1".into(),
                running: true,
                gpus: vec![],
            })
        );
        // The GPUs it holds come from its label.
        let with_gpus = summary(
            &[(LABEL_SESSION, "s1"), (LABEL_GPUS, "GPU-a,GPU-b")],
            ContainerSummaryStateEnum::RUNNING,
        );
        assert_eq!(
            session_container(with_gpus).map(|c| c.gpus),
            Some(vec!["GPU-a".to_owned(), "GPU-b".to_owned()])
        );
        let exited = summary(&[(LABEL_SESSION, "s1")], ContainerSummaryStateEnum::EXITED);
        assert_eq!(session_container(exited).map(|c| c.running), Some(false));
        // Without the session label (or an id) a container is not ours.
        assert_eq!(
            session_container(summary(
                &[(LABEL_AGENT, "a")],
                ContainerSummaryStateEnum::RUNNING
            )),
            None
        );
        let mut no_id = summary(&[(LABEL_SESSION, "s1")], ContainerSummaryStateEnum::RUNNING);
        no_id.id = None;
        assert_eq!(session_container(no_id), None);
    }

    #[test]
    fn inspection_becomes_plain_state() {
        let net = |ip: &str| EndpointSettings {
            ip_address: Some(ip.to_owned()),
            ..Default::default()
        };
        let c = ContainerInspectResponse {
            state: Some(DockerState {
                running: Some(false),
                exit_code: Some(137),
                oom_killed: Some(true),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(HashMap::from([
                    ("airlock-sessions".to_owned(), net("172.30.0.2")),
                    ("none".to_owned(), net("")),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = container_state(c);
        assert!(!s.running);
        assert_eq!(s.exit_code, 137);
        assert!(s.oom_killed);
        assert_eq!(
            s.addresses.into_iter().collect::<Vec<_>>(),
            [("airlock-sessions".to_owned(), "172.30.0.2".to_owned())]
        );
        assert_eq!(
            container_state(ContainerInspectResponse::default()),
            ContainerState::default()
        );
    }

    #[test]
    fn body_runs_the_runner_with_few_capabilities() {
        let body = create_body(ContainerSpec {
            name: "airlock-demo-12345678".into(),
            image: "airlock/base:bookworm".into(),
            hostname: "demo".into(),
            labels: HashMap::new(),
            env: vec![],
            binds: vec![],
            nano_cpus: 1_000_000_000,
            memory: 1 << 30,
            gpus: vec![],
            network: "airlock-sessions".into(),
        });
        assert_eq!(
            body.entrypoint,
            Some(vec![RUNNER_IN_CONTAINER.to_owned(), "boot".to_owned()])
        );
        let host = body.host_config.unwrap_or_default();
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.cap_add.map(|c| c.len()), Some(SESSION_CAPS.len()));
        assert_eq!(host.memory_swap, Some(1 << 30));
        assert_eq!(host.port_bindings, None);
        assert_eq!(host.device_requests, None);
    }

    #[test]
    fn gpus_are_a_device_request_by_uuid() {
        let body = create_body(ContainerSpec {
            name: "airlock-train-12345678".into(),
            image: "airlock/base:bookworm".into(),
            hostname: "train".into(),
            labels: HashMap::new(),
            env: vec![],
            binds: vec![],
            nano_cpus: 1_000_000_000,
            memory: 1 << 30,
            gpus: vec!["GPU-aaaa".into(), "GPU-bbbb".into()],
            network: "airlock-sessions".into(),
        });
        let host = body.host_config.unwrap_or_default();
        assert_eq!(
            host.device_requests,
            Some(vec![DeviceRequest {
                driver: Some("nvidia".into()),
                count: None,
                device_ids: Some(vec!["GPU-aaaa".into(), "GPU-bbbb".into()]),
                capabilities: Some(vec![vec!["gpu".into()]]),
                options: None,
            }])
        );
    }
}
