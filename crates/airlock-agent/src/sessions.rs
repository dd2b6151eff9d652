//! Session containers: create, watch until the runner is ready, destroy,
//! re-adopt after a restart, and report.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_proto::agent::{ContainerPhase, CreateContainer, Heartbeat, Mount, TunnelOrigin};
use airlock_proto::recipes::readiness;
use airlock_tunnel::resume::{Link, LinkRx, LinkTx};
use futures_util::StreamExt;
use http::StatusCode;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::reconcile::{Entry, Observed, reconcile};
use crate::runtime::{
    Capacity, ContainerSpec, LABEL_AGENT, LABEL_GPUS, LABEL_NAME, LABEL_OWNER, LABEL_SESSION,
    LogChunk, LogMode, RUNNER_IN_CONTAINER, Runtime,
};

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    runner: PathBuf,
    /// The canonical folder storage root, if any.
    storage_root: Option<PathBuf>,
    capacity: Capacity,
    /// This node's NVIDIA GPUs (found once, at start).
    gpus: Vec<airlock_proto::agent::Gpu>,
    entries: Mutex<HashMap<String, Entry>>,
    /// Container id → IP address (fixed while a container runs).
    addresses: Mutex<HashMap<String, String>>,
    changed: Notify,
    /// Every task the agent spawns ([`Agent::spawn`]); shutdown waits for
    /// them.
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Runner events waiting to go to the gateway.
    audit: Arc<crate::audit::Queue>,
    /// Resumable tunnels (detached ones wait out their grace period here).
    pub(crate) tunnels: crate::tunnels::Tunnels,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Copies the runner into the agent's data directory under its content hash,
/// so that rebuilding or replacing the original never changes the binary
/// under running containers.
fn install_runner(src: &PathBuf, data_dir: &std::path::Path) -> Result<PathBuf, AgentError> {
    let bytes = std::fs::read(src).map_err(|e| {
        AgentError::invalid(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the runner binary {}: {e}", src.display()),
        )
    })?;
    let hash = hex::encode(&Sha256::digest(&bytes)[..8]);
    let dir = data_dir.join("runner");
    std::fs::create_dir_all(&dir)?;
    let dst = dir.join(format!("airlock-runner-{hash}"));
    if !dst.exists() {
        let tmp = dir.join(format!(".tmp-{hash}-{}", std::process::id()));
        std::fs::write(&tmp, &bytes)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &dst)?;
    }
    Ok(dst)
}

/// Valid RFC 1123 hostname from a session name.
fn hostname(name: &str) -> String {
    let h: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let h = h.trim_matches('-').to_owned();
    if h.is_empty() {
        "session".to_owned()
    } else {
        h
    }
}

impl Agent {
    /// Prepares the agent and re-adopts containers left by a previous run.
    pub async fn start(
        config: AgentConfig,
        runtime: Arc<dyn Runtime>,
        shutdown: CancellationToken,
    ) -> Result<Self, AgentError> {
        let runner = install_runner(&config.runner, &config.data_dir)?;
        let storage_root = match &config.storage_root {
            Some(root) => Some(std::fs::canonicalize(root).map_err(|e| {
                AgentError::invalid(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot use {} as the folder storage root: {e}", root.display()),
                )
                .with_hint("pass the gateway's folder storage directory (the same path on this node) with --storage DIR")
            })?),
            None => None,
        };
        let capacity = runtime.capacity().await?;
        crate::firewall::prepare(runtime.as_ref(), &config.network).await?;
        let gpus = match crate::gpu::detect().await {
            Ok(g) => {
                tracing::info!(count = g.len(), models = ?g.iter().map(|g| &g.name).collect::<Vec<_>>(), "NVIDIA GPUs found");
                g
            }
            Err(why) => {
                tracing::info!("{why}; sessions here get no GPU");
                Vec::new()
            }
        };
        let agent = Self {
            storage_root,
            gpus,
            capacity: Capacity {
                cpus: capacity.cpus * config.cpu_overcommit,
                mem_bytes: capacity.mem_bytes,
            },
            config,
            runtime,
            runner,
            entries: Mutex::new(HashMap::new()),
            addresses: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            tasks: TaskTracker::new(),
            shutdown,
            audit: Arc::new(crate::audit::Queue::default()),
            tunnels: crate::tunnels::Tunnels::default(),
        };
        agent.adopt().await?;
        Ok(agent)
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The container engine.
    pub fn runtime(&self) -> &dyn Runtime {
        self.runtime.as_ref()
    }

    /// Runs `task` in the background, tracked: shutdown
    /// ([`Agent::wait_tasks`]) waits for it. Tasks that could run for long
    /// end at shutdown themselves (or use [`Agent::spawn_until_shutdown`]).
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// [`Agent::spawn`], dropping `task` when the agent shuts down.
    pub fn spawn_until_shutdown<F>(&self, task: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = task => {}
                () = shutdown.cancelled() => {}
            }
        })
    }

    /// Waits (at most 10 s) for the background tasks to finish.
    pub async fn wait_tasks(&self) {
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
    }

    /// Resolves when a container changed state (or someone asked for a
    /// report).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Runner events waiting to go to the gateway.
    pub fn audit(&self) -> &Arc<crate::audit::Queue> {
        &self.audit
    }

    /// Asks the link to report now.
    pub fn poke(&self) {
        self.changed.notify_one();
    }

    async fn adopt(&self) -> Result<(), AgentError> {
        let found = self.runtime.list(&self.config.agent_id).await?;
        for c in found {
            let host_key = if c.running {
                self.scan_host_key(&c.id).await
            } else {
                None
            };
            let phase = if c.running {
                ContainerPhase::Running
            } else {
                ContainerPhase::Exited
            };
            tracing::info!(session = %c.session_id, container = %c.id, ?phase, "re-adopted a session container");
            if c.running {
                // New lines only: what was logged before is not re-sent.
                let logs = self.runtime.logs(&c.id, LogMode::Follow, Some(0));
                self.spawn(crate::audit::follow(
                    self.audit.clone(),
                    c.session_id.clone(),
                    logs,
                    String::new(),
                    self.shutdown.clone(),
                ));
            }
            lock(&self.entries).insert(
                c.session_id.clone(),
                Entry {
                    phase,
                    reason: None,
                    host_key,
                    container_id: Some(c.id),
                    since: Instant::now(),
                    gpus: c.gpus,
                },
            );
        }
        Ok(())
    }

    async fn scan_host_key(&self, container: &str) -> Option<String> {
        let mut logs = self.runtime.logs(container, LogMode::Existing, None);
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = logs.next().await {
            if let LogChunk::Stdout(message) = chunk {
                buf.extend_from_slice(&message);
            }
        }
        let logged = String::from_utf8_lossy(&buf)
            .lines()
            .find_map(readiness::host_key)
            .map(|k| k.trim().to_owned());
        if logged.is_some() {
            return logged;
        }
        // The log is bounded: after enough output the line has rotated
        // away; the runner keeps the key in its root-owned state directory.
        let out = self
            .runtime
            .exec_capture(
                container,
                "0:0",
                vec!["cat".to_owned(), "/var/lib/airlock/host_key.pub".to_owned()],
            )
            .await
            .ok()?;
        if out.code != 0 {
            return None;
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(|k| k.trim().to_owned())
            .filter(|k| k.starts_with("ssh-"))
    }

    /// Starts creating a session container; returns once the request is
    /// accepted (the rest is reported through heartbeats).
    pub async fn create(self: &Arc<Self>, spec: CreateContainer) -> Result<(), AgentError> {
        {
            let entries = lock(&self.entries);
            if let Some(e) = entries.get(&spec.session_id)
                && matches!(e.phase, ContainerPhase::Preparing | ContainerPhase::Running)
            {
                return Ok(());
            }
        }
        if !image_allowed(&self.config.allowed_images, &spec.image) {
            tracing::warn!(session = %spec.session_id, image = %spec.image, "refused an image that is not allowed on this node");
            return Err(AgentError::invalid(
                StatusCode::FORBIDDEN,
                format!(
                    "image {:?} is not allowed on node {}",
                    spec.image, self.config.agent_id
                ),
            )
            .with_hint(format!(
                "use one of the images the administrator allows ({}); `airlock session images` lists them",
                self.config.allowed_images.join(", ")
            )));
        }
        let mut spec = spec;
        spec.mounts = self.check_mounts(&spec)?;
        if !self.runtime.has_image(&spec.image).await? {
            return Err(AgentError::invalid(
                StatusCode::BAD_REQUEST,
                format!(
                    "image {:?} is not available on node {}",
                    spec.image, self.config.agent_id
                ),
            )
            .with_hint("list the images with `airlock session images`, build the default one with `airlockd image build-base`, or load yours with `docker load`"));
        }
        let gpus = {
            // Chosen and recorded under one lock: two creates never get the
            // same device.
            let mut entries = lock(&self.entries);
            let gpus = self.pick_gpus(&entries, spec.gpus)?;
            let mut entry = Entry::preparing(Instant::now());
            entry.gpus.clone_from(&gpus);
            entries.insert(spec.session_id.clone(), entry);
            gpus
        };
        let this = self.clone();
        self.spawn(async move {
            let id = spec.session_id.clone();
            let result = tokio::select! {
                r = this.create_container(&spec, gpus) => r,
                _ = this.shutdown.cancelled() => Err(AgentError::Docker("the agent is shutting down".into())),
            };
            match result {
                Ok(()) => tracing::info!(session = %id, "session container ready"),
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "session container failed");
                    let cid = {
                        let mut entries = lock(&this.entries);
                        let entry = entries.get_mut(&id);
                        entry.map(|en| {
                            en.phase = ContainerPhase::Failed;
                            en.reason = Some(e.to_string());
                            en.since = Instant::now();
                            en.container_id.clone()
                        })
                    };
                    if let Some(Some(cid)) = cid {
                        let _ = this.runtime.remove(&cid).await;
                    }
                }
            }
            this.poke();
        });
        Ok(())
    }

    /// `n` GPUs no preparing or running session holds, or why not.
    fn pick_gpus(
        &self,
        entries: &HashMap<String, Entry>,
        n: u32,
    ) -> Result<Vec<String>, AgentError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let held: Vec<String> = entries
            .values()
            .filter(|e| matches!(e.phase, ContainerPhase::Preparing | ContainerPhase::Running))
            .flat_map(|e| e.gpus.iter().cloned())
            .collect();
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        crate::gpu::pick(&self.gpus, &held, n).ok_or_else(|| {
            let free = self.gpus.len().saturating_sub(held.len());
            AgentError::invalid(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "node {} has {free} free GPU{} of {}; {n} asked",
                    self.config.agent_id,
                    if free == 1 { "" } else { "s" },
                    self.gpus.len()
                ),
            )
            .with_hint("ask for fewer (--gpus), or try again when a GPU session ends")
        })
    }

    async fn create_container(
        &self,
        spec: &CreateContainer,
        gpus: Vec<String>,
    ) -> Result<(), AgentError> {
        let mut labels: HashMap<String, String> = [
            (LABEL_SESSION, spec.session_id.as_str()),
            (LABEL_AGENT, self.config.agent_id.as_str()),
            (LABEL_OWNER, spec.owner_id.as_str()),
            (LABEL_NAME, spec.session_name.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in &self.config.extra_labels {
            labels.insert(k.clone(), v.clone());
        }
        if !gpus.is_empty() {
            labels.insert(LABEL_GPUS.to_owned(), gpus.join(","));
        }
        let mut binds = vec![format!(
            "{}:{RUNNER_IN_CONTAINER}:ro",
            self.runner.display()
        )];
        for m in &spec.mounts {
            binds.push(format!(
                "{}:{}:{}",
                m.host_path,
                m.container_path,
                if m.read_only { "ro" } else { "rw" }
            ));
        }
        let mounts: Vec<&str> = spec
            .mounts
            .iter()
            .map(|m| m.container_path.as_str())
            .collect();
        // The session's own variables first (checked again here: the agent
        // does not trust a spec to keep away from airlock's names).
        let mut env: Vec<String> = spec
            .env
            .iter()
            .filter(|(k, v)| airlock_proto::validate::check_env_var(k, v).is_ok())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.extend([
            format!("LOCAL_USER_ID={}", self.config.uid),
            format!("LOCAL_GROUP_ID={}", self.config.gid),
            format!("AIRLOCK_SESSION_ID={}", spec.session_id),
            format!("AIRLOCK_SESSION_NAME={}", spec.session_name),
            format!(
                "AIRLOCK_AUTHORIZED_KEYS={}",
                spec.authorized_keys.join("\n")
            ),
            format!("AIRLOCK_MOUNTS={}", mounts.join(",")),
        ]);
        if !self.config.runner_audit {
            env.push("AIRLOCK_AUDIT=off".to_owned());
        }
        if !gpus.is_empty() {
            // Seen by logins too (the image's environment is theirs).
            env.push(format!(
                "CUDA_VISIBLE_DEVICES={}",
                crate::gpu::visible_devices(gpus.len())
            ));
        }
        let short = spec.session_id.get(..8).unwrap_or(&spec.session_id);
        let name = format!("airlock-{}-{short}", hostname(&spec.session_name));
        let container = ContainerSpec {
            name,
            image: spec.image.clone(),
            hostname: hostname(&spec.session_name),
            labels,
            env,
            binds,
            nano_cpus: (spec.cpu * 1e9) as i64,
            memory: i64::try_from(spec.mem_bytes).unwrap_or(i64::MAX),
            gpus,
            network: self.config.network.network.clone(),
        };
        let cid = self.runtime.create_and_start(container).await?;
        if let Some(e) = lock(&self.entries).get_mut(&spec.session_id) {
            e.container_id = Some(cid.clone());
        }
        let host_key = tokio::time::timeout(
            self.config.ready_timeout,
            self.wait_ready(&cid, &spec.session_id),
        )
        .await
        .map_err(|_| {
            AgentError::Docker(format!(
                "the session did not become ready within {} s",
                self.config.ready_timeout.as_secs()
            ))
        })??;
        let mut entries = lock(&self.entries);
        if let Some(e) = entries.get_mut(&spec.session_id) {
            e.phase = ContainerPhase::Running;
            e.host_key = Some(host_key);
            e.since = Instant::now();
        }
        Ok(())
    }

    /// Follows the container log until the runner says it is ready; returns
    /// the host key it printed.
    async fn wait_ready(&self, cid: &str, session_id: &str) -> Result<String, AgentError> {
        let mut logs = self.runtime.logs(cid, LogMode::Follow, None);
        let mut pending = String::new();
        let mut tail: Vec<String> = Vec::new();
        let mut host_key = None;
        while let Some(chunk) = logs.next().await {
            let chunk = chunk?;
            let is_stdout = matches!(chunk, LogChunk::Stdout(_));
            pending.push_str(&String::from_utf8_lossy(chunk.bytes()));
            while let Some(pos) = pending.find('\n') {
                let line: String = pending.drain(..=pos).collect();
                let line = line.trim_end();
                if is_stdout && let Some(k) = readiness::host_key(line) {
                    host_key = Some(k.trim().to_owned());
                } else if is_stdout && line == readiness::READY {
                    let key = host_key.ok_or_else(|| {
                        AgentError::Docker("the runner did not report its host key".into())
                    })?;
                    // From here on the log carries the runner's audit events.
                    self.spawn(crate::audit::follow(
                        self.audit.clone(),
                        session_id.to_owned(),
                        logs,
                        std::mem::take(&mut pending),
                        self.shutdown.clone(),
                    ));
                    return Ok(key);
                } else {
                    tail.push(line.to_owned());
                    if tail.len() > 8 {
                        tail.remove(0);
                    }
                }
            }
        }
        let exit = self.runtime.inspect(cid).await?.map_or(-1, |s| s.exit_code);
        Err(AgentError::Docker(format!(
            "the container exited (code {exit}) before the SSH server started: {}",
            tail.join(" | ")
        )))
    }

    /// Checks every requested mount: the host side must be a directory
    /// that is a direct child of the storage root (no symlink anywhere),
    /// the container side `/home/work/<valid folder name>`, each used once.
    /// Returns the mounts with their canonical host paths.
    fn check_mounts(&self, spec: &CreateContainer) -> Result<Vec<Mount>, AgentError> {
        let mut out: Vec<Mount> = Vec::with_capacity(spec.mounts.len());
        for m in &spec.mounts {
            let checked = check_mount(self.storage_root.as_deref(), m).inspect_err(|e| {
                tracing::warn!(
                    session = %spec.session_id,
                    host_path = %m.host_path,
                    container_path = %m.container_path,
                    error = %e,
                    "refused a mount"
                );
            })?;
            if out.iter().any(|o| {
                o.container_path == checked.container_path || o.host_path == checked.host_path
            }) {
                return Err(AgentError::invalid(
                    StatusCode::BAD_REQUEST,
                    format!("folder {} is mounted twice", m.container_path),
                ));
            }
            out.push(checked);
        }
        Ok(out)
    }

    /// Removes a session container.
    pub async fn destroy(&self, session_id: &str) -> Result<(), AgentError> {
        self.tunnels.drop_session(session_id);
        let cid = lock(&self.entries)
            .remove(session_id)
            .and_then(|e| e.container_id);
        let ids: Vec<String> = match cid {
            Some(c) => vec![c],
            None => self
                .runtime
                .list(&self.config.agent_id)
                .await?
                .into_iter()
                .filter(|f| f.session_id == session_id)
                .map(|f| f.id)
                .collect(),
        };
        for id in ids {
            self.runtime.remove(&id).await?;
        }
        tracing::info!(session = %session_id, "session container removed");
        self.poke();
        Ok(())
    }

    /// The container of a running session.
    pub fn container_of(&self, session_id: &str) -> Result<String, AgentError> {
        lock(&self.entries)
            .get(session_id)
            .filter(|e| e.phase == ContainerPhase::Running)
            .and_then(|e| e.container_id.clone())
            .ok_or_else(|| AgentError::NoSession(session_id.to_owned()))
    }

    /// Ties the runner connection `tcp` to the client connection it serves,
    /// so the runner's audit events name it (`audit::Queue::record_origin`).
    pub fn note_origin(
        &self,
        session_id: &str,
        tcp: &tokio::net::TcpStream,
        origin: Option<&TunnelOrigin>,
    ) {
        if let (Some(o), Ok(local)) = (origin, tcp.local_addr()) {
            self.audit.record_origin(session_id, local, o.clone());
        }
    }

    /// A TCP connection to the SSH server of a running session.
    ///
    /// "No route to host" is tried once more, with the address looked up
    /// again: the host's neighbour (ARP) resolution of a container that has
    /// just started, or of an address a removed container held a moment
    /// ago, can fail once (seen once in CI: the first `ssh` to a new
    /// session), and the next attempt resolves afresh.
    pub async fn connect(&self, session_id: &str) -> Result<tokio::net::TcpStream, AgentError> {
        match self.connect_once(session_id).await {
            Err(ConnectError::Unreachable(e)) => {
                tracing::debug!(session = %session_id, error = %e, "runner unreachable; trying again");
                self.connect_once(session_id)
                    .await
                    .map_err(AgentError::from)
            }
            other => other.map_err(AgentError::from),
        }
    }

    async fn connect_once(&self, session_id: &str) -> Result<tokio::net::TcpStream, ConnectError> {
        let cid = self.container_of(session_id)?;
        let cached = lock(&self.addresses).get(&cid).cloned();
        let ip = match cached {
            Some(ip) => ip,
            None => {
                let ip = self
                    .runtime
                    .inspect(&cid)
                    .await?
                    .and_then(|s| s.ip_on(&self.config.network.network).map(str::to_owned))
                    .ok_or_else(|| {
                        AgentError::Docker("the session container has no IP address".into())
                    })?;
                lock(&self.addresses).insert(cid.clone(), ip.clone());
                ip
            }
        };
        let target = format!("{ip}:{}", airlock_proto::SSHD_PORT);
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(&target),
        )
        .await
        .map_err(|_| AgentError::Docker(format!("connecting to {target} timed out")))?
        .map_err(|e| {
            lock(&self.addresses).remove(&cid);
            let unreachable = e.kind() == std::io::ErrorKind::HostUnreachable;
            let err = AgentError::Docker(format!(
                "cannot connect to the session's SSH server at {target}: {e}"
            ));
            if unreachable {
                ConnectError::Unreachable(err)
            } else {
                ConnectError::Other(err)
            }
        })?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// The full report for a heartbeat: the engine's listing, plus an
    /// inspection of each stopped container and the host key of running
    /// ones the agent does not know, reconciled with the agent's entries
    /// (the pure `reconcile::reconcile`).
    pub async fn report(&self) -> Result<Heartbeat, AgentError> {
        // Entries that changed after this instant may not be in the listing
        // yet (a container created meanwhile): they are not "removed".
        let listed_at = Instant::now();
        let found = self.runtime.list(&self.config.agent_id).await?;
        let mut observed = Vec::with_capacity(found.len());
        for container in found {
            let known = lock(&self.entries).contains_key(&container.session_id);
            let mut o = Observed {
                state: None,
                host_key: None,
                container,
            };
            if !o.container.running {
                o.state = self.runtime.inspect(&o.container.id).await?;
            } else if !known {
                o.host_key = self.scan_host_key(&o.container.id).await;
            }
            observed.push(o);
        }
        let containers = reconcile(
            &mut lock(&self.entries),
            observed,
            listed_at,
            Instant::now(),
        );
        Ok(Heartbeat {
            agent_id: self.config.agent_id.clone(),
            url: self.config.advertise_url.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            cpu: self.capacity.cpus,
            mem_bytes: self.capacity.mem_bytes,
            gpus: self.gpus.clone(),
            load: crate::load::read(),
            containers,
            partial: false,
        })
    }

    /// Serves one attachment of a resumable tunnel to session `session_id`
    /// over `link` (the embedded agent of `airlockd up`: the client's
    /// WebSocket itself, in the caller's task); returns when the
    /// attachment ends, and the caller closes the link.
    pub async fn attach<Rx: LinkRx, Tx: LinkTx>(
        self: &Arc<Self>,
        session_id: &str,
        origin: Option<&TunnelOrigin>,
        link: &mut Link<Rx, Tx>,
    ) {
        crate::tunnels::serve_link(self, session_id, link, origin).await;
    }
}

/// Pokes the link whenever the engine reports that one of our containers
/// died or was removed, so the gateway learns within a second.
pub async fn watch_events(agent: Arc<Agent>, shutdown: CancellationToken) {
    loop {
        let mut events = agent.runtime.events(&agent.config.agent_id);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.next() => match ev {
                    Some(Ok(())) => agent.poke(),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "the engine's event stream failed; reconnecting");
                        break;
                    }
                    None => break,
                },
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Whether `image` matches one of the allowed globs (none: any image).
/// A name without a tag also matches as `name:latest`.
pub fn image_allowed(globs: &[String], image: &str) -> bool {
    if globs.is_empty() {
        return true;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    let with_tag = if last.contains(':') || last.contains('@') {
        None
    } else {
        Some(format!("{image}:latest"))
    };
    globs.iter().any(|g| {
        glob_match(g.as_bytes(), image.as_bytes())
            || with_tag
                .as_deref()
                .is_some_and(|t| glob_match(g.as_bytes(), t.as_bytes()))
    })
}

/// `*` (any run, including `/`) and `?` (one byte); everything else
/// literal.
fn glob_match(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pat.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

fn refuse(message: String) -> AgentError {
    AgentError::invalid(StatusCode::FORBIDDEN, message).with_hint(
        "the agent mounts only folders directly under its storage root, at /home/work/<folder name>",
    )
}

/// Validates one mount against the storage root (see
/// [`Agent::check_mounts`]).
fn check_mount(root: Option<&Path>, m: &Mount) -> Result<Mount, AgentError> {
    let Some(root) = root else {
        return Err(AgentError::invalid(
            StatusCode::FORBIDDEN,
            format!(
                "this node has no folder storage configured; cannot mount {}",
                m.container_path
            ),
        )
        .with_hint("start the agent with --storage DIR (the gateway's folder storage, at the same path on this node)"));
    };
    let name = m
        .container_path
        .strip_prefix(airlock_proto::CONTAINER_HOME)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| {
            refuse(format!(
                "mount point {:?} is not under /home/work",
                m.container_path
            ))
        })?;
    airlock_proto::validate::check_folder_name(name)
        .map_err(|e| refuse(format!("mount point {:?}: {e}", m.container_path)))?;
    let host = Path::new(&m.host_path);
    let plain = host.is_absolute()
        && host
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain || host.parent() != Some(root) {
        return Err(refuse(format!(
            "{} is not a folder in this node's storage",
            m.host_path
        )));
    }
    let meta = std::fs::symlink_metadata(host).map_err(|e| {
        AgentError::invalid(
            StatusCode::BAD_REQUEST,
            format!("folder storage {} is not reachable: {e}", m.host_path),
        )
    })?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err(refuse(format!("{} is not a plain directory", m.host_path)));
    }
    // No symlink anywhere on the way (the root is canonical already).
    let canonical = std::fs::canonicalize(host).map_err(|e| {
        AgentError::invalid(
            StatusCode::BAD_REQUEST,
            format!("folder storage {} is not reachable: {e}", m.host_path),
        )
    })?;
    if canonical != host {
        return Err(refuse(format!("{} is not a plain directory", m.host_path)));
    }
    Ok(Mount {
        host_path: canonical.display().to_string(),
        container_path: format!("{}/{name}", airlock_proto::CONTAINER_HOME),
        read_only: m.read_only,
    })
}

/// Why one attempt to reach a runner failed.
enum ConnectError {
    /// No route to the container (worth one more try).
    Unreachable(AgentError),
    /// Anything else.
    Other(AgentError),
}

impl From<AgentError> for ConnectError {
    fn from(e: AgentError) -> Self {
        ConnectError::Other(e)
    }
}

impl From<ConnectError> for AgentError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Unreachable(e) | ConnectError::Other(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hostname;

    #[test]
    fn hostnames() {
        assert_eq!(hostname("demo"), "demo");
        assert_eq!(hostname("My_Session.1"), "my-session-1");
        assert_eq!(hostname("___"), "session");
    }

    #[test]
    fn image_globs() {
        use super::image_allowed;
        assert!(image_allowed(&[], "anything:1"));
        let g = vec![
            "airlock/*".to_owned(),
            "python:3.1?".to_owned(),
            "ubuntu:latest".to_owned(),
        ];
        assert!(image_allowed(&g, "airlock/base:bookworm"));
        assert!(image_allowed(&g, "python:3.12"));
        assert!(!image_allowed(&g, "python:3.9"));
        assert!(image_allowed(&g, "ubuntu"));
        assert!(!image_allowed(&g, "ubuntu:22.04"));
        assert!(!image_allowed(&g, "evil/airlock/x"));
        assert!(!image_allowed(&g, "sha256:0123"));
    }

    #[test]
    fn mounts_stay_in_the_storage_root() {
        use super::check_mount;
        use airlock_proto::agent::Mount;
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("f1")).unwrap();
        std::fs::create_dir_all(root.join("f2/deeper")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("f1"), root.join("sibling")).unwrap();
        let m = |host: &str, inside: &str| Mount {
            host_path: host.to_owned(),
            container_path: inside.to_owned(),
            read_only: false,
        };
        let r = |p: &str| root.join(p).display().to_string();
        let ok = check_mount(Some(&root), &m(&r("f1"), "/home/work/data")).unwrap();
        assert_eq!(ok.host_path, r("f1"));
        for (host, inside) in [
            ("/etc".to_owned(), "/home/work/data"),
            (r("link"), "/home/work/data"),
            (r("sibling"), "/home/work/data"),
            (r("f2/deeper"), "/home/work/data"),
            (r("f1/../f2"), "/home/work/data"),
            (r("missing"), "/home/work/data"),
            (r(""), "/home/work/data"),
            (r("f1"), "/etc/cron.d"),
            (r("f1"), "/home/work/a/b"),
            (r("f1"), "/home/work/.."),
            (r("f1"), "/home/work/"),
        ] {
            let e = check_mount(Some(&root), &m(&host, inside));
            assert!(e.is_err(), "{host} -> {inside} must be refused");
        }
        assert!(check_mount(None, &m(&r("f1"), "/home/work/data")).is_err());
    }
}

/// The agent's logic against a fake engine, through the [`Runtime`] seam.
#[cfg(test)]
mod fake_runtime_tests {
    use std::sync::{Arc, Mutex};

    use airlock_proto::agent::{ContainerPhase, ImageInfo};
    use airlock_proto::recipes::readiness;
    use futures_util::future::BoxFuture;
    use futures_util::{FutureExt, StreamExt};
    use tokio_util::sync::CancellationToken;

    use super::Agent;
    use crate::config::{AgentConfig, NetworkPolicy};
    use crate::error::AgentError;
    use crate::runtime::{
        Capacity, Container, ContainerSpec, ContainerState, EventStream, Exec, LogChunk, LogMode,
        LogStream, Runtime, SessionNetwork,
    };

    #[derive(Debug, Default)]
    struct Fake {
        /// (container, its state, its log).
        containers: Mutex<Vec<(Container, ContainerState, String)>>,
        inspected: Mutex<Vec<String>>,
        removed: Mutex<Vec<String>>,
    }

    impl Fake {
        fn add(&self, session: &str, running: bool, exit_code: i64, log: &str) {
            let c = Container {
                id: format!("c-{session}"),
                session_id: session.to_owned(),
                running,
                gpus: Vec::new(),
            };
            let state = ContainerState {
                running,
                exit_code,
                ..ContainerState::default()
            };
            self.containers
                .lock()
                .unwrap()
                .push((c, state, log.to_owned()));
        }

        fn drop_container(&self, id: &str) {
            self.containers
                .lock()
                .unwrap()
                .retain(|(c, _, _)| c.id != id);
        }
    }

    fn unsupported<T: Send + 'static>() -> BoxFuture<'static, Result<T, AgentError>> {
        async { Err(AgentError::Docker("not in the fake".into())) }.boxed()
    }

    impl Runtime for Fake {
        fn capacity(&self) -> BoxFuture<'_, Result<Capacity, AgentError>> {
            async {
                Ok(Capacity {
                    cpus: 2.0,
                    mem_bytes: 1 << 30,
                })
            }
            .boxed()
        }
        fn ensure_network<'a>(
            &'a self,
            _: &'a str,
            bridge: &'a str,
        ) -> BoxFuture<'a, Result<SessionNetwork, AgentError>> {
            async move {
                Ok(SessionNetwork {
                    bridge: bridge.to_owned(),
                    inter_container: false,
                })
            }
            .boxed()
        }
        fn has_image<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<bool, AgentError>> {
            async { Ok(true) }.boxed()
        }
        fn images(&self) -> BoxFuture<'_, Result<Vec<ImageInfo>, AgentError>> {
            async { Ok(Vec::new()) }.boxed()
        }
        fn list<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<Container>, AgentError>> {
            let list = self.containers.lock().unwrap();
            let found = list.iter().map(|(c, _, _)| c.clone()).collect();
            async move { Ok(found) }.boxed()
        }
        fn create_and_start(&self, _: ContainerSpec) -> BoxFuture<'_, Result<String, AgentError>> {
            unsupported()
        }
        fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), AgentError>> {
            self.drop_container(id);
            self.removed.lock().unwrap().push(id.to_owned());
            async { Ok(()) }.boxed()
        }
        fn inspect<'a>(
            &'a self,
            id: &'a str,
        ) -> BoxFuture<'a, Result<Option<ContainerState>, AgentError>> {
            self.inspected.lock().unwrap().push(id.to_owned());
            let list = self.containers.lock().unwrap();
            let state = list
                .iter()
                .find(|(c, _, _)| c.id == id)
                .map(|(_, s, _)| s.clone());
            async move { Ok(state) }.boxed()
        }
        fn logs(&self, id: &str, mode: LogMode, tail: Option<usize>) -> LogStream {
            let list = self.containers.lock().unwrap();
            let log = list
                .iter()
                .find(|(c, _, _)| c.id == id)
                .map(|(_, _, l)| l.clone())
                .unwrap_or_default();
            // Following from the end (re-adoption) sees nothing old.
            let log = if mode == LogMode::Follow && tail == Some(0) {
                String::new()
            } else {
                log
            };
            futures_util::stream::iter([Ok(LogChunk::Stdout(log.into()))]).boxed()
        }
        fn exec<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: Vec<String>,
        ) -> BoxFuture<'a, Result<Exec, AgentError>> {
            unsupported()
        }
        fn exec_exit_code<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<i64, AgentError>> {
            unsupported()
        }
        fn events(&self, _: &str) -> EventStream {
            futures_util::stream::empty().boxed()
        }
    }

    fn ready_log(key: &str) -> String {
        format!(
            "{}{key}\n{}\n",
            readiness::HOST_KEY_PREFIX,
            readiness::READY
        )
    }

    #[tokio::test]
    async fn adopts_reports_and_notices_removals_through_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let runner = dir.path().join("airlock-runner");
        std::fs::write(&runner, b"not really a runner").unwrap();
        let mut config = AgentConfig::new(
            "node-1",
            "http://127.0.0.1:9",
            "token",
            runner,
            dir.path().join("data"),
        );
        config.network = NetworkPolicy {
            firewall: false,
            ..NetworkPolicy::default()
        };
        let fake = Arc::new(Fake::default());
        fake.add("s-run", true, 0, &ready_log("ssh-ed25519 RUN"));
        fake.add("s-dead", false, 3, "");
        let shutdown = CancellationToken::new();
        let agent = Agent::start(config, fake.clone(), shutdown.clone())
            .await
            .unwrap();
        // Re-adopted: the running one with the key from its log.
        assert_eq!(agent.container_of("s-run").unwrap(), "c-s-run");
        assert!(agent.container_of("s-dead").is_err());

        // A container of this agent it does not know (an orphan).
        fake.add("s-orphan", true, 0, &ready_log("ssh-ed25519 ORPHAN"));
        fake.inspected.lock().unwrap().clear();
        let hb = agent.report().await.unwrap();
        assert_eq!(hb.agent_id, "node-1");
        assert_eq!(hb.cpu, 2.0);
        let phase = |hb: &airlock_proto::agent::Heartbeat, s: &str| {
            hb.containers
                .iter()
                .find(|c| c.session_id == s)
                .map(|c| (c.phase, c.reason.clone(), c.host_key.clone()))
        };
        assert_eq!(
            phase(&hb, "s-run"),
            Some((
                ContainerPhase::Running,
                None,
                Some("ssh-ed25519 RUN".into())
            ))
        );
        assert_eq!(
            phase(&hb, "s-dead"),
            Some((
                ContainerPhase::Exited,
                Some("the container stopped unexpectedly (exit code 3)".into()),
                None
            ))
        );
        assert_eq!(
            phase(&hb, "s-orphan"),
            Some((
                ContainerPhase::Running,
                None,
                Some("ssh-ed25519 ORPHAN".into())
            ))
        );
        // Only stopped containers are inspected.
        assert_eq!(*fake.inspected.lock().unwrap(), ["c-s-dead"]);

        // Removed behind the agent's back: reported once, then forgotten.
        fake.drop_container("c-s-run");
        let hb = agent.report().await.unwrap();
        assert_eq!(
            phase(&hb, "s-run").map(|p| p.0),
            Some(ContainerPhase::Removed)
        );
        let hb = agent.report().await.unwrap();
        assert_eq!(phase(&hb, "s-run"), None);

        // Destroying removes its container through the runtime.
        agent.destroy("s-dead").await.unwrap();
        assert_eq!(*fake.removed.lock().unwrap(), ["c-s-dead"]);
        let hb = agent.report().await.unwrap();
        assert_eq!(phase(&hb, "s-dead"), None);

        shutdown.cancel();
        agent.wait_tasks().await;
    }
}
