//! The audit trail's write side: who did what, from where, over which
//! connection.
//!
//! Handlers call [`AppState::audit`] with an [`Audit`] event; the client
//! address and connection id come from the request context that
//! [`context`] (a layer over every route) puts in a task-local, so call
//! sites name only what they know. Events are written before the handler
//! answers (an event is durable once a client sees the effect); a database
//! failure is logged and never fails the request.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;
use crate::forwarded::{client_ip, peer_of_request};
use crate::store::{Folder, NewEvent, SessionRow, User, now_ms};

/// The id of one TCP connection to the gateway (set by the accept loop);
/// every request and the tunnel on it share it.
#[derive(Debug, Clone)]
pub struct ConnId(pub String);

impl ConnId {
    /// A fresh random id.
    pub fn fresh() -> Self {
        let n: u64 = rand::random();
        ConnId(format!("c{n:016x}"))
    }
}

/// What the audit trail knows about the request being served.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// The client address (after trusted-proxy headers).
    pub client: IpAddr,
    /// The connection id.
    pub conn: String,
    /// The `User-Agent` the client sent.
    pub user_agent: Option<String>,
}

tokio::task_local! {
    static CTX: RequestCtx;
}

/// The request context of the task, if it runs inside a request.
pub fn current() -> Option<RequestCtx> {
    CTX.try_with(Clone::clone).ok()
}

/// Layer: records the request context for [`AppState::audit`].
pub async fn context(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let peer = peer_of_request(&req);
    let client = client_ip(state.config(), req.headers(), peer);
    let conn = req
        .extensions()
        .get::<ConnId>()
        .cloned()
        .unwrap_or_else(ConnId::fresh)
        .0;
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(200).collect());
    let ctx = RequestCtx {
        client,
        conn,
        user_agent,
    };
    CTX.scope(ctx, next.run(req)).await
}

/// Which program opened a tunnel, from its `User-Agent`: `(client,
/// version)`.
pub fn client_program(user_agent: Option<&str>) -> (String, Option<String>) {
    let Some(ua) = user_agent else {
        return ("unknown".to_owned(), None);
    };
    if let Some(rest) = ua.strip_prefix("airlock-cli/") {
        let version = rest.split_whitespace().next().map(str::to_owned);
        return ("airlock".to_owned(), version);
    }
    // The official client's aiohttp sends `Python/3.x aiohttp/3.y` (and
    // newer releases `Backend.AI Client for Python x.y`).
    if let Some(i) = ua.find("Backend.AI Client for Python") {
        let version = ua
            .get(i + "Backend.AI Client for Python".len()..)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_owned);
        return ("backend.ai".to_owned(), version);
    }
    if ua.contains("aiohttp/") {
        return ("backend.ai".to_owned(), None);
    }
    let first = ua.split_whitespace().next().unwrap_or(ua);
    (first.chars().take(60).collect(), None)
}

/// An event being built.
#[derive(Debug, Clone)]
pub struct Audit {
    event: NewEvent,
    /// Done by the system (no client address), see [`Audit::system`].
    system: bool,
}

impl Audit {
    /// An event of `kind` (dotted: `login.ok`, `session.created`, …).
    pub fn new(kind: &str) -> Self {
        Audit {
            event: NewEvent {
                at: now_ms(),
                kind: kind.to_owned(),
                detail: serde_json::Value::Object(serde_json::Map::new()),
                ..NewEvent::default()
            },
            system: false,
        }
    }

    /// Something the system did (a heartbeat's report): no client address,
    /// even when recorded while serving an agent's request.
    pub fn system(mut self) -> Self {
        self.system = true;
        self
    }

    /// The account concerned.
    pub fn user(mut self, user: &User) -> Self {
        self.event.user_id = Some(user.id.clone());
        self.event.user = Some(user.email.clone());
        self
    }

    /// The account concerned, by id and email.
    pub fn user_ids(mut self, id: &str, email: Option<&str>) -> Self {
        self.event.user_id = Some(id.to_owned());
        self.event.user = email.map(str::to_owned);
        self
    }

    /// The session concerned.
    pub fn session(mut self, s: &SessionRow) -> Self {
        self.event.session_id = Some(s.id.clone());
        self.event.session = Some(s.name.clone());
        self
    }

    /// A detail field.
    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Self {
        if let serde_json::Value::Object(m) = &mut self.event.detail {
            m.insert(
                key.to_owned(),
                serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
            );
        }
        self
    }

    /// The client and connection, when not the current request's.
    pub fn ctx(mut self, ctx: &RequestCtx) -> Self {
        self.event.client = Some(ctx.client.to_string());
        self.event.conn = Some(ctx.conn.clone());
        self
    }

    /// The finished row, filling client and connection from the request
    /// context when not set.
    pub fn into_event(mut self) -> NewEvent {
        if self.event.conn.is_none()
            && !self.system
            && let Some(ctx) = current()
        {
            self.event.client = Some(ctx.client.to_string());
            self.event.conn = Some(ctx.conn);
        }
        self.event
    }
}

/// Records a session event on the owner's trail (`session.started`,
/// `session.failed` …), with the owner's email looked up.
pub async fn session_event(state: &AppState, s: &SessionRow, kind: &str, reason: Option<&str>) {
    let email = match state.store().user_by_id(&s.user_id).await {
        Ok(Some(u)) => Some(u.email),
        _ => None,
    };
    let mut e = Audit::new(kind)
        .system()
        .user_ids(&s.user_id, email.as_deref())
        .session(s);
    if let Some(r) = reason {
        e = e.with("reason", r);
    }
    state.audit(e).await;
}

/// Records who terminated a session (on the owner's trail; `by` is the
/// caller, who may be an administrator).
pub async fn session_terminated(state: &AppState, s: &SessionRow, by: &User, status: &str) {
    let email = if by.id == s.user_id {
        Some(by.email.clone())
    } else {
        match state.store().user_by_id(&s.user_id).await {
            Ok(Some(u)) => Some(u.email),
            _ => None,
        }
    };
    state
        .audit(
            Audit::new("session.terminated")
                .user_ids(&s.user_id, email.as_deref())
                .session(s)
                .with("by", &by.email)
                .with("status", status),
        )
        .await;
}

/// Where a transferred file lives.
#[derive(Debug, Clone, Copy)]
pub enum FileScope<'a> {
    /// A storage folder.
    Folder(&'a Folder),
    /// A session's home directory.
    Session(&'a SessionRow),
}

/// Records a file operation by `actor` (an account id; `user` when at
/// hand, else its email is looked up): in a folder (`folder.upload`,
/// `folder.download`, `folder.delete`) or a session (`session.upload`,
/// `session.download`, `session.delete`, `session.mkdir`), with the path
/// and, when known, the size. A session's file moved by someone else (an
/// administrator) goes on the owner's trail, with `by`.
pub async fn file_event(
    state: &AppState,
    actor: (&str, Option<&User>),
    scope: FileScope<'_>,
    kind: &str,
    path: &str,
    size: Option<u64>,
) {
    file_events(state, actor, scope, kind, &[(path.to_owned(), size)]).await;
}

/// [`file_event`] for several files of one request, written at once.
pub async fn file_events(
    state: &AppState,
    actor: (&str, Option<&User>),
    scope: FileScope<'_>,
    kind: &str,
    files: &[(String, Option<u64>)],
) {
    let base = file_base(state, actor, scope, kind).await;
    let events = files
        .iter()
        .map(|(path, size)| {
            let mut e = base.clone().with("path", path);
            if let Some(n) = size {
                e = e.with("size", n);
            }
            e
        })
        .collect();
    state.audit_all(events).await;
}

/// Records a rename (`session.rename`, like [`file_event`]) from `path`
/// to `to`.
pub async fn file_renamed(
    state: &AppState,
    actor: (&str, Option<&User>),
    scope: FileScope<'_>,
    kind: &str,
    path: &str,
    to: &str,
) {
    let e = file_base(state, actor, scope, kind)
        .await
        .with("path", path)
        .with("to", to);
    state.audit_all(vec![e]).await;
}

/// The event of a file operation without its path.
async fn file_base(
    state: &AppState,
    actor: (&str, Option<&User>),
    scope: FileScope<'_>,
    kind: &str,
) -> Audit {
    let email = |id: &str| {
        let id = id.to_owned();
        async move {
            match state.store().user_by_id(&id).await {
                Ok(Some(u)) => Some(u.email),
                _ => None,
            }
        }
    };
    let actor_email = match actor.1 {
        Some(u) => Some(u.email.clone()),
        None => email(actor.0).await,
    };
    match scope {
        FileScope::Folder(f) => Audit::new(kind)
            .with("folder", &f.name)
            .with("folder_id", &f.id)
            .user_ids(actor.0, actor_email.as_deref()),
        FileScope::Session(s) if s.user_id != actor.0 => Audit::new(kind)
            .session(s)
            .user_ids(&s.user_id, email(&s.user_id).await.as_deref())
            .with("by", &actor_email),
        FileScope::Session(s) => Audit::new(kind)
            .session(s)
            .user_ids(actor.0, actor_email.as_deref()),
    }
}

/// How long a closed tunnel's connection is remembered, so that runner
/// events that arrive after it (they come with the agent's next batch) are
/// still tied to it.
const CONN_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);

/// The tunnels' ends as the runners see them: (session id, peer address)
/// → the gateway's connection id and client address.
#[derive(Debug, Default)]
pub struct Conns {
    map: std::sync::Mutex<std::collections::HashMap<(String, String), ConnEntry>>,
}

#[derive(Debug)]
struct ConnEntry {
    conn: String,
    client: String,
    closed: Option<std::time::Instant>,
}

impl Conns {
    /// A tunnel to `session` reaches the runner from `peer`.
    pub fn opened(&self, session: &str, peer: &str, ctx: &RequestCtx) {
        if let Ok(mut m) = self.map.lock() {
            m.retain(|_, e| e.closed.is_none_or(|t| t.elapsed() < CONN_MEMORY));
            m.insert(
                (session.to_owned(), peer.to_owned()),
                ConnEntry {
                    conn: ctx.conn.clone(),
                    client: ctx.client.to_string(),
                    closed: None,
                },
            );
        }
    }

    /// That tunnel ended.
    pub fn closed(&self, session: &str, peer: &str) {
        if let Ok(mut m) = self.map.lock()
            && let Some(e) = m.get_mut(&(session.to_owned(), peer.to_owned()))
        {
            e.closed = Some(std::time::Instant::now());
        }
    }

    fn lookup(&self, session: &str, peer: &str) -> Option<(String, String)> {
        let m = self.map.lock().ok()?;
        m.get(&(session.to_owned(), peer.to_owned()))
            .map(|e| (e.conn.clone(), e.client.clone()))
    }
}

/// Appends what an agent's runners reported: only events of the kinds a
/// runner produces (`ssh.*`, `sftp.*`), only for sessions placed on that
/// agent; each on the session owner's trail, tied to the gateway
/// connection whose tunnel reached the runner from the event's peer.
pub async fn ingest_runner_events(
    state: &AppState,
    batch: airlock_proto::agent::RunnerEvents,
) -> Result<(), crate::error::ApiError> {
    use std::collections::HashMap;
    let mut sessions: HashMap<String, Option<(SessionRow, Option<String>)>> = HashMap::new();
    let mut rows = Vec::with_capacity(batch.events.len());
    let mut dropped = 0usize;
    for ev in batch.events {
        if !(ev.kind.starts_with("ssh.") || ev.kind.starts_with("sftp.")) || ev.kind.len() > 64 {
            dropped += 1;
            continue;
        }
        if !sessions.contains_key(&ev.session_id) {
            let found = match state.store().session(&ev.session_id).await? {
                Some(s) if s.agent_id.as_deref() == Some(batch.agent_id.as_str()) => {
                    let email = state.store().user_by_id(&s.user_id).await?.map(|u| u.email);
                    Some((s, email))
                }
                _ => None,
            };
            sessions.insert(ev.session_id.clone(), found);
        }
        let Some(Some((s, email))) = sessions.get(&ev.session_id) else {
            dropped += 1;
            continue;
        };
        // The agent names the connection when the gateway told it (any
        // node, resumed tunnels); else this gateway's own record.
        let (conn, client) = match ev.origin {
            Some(o) => (Some(o.conn), Some(o.client)),
            None => state
                .audit_conns()
                .lookup(&s.id, &ev.peer)
                .map_or((None, None), |(c, a)| (Some(c), Some(a))),
        };
        let mut detail = ev.detail;
        if let serde_json::Value::Object(m) = &mut detail {
            m.insert("peer".to_owned(), serde_json::Value::String(ev.peer));
        }
        rows.push(NewEvent {
            at: ev.at,
            kind: ev.kind,
            user_id: Some(s.user_id.clone()),
            user: email.clone(),
            client,
            session_id: Some(s.id.clone()),
            session: Some(s.name.clone()),
            conn,
            detail,
        });
    }
    if dropped > 0 {
        tracing::warn!(agent = %batch.agent_id, dropped, "ignored runner events for sessions not on that agent (or of unknown kinds)");
    }
    state.store().append_events(&rows).await?;
    Ok(())
}

impl AppState {
    /// Appends an event to the audit trail (logged, never failing the
    /// caller, when the database refuses).
    pub async fn audit(&self, event: Audit) {
        self.audit_all(vec![event]).await;
    }

    /// Appends events in one write (see [`AppState::audit`]).
    pub async fn audit_all(&self, events: Vec<Audit>) {
        let rows: Vec<NewEvent> = events.into_iter().map(Audit::into_event).collect();
        let Some(first) = rows.first() else {
            return;
        };
        if let Err(err) = self.store().append_events(&rows).await {
            tracing::warn!(kind = %first.kind, n = rows.len(), error = %err, "cannot record audit events");
        }
    }
}

/// Deletes events older than the retention period (if one is set).
pub async fn prune(state: &AppState) {
    let Some(keep) = state.config().audit_retention else {
        return;
    };
    let keep = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    match state
        .store()
        .prune_events(now_ms().saturating_sub(keep))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(pruned = n, "pruned audit events past the retention period"),
        Err(e) => tracing::warn!(error = %e, "pruning audit events failed"),
    }
}

/// A `--since`/`?since=` value: a duration back from `now` (`90s`, `30m`,
/// `1h`, `7d`) or an RFC 3339 time; epoch milliseconds.
pub fn parse_since(raw: &str, now: i64) -> Result<i64, String> {
    let raw = raw.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(t.timestamp_millis());
    }
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (num, unit) = raw.split_at(split);
    let n: i64 = num.parse().map_err(|_| {
        format!("{raw:?} is neither a duration (like 90s, 30m, 1h, 7d) nor an RFC 3339 time")
    })?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" | "" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {raw:?} (use s, m, h, d or w)"
            ));
        }
    };
    Ok(now.saturating_sub(n.saturating_mul(ms)))
}

#[cfg(test)]
mod tests {
    use super::{client_program, parse_since};

    #[test]
    fn parses_since() {
        assert_eq!(parse_since("1h", 10_000_000), Ok(10_000_000 - 3_600_000));
        assert_eq!(parse_since("90s", 100_000), Ok(10_000));
        assert_eq!(parse_since("2d", 0), Ok(-2 * 86_400_000));
        assert_eq!(parse_since("1970-01-01T00:00:01Z", 5), Ok(1_000));
        assert!(parse_since("soon", 0).is_err());
        assert!(parse_since("5y", 0).is_err());
    }

    #[test]
    fn recognises_clients() {
        assert_eq!(
            client_program(Some("airlock-cli/0.1.0")),
            ("airlock".to_owned(), Some("0.1.0".to_owned()))
        );
        assert_eq!(
            client_program(Some("Python/3.13 aiohttp/3.12.15")).0,
            "backend.ai"
        );
        assert_eq!(
            client_program(Some("Backend.AI Client for Python 26.9.0")),
            ("backend.ai".to_owned(), Some("26.9.0".to_owned()))
        );
        assert_eq!(client_program(None).0, "unknown");
        assert_eq!(client_program(Some("curl/8.5.0")).0, "curl/8.5.0");
    }
}
