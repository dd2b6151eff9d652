//! Session lifecycle: resolve, create (schedule, ask the agent, wait),
//! destroy, and the views the API returns.

use std::time::Duration;

use airlock_proto::agent::{CreateContainer, Mount};
use airlock_proto::api::{ServicePort, SessionInfo};
use airlock_proto::{CONTAINER_HOME, validate};
use http::StatusCode;

use crate::AppState;
use crate::agents::{self, AgentCallError};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::quotas;
use crate::store::{AgentRow, MountRecord, NewSession, SessionRow, Status, rfc3339};

/// Which sessions [`resolve`] finds.
pub use crate::store::Lookup;

/// Finds the caller's session by UUID or name. Names prefer a live session;
/// [`Lookup::Live`] refuses terminated ones. Sessions of other users are
/// invisible (404) unless the caller is an admin.
pub async fn resolve(
    state: &AppState,
    caller: &Caller,
    ident: &str,
    lookup: Lookup,
) -> Result<SessionRow, ApiError> {
    let live_only = lookup == Lookup::Live;
    let not_found = || {
        ApiError::not_found("session-not-found", format!("no session {ident:?}"))
            .hint("list your sessions with `airlock session ls`")
    };
    if let Ok(uuid) = uuid::Uuid::parse_str(ident) {
        let s = state
            .store()
            .session(&uuid.to_string())
            .await?
            .filter(|s| caller.may_access(&s.user_id))
            .ok_or_else(not_found)?;
        if live_only && s.status == Status::Terminated {
            return Err(ApiError::not_found(
                "session-not-found",
                format!("session {ident:?} is already terminated"),
            ));
        }
        return Ok(s);
    }
    let found = state.store().sessions_named(&caller.user.id, ident).await?;
    let first = found.into_iter().next().ok_or_else(not_found)?;
    if live_only && first.status == Status::Terminated {
        return Err(ApiError::not_found(
            "session-not-found",
            format!("session {ident:?} is already terminated"),
        )
        .hint("list your sessions with `airlock session ls`"));
    }
    Ok(first)
}

/// The agent that hosts a session.
pub async fn agent_of(state: &AppState, s: &SessionRow) -> Result<AgentRow, ApiError> {
    let id = s
        .agent_id
        .as_deref()
        .ok_or_else(|| ApiError::unavailable("the session is not on any node"))?;
    state
        .store()
        .agent(id)
        .await?
        .ok_or_else(|| ApiError::unavailable(format!("node {id} is unknown")))
}

/// Requires a RUNNING session.
pub fn require_running(s: &SessionRow) -> Result<(), ApiError> {
    if s.status == Status::Running {
        return Ok(());
    }
    let mut e = ApiError::new(
        StatusCode::CONFLICT,
        "session-not-running",
        "The session is not running",
    )
    .msg(format!(
        "session {:?} is {}{}",
        s.name,
        s.status.as_str(),
        s.status_info
            .as_deref()
            .map(|i| format!(" ({i})"))
            .unwrap_or_default()
    ));
    // Hints name the session so they run as printed.
    e = e.hint(match s.status {
        Status::Pending | Status::Preparing => format!(
            "it is starting; check again in a moment with `airlock session info {}`",
            s.name
        ),
        Status::Error => format!(
            "see why with `airlock session logs {}`; start a new one with `airlock session create`",
            s.name
        ),
        _ => format!(
            "it has ended; start a new one with `airlock session create --name {}`",
            s.name
        ),
    });
    Err(e)
}

/// The parameters of a create request.
#[derive(Debug, Clone)]
pub struct CreateParams {
    /// Name (generated if absent).
    pub name: Option<String>,
    /// Image.
    pub image: Option<String>,
    /// Folder names to mount.
    pub mounts: Vec<String>,
    /// Environment variables, already validated.
    pub environ: Vec<(String, String)>,
    /// CPU millicores.
    pub cpu_milli: Option<i64>,
    /// Memory bytes.
    pub mem_bytes: Option<i64>,
    /// Whole NVIDIA GPUs (0: none).
    pub gpus: i64,
    /// Return without waiting.
    pub enqueue_only: bool,
    /// Wait limit.
    pub max_wait: Option<Duration>,
    /// Return an existing live session with the same name and image.
    pub reuse_if_exists: bool,
    /// Run it on this node (administrators only).
    pub node: Option<String>,
}

fn generated_name() -> String {
    use rand::RngExt;
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(8)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    format!("session-{suffix}")
}

/// What [`create`] did.
#[derive(Debug)]
pub enum Created {
    /// A new session.
    New(SessionRow),
    /// The caller's live session of that name and image (`reuseIfExists`).
    Existing(SessionRow),
}

impl Created {
    /// The session, new or not.
    pub fn session(&self) -> &SessionRow {
        match self {
            Created::New(s) | Created::Existing(s) => s,
        }
    }
}

/// Creates a session and (unless `enqueue_only`) waits until it runs or
/// fails.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    params: CreateParams,
) -> Result<Created, ApiError> {
    if params.node.is_some() && !caller.user.is_admin() {
        return Err(
            ApiError::forbidden("only administrators choose the node a session runs on")
                .hint("leave out --node; the scheduler picks a node with room"),
        );
    }
    let cfg = state.config();
    let name = params.name.unwrap_or_else(generated_name);
    validate::check_session_name(&name)?;
    let image = params
        .image
        .filter(|i| !i.trim().is_empty())
        .unwrap_or_else(|| cfg.default_image.clone());
    if let Some(existing) = state
        .store()
        .sessions_named(&caller.user.id, &name)
        .await?
        .into_iter()
        .find(|s| s.status.is_live())
    {
        if params.reuse_if_exists && existing.image == image {
            return Ok(Created::Existing(existing));
        }
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "session-already-exists",
            "Session already exists",
        )
        .msg(format!("you already have a live session named {name:?}"))
        .hint(format!(
            "pick another name with --name, or remove it with `airlock session rm {name}`"
        ))
        .data(serde_json::json!({"existingSessionId": existing.id})));
    }
    let cpu_milli = params.cpu_milli.unwrap_or(cfg.default_cpu_milli);
    let mem_bytes = params.mem_bytes.unwrap_or(cfg.default_mem_bytes);

    // Folders: the requested ones plus every dot-folder of the user.
    let folders = state.store().folders(Some(&caller.user.id)).await?;
    let mut mounts: Vec<MountRecord> = Vec::new();
    for wanted in &params.mounts {
        let f = folders
            .iter()
            .find(|f| &f.name == wanted || f.hex_id() == wanted.replace('-', ""))
            .ok_or_else(|| {
                ApiError::not_found(
                    "vfolder-not-found",
                    format!("you have no folder named {wanted:?}"),
                )
                .hint("create it first: airlock vfolder create NAME")
            })?;
        if !mounts.iter().any(|m| m.folder_id == f.id) {
            mounts.push(MountRecord {
                folder_id: f.id.clone(),
                name: f.name.clone(),
            });
        }
    }
    for f in folders.iter().filter(|f| f.name.starts_with('.')) {
        if !mounts.iter().any(|m| m.folder_id == f.id) {
            mounts.push(MountRecord {
                folder_id: f.id.clone(),
                name: f.name.clone(),
            });
        }
    }
    let account_keys = state.store().ssh_keys(&caller.user.id).await?;
    let key_fingerprints: Vec<String> =
        account_keys.iter().map(|k| k.fingerprint.clone()).collect();
    let keys: Vec<String> = account_keys.into_iter().map(|k| k.public_key).collect();

    // The quota check and the insert are one step per account: parallel
    // creates at the limit make exactly as many sessions as allowed.
    let slot = quotas::session_slot(state, &caller.user.id).await?;
    let agent = agents::schedule(
        state,
        agents::Request {
            cpu_milli,
            mem_bytes,
            gpus: params.gpus,
            node: params.node.as_deref(),
        },
    )
    .await?;
    let row = state
        .store()
        .insert_session(NewSession {
            name: &name,
            user_id: &caller.user.id,
            image: &image,
            cpu_milli,
            mem_bytes,
            gpus: params.gpus,
            mounts: &mounts,
            agent_id: &agent.id,
            key_fingerprints: &key_fingerprints,
        })
        .await?;
    drop(slot);
    let spec = CreateContainer {
        session_id: row.id.clone(),
        session_name: row.name.clone(),
        owner_id: caller.user.id.clone(),
        image: image.clone(),
        cpu: cpu_milli as f64 / 1000.0,
        mem_bytes: u64::try_from(mem_bytes).unwrap_or(0),
        gpus: u32::try_from(params.gpus).unwrap_or(0),
        mounts: mounts
            .iter()
            .map(|m| Mount {
                host_path: state.storage().path(&m.folder_id).display().to_string(),
                container_path: format!("{CONTAINER_HOME}/{}", m.name),
                read_only: false,
            })
            .collect(),
        authorized_keys: keys,
        env: params.environ.clone(),
    };
    for m in &mounts {
        // Folders created before a storage move, or by hand, get their
        // directory back rather than a Docker-created root-owned one.
        if let Err(e) = state.storage().create(&m.folder_id) {
            tracing::warn!(folder = %m.name, error = %e, "cannot prepare folder storage");
        }
    }
    if let Err(e) = state.agents().create(&agent, &spec).await {
        // Nothing runs: forget the record so the name stays free.
        state.store().delete_session(&row.id).await?;
        return Err(match e {
            AgentCallError::Rejected { .. } => e.into(),
            AgentCallError::Unreachable(d) => {
                tracing::warn!(agent = %agent.id, detail = %d, "agent unreachable while creating a session");
                ApiError::unavailable(format!("node {} did not answer", agent.id))
                    .hint("try again; if it persists, check the agent")
            }
        });
    }
    tracing::info!(session = %row.id, name = %row.name, user = %caller.user.email, agent = %agent.id, "session created");
    state
        .audit(
            crate::audit::Audit::new("session.created")
                .user(&caller.user)
                .session(&row)
                .with("image", &row.image)
                .with("agent", &agent.id),
        )
        .await;
    if params.enqueue_only {
        return Ok(Created::New(row));
    }
    let wait = params
        .max_wait
        .filter(|d| !d.is_zero())
        .unwrap_or(cfg.create_timeout);
    let row = wait_until_settled(state, &row.id, wait).await?;
    Ok(Created::New(row))
}

/// Waits until a session leaves PENDING/PREPARING (or `limit` passes).
pub async fn wait_until_settled(
    state: &AppState,
    id: &str,
    limit: Duration,
) -> Result<SessionRow, ApiError> {
    let mut events = state.session_events();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let s =
            state.store().session(id).await?.ok_or_else(|| {
                ApiError::not_found("session-not-found", "the session disappeared")
            })?;
        if !matches!(s.status, Status::Pending | Status::Preparing) {
            return Ok(s);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Ok(s),
            _ = events.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Lines of a container log kept and served (`session logs` without
/// `--tail`, and what is saved when a session ends).
pub const LOG_LINES: usize = 10_000;

/// At most this much of a log is saved when its session ends.
pub const SAVED_LOG_BYTES: usize = 256 * 1024;

/// Saves the tail of a session's log before its container is removed, so
/// its owner can still read why it failed. Best effort: a node that does
/// not answer within seconds does not hold up the termination.
async fn save_log(state: &AppState, agent: &AgentRow, session_id: &str) {
    let fetched = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        state.agents().logs(agent, session_id, LOG_LINES),
    )
    .await;
    let text = match fetched {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(session = %session_id, error = %e, "no log to save");
            return;
        }
        Err(_) => {
            tracing::warn!(session = %session_id, "the node took too long to send the log; not saved");
            return;
        }
    };
    let start = text.len().saturating_sub(SAVED_LOG_BYTES);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    if let Err(e) = state
        .store()
        .save_session_log(session_id, &text[start..])
        .await
    {
        tracing::warn!(session = %session_id, error = %e, "saving the log failed");
    }
}

/// How [`destroy`] ends a session whose agent does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// It stays TERMINATING until its agent reports back and removes it.
    Orderly,
    /// It is marked TERMINATED at once (`?forced=true`).
    Forced,
}

/// Terminates a session: asks its agent to remove the container. An
/// unreachable agent leaves it TERMINATING (the agent removes it when it
/// reports back) unless [`Termination::Forced`].
pub async fn destroy(
    state: &AppState,
    s: &SessionRow,
    how: Termination,
) -> Result<Status, ApiError> {
    let forced = how == Termination::Forced;
    if s.status == Status::Terminated {
        return Ok(Status::Terminated);
    }
    state
        .store()
        .set_status(&s.id, Status::Terminating, None)
        .await?;
    state.notify_session(&s.id);
    let agent = match &s.agent_id {
        Some(id) => state.store().agent(id).await?,
        None => None,
    };
    if let Some(a) = &agent {
        save_log(state, a, &s.id).await;
    }
    let result = match &agent {
        Some(a) => state.agents().destroy(a, &s.id).await,
        None => Ok(()),
    };
    let status = match result {
        Ok(()) | Err(AgentCallError::Rejected { .. }) => Status::Terminated,
        Err(AgentCallError::Unreachable(d)) if !forced => {
            tracing::warn!(session = %s.id, detail = %d, "agent unreachable; the container is removed when it reports back");
            Status::Terminating
        }
        Err(AgentCallError::Unreachable(_)) => Status::Terminated,
    };
    if status == Status::Terminated {
        state
            .store()
            .set_status(&s.id, Status::Terminated, None)
            .await?;
    }
    state.notify_session(&s.id);
    tracing::info!(session = %s.id, name = %s.name, status = status.as_str(), "session destroyed");
    Ok(status)
}

/// For a live session whose node stopped reporting (for longer than
/// `agent_offline_after`): the node and for how many seconds.
async fn node_silence(state: &AppState, s: &SessionRow) -> Result<Option<(String, i64)>, ApiError> {
    if !s.status.is_live() {
        return Ok(None);
    }
    let Some(id) = &s.agent_id else {
        return Ok(None);
    };
    let limit = i64::try_from(state.config().agent_offline_after.as_millis()).unwrap_or(i64::MAX);
    let last_seen = state.store().agent(id).await?.map_or(0, |a| a.last_seen);
    let silent = crate::store::now_ms() - last_seen;
    Ok((silent > limit).then(|| (id.clone(), silent / 1000)))
}

/// The API view of a session.
pub async fn info(state: &AppState, s: &SessionRow) -> Result<SessionInfo, ApiError> {
    let owner = state
        .store()
        .user_by_id(&s.user_id)
        .await?
        .map(|u| u.email)
        .unwrap_or_default();
    let silent = node_silence(state, s).await?;
    let status_info = match &silent {
        Some((node, secs)) => Some(format!(
            "its node {node} is unreachable: no report for {secs} s"
        )),
        None => s.status_info.clone(),
    };
    Ok(SessionInfo {
        id: s.id.clone(),
        name: s.name.clone(),
        owner,
        image: s.image.clone(),
        status: s.status.as_str().to_owned(),
        status_info,
        node_unreachable: silent.is_some(),
        created_at: rfc3339(s.created_at),
        terminated_at: s.terminated_at.map(rfc3339),
        cpu: s.cpu_milli as f64 / 1000.0,
        mem_bytes: u64::try_from(s.mem_bytes).unwrap_or(0),
        gpus: u32::try_from(s.gpus).unwrap_or(0),
        mounts: s.mounts.iter().map(|m| m.name.clone()).collect(),
        host_key_fingerprint: s
            .host_key
            .as_deref()
            .and_then(airlock_proto::sshkey::fingerprint),
        host_key: s.host_key.clone(),
        agent: s.agent_id.clone(),
        service_ports: vec![ServicePort::sshd()],
        key_fingerprints: s.key_fingerprints.clone(),
    })
}

/// The bytes of the regular file `name` (relative to the home, at most
/// 1 MiB) of running session `s`, read through its agent.
pub async fn read_small_file(
    state: &AppState,
    s: &SessionRow,
    name: &str,
) -> Result<Vec<u8>, ApiError> {
    const LIMIT: u64 = 1 << 20;
    let d = crate::session_files::download(state, s, name).await?;
    if !matches!(d.kind, crate::session_files::Kind::File(n) if n <= LIMIT) {
        return Err(ApiError::internal(format!("{name} is not a small file")));
    }
    let mut out = Vec::new();
    let mut body = d.body;
    while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
        let chunk = chunk.map_err(|e| {
            ApiError::unavailable(format!("reading {name} from the session failed: {e}"))
        })?;
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
