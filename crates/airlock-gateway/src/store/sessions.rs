//! Compute sessions.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, conflict, now_ms};

/// Which sessions a lookup finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Only a session that has not ended (a terminated one is "not found",
    /// saying so).
    Live,
    /// Ended sessions too (their logs, their record).
    EvenEnded,
}

/// Session status (Backend.AI's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Accepted, not yet on a node.
    Pending,
    /// The agent is creating the container.
    Preparing,
    /// The runner serves SSH.
    Running,
    /// Being destroyed.
    Terminating,
    /// Gone.
    Terminated,
    /// Failed (see `status_info`).
    Error,
}

impl Status {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Preparing => "PREPARING",
            Status::Running => "RUNNING",
            Status::Terminating => "TERMINATING",
            Status::Terminated => "TERMINATED",
            Status::Error => "ERROR",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Self {
        match s {
            "PENDING" => Status::Pending,
            "PREPARING" => Status::Preparing,
            "RUNNING" => Status::Running,
            "TERMINATING" => Status::Terminating,
            "TERMINATED" => Status::Terminated,
            _ => Status::Error,
        }
    }

    /// Whether the session still holds a name and resources.
    pub fn is_live(self) -> bool {
        !matches!(self, Status::Terminated | Status::Error)
    }

    /// Whether the session uses node resources.
    pub fn uses_resources(self) -> bool {
        matches!(self, Status::Pending | Status::Preparing | Status::Running)
    }
}

/// A mounted folder, as recorded with the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// Folder id.
    pub folder_id: String,
    /// Folder name (= mount point under the home directory).
    pub name: String,
}

/// A session row.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// UUID.
    pub id: String,
    /// Name, unique among the owner's live sessions.
    pub name: String,
    /// Owner.
    pub user_id: String,
    /// Image.
    pub image: String,
    /// Status.
    pub status: Status,
    /// Why it is in that status (errors, termination reasons).
    pub status_info: Option<String>,
    /// When the status last changed (epoch ms).
    pub status_changed: i64,
    /// Agent hosting it.
    pub agent_id: Option<String>,
    /// Docker container id.
    pub container_id: Option<String>,
    /// CPU in millicores.
    pub cpu_milli: i64,
    /// Memory in bytes.
    pub mem_bytes: i64,
    /// Whole GPUs.
    pub gpus: i64,
    /// Mounted folders.
    pub mounts: Vec<MountRecord>,
    /// The runner's host public key.
    pub host_key: Option<String>,
    /// Creation time (epoch ms).
    pub created_at: i64,
    /// Termination time.
    pub terminated_at: Option<i64>,
    /// Fingerprints of the account keys authorised in the session.
    pub key_fingerprints: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    name: String,
    user_id: String,
    image: String,
    status: String,
    status_info: Option<String>,
    status_changed: i64,
    agent_id: Option<String>,
    container_id: Option<String>,
    cpu_milli: i64,
    mem_bytes: i64,
    gpus: i64,
    mounts: String,
    host_key: Option<String>,
    created_at: i64,
    terminated_at: Option<i64>,
    key_fingerprints: String,
}

impl From<Row> for SessionRow {
    fn from(r: Row) -> Self {
        SessionRow {
            id: r.id,
            name: r.name,
            user_id: r.user_id,
            image: r.image,
            status: Status::parse(&r.status),
            status_info: r.status_info,
            status_changed: r.status_changed,
            agent_id: r.agent_id,
            container_id: r.container_id,
            cpu_milli: r.cpu_milli,
            mem_bytes: r.mem_bytes,
            gpus: r.gpus,
            mounts: serde_json::from_str(&r.mounts).unwrap_or_default(),
            host_key: r.host_key,
            created_at: r.created_at,
            terminated_at: r.terminated_at,
            key_fingerprints: serde_json::from_str(&r.key_fingerprints).unwrap_or_default(),
        }
    }
}

const COLUMNS: &str = "id, name, user_id, image, status, status_info, status_changed, agent_id, \
                       container_id, cpu_milli, mem_bytes, CAST(gpus AS BIGINT) AS gpus, mounts, \
                       host_key, created_at, terminated_at, key_fingerprints";

/// What it takes to record a new session.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// Name.
    pub name: &'a str,
    /// Owner.
    pub user_id: &'a str,
    /// Image.
    pub image: &'a str,
    /// CPU millicores.
    pub cpu_milli: i64,
    /// Memory bytes.
    pub mem_bytes: i64,
    /// Whole GPUs.
    pub gpus: i64,
    /// Folders.
    pub mounts: &'a [MountRecord],
    /// Agent chosen by the scheduler.
    pub agent_id: &'a str,
    /// Fingerprints of the account keys passed to the session.
    pub key_fingerprints: &'a [String],
}

macro_rules! select {
    ($tail:literal) => {
        sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM sessions {}", $tail))
    };
}

impl Store {
    /// Records a new session in PREPARING on `agent_id`.
    pub async fn insert_session(&self, new: NewSession<'_>) -> Result<SessionRow, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let mounts = serde_json::to_string(new.mounts).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO sessions (id, name, user_id, image, status, status_info, status_changed, \
             agent_id, container_id, cpu_milli, mem_bytes, mounts, host_key, created_at, terminated_at, \
             key_fingerprints, gpus) \
             VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, NULL, $8, $9, $10, NULL, $6, NULL, $11, $12)",
        )
        .bind(&id)
        .bind(new.name)
        .bind(new.user_id)
        .bind(new.image)
        .bind(Status::Preparing.as_str())
        .bind(now)
        .bind(new.agent_id)
        .bind(new.cpu_milli)
        .bind(new.mem_bytes)
        .bind(&mounts)
        .bind(serde_json::to_string(new.key_fingerprints).unwrap_or_else(|_| "[]".into()))
        .bind(i32::try_from(new.gpus).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await
        .map_err(conflict(&format!("a live session named {:?}", new.name)))?;
        self.session(&id)
            .await?
            .ok_or_else(|| StoreError::Conflict("the new session vanished".into()))
    }

    /// A session by id.
    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let row: Option<Row> = sqlx::query_as(select!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(SessionRow::from))
    }

    /// Sessions of one user (or everyone's when `user_id` is `None`), newest
    /// first; [`Lookup::Live`] skips TERMINATED and ERROR.
    pub async fn sessions(
        &self,
        user_id: Option<&str>,
        which: Lookup,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let rows: Vec<Row> = match user_id {
            Some(u) => {
                sqlx::query_as(select!("WHERE user_id = $1 ORDER BY created_at DESC"))
                    .bind(u)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query_as(select!("ORDER BY created_at DESC"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(SessionRow::from)
            .filter(|s| which == Lookup::EvenEnded || s.status.is_live())
            .collect())
    }

    /// Sessions with a name, for `user_id`, live ones first then newest.
    pub async fn sessions_named(
        &self,
        user_id: &str,
        name: &str,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(select!(
            "WHERE user_id = $1 AND name = $2 ORDER BY created_at DESC"
        ))
        .bind(user_id)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        let mut v: Vec<SessionRow> = rows.into_iter().map(SessionRow::from).collect();
        v.sort_by_key(|s| !s.status.is_live());
        Ok(v)
    }

    /// Sessions on an agent that are not TERMINATED.
    pub async fn sessions_on_agent(&self, agent_id: &str) -> Result<Vec<SessionRow>, StoreError> {
        let rows: Vec<Row> =
            sqlx::query_as(select!("WHERE agent_id = $1 AND status <> 'TERMINATED'"))
                .bind(agent_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(SessionRow::from).collect())
    }

    /// Sessions mounting a folder that are live.
    pub async fn live_sessions_mounting(
        &self,
        folder_id: &str,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let pattern = format!("%\"folder_id\":\"{folder_id}\"%");
        let rows: Vec<Row> = sqlx::query_as(select!(
            "WHERE mounts LIKE $1 AND status NOT IN ('TERMINATED', 'ERROR')"
        ))
        .bind(pattern)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(SessionRow::from).collect())
    }

    /// Moves a session to `status` (with a reason), unless it is already
    /// TERMINATED. Returns whether anything changed.
    pub async fn set_status(
        &self,
        id: &str,
        status: Status,
        info: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let terminated = (status == Status::Terminated).then_some(now);
        let r = sqlx::query(
            "UPDATE sessions SET status = $1, status_info = COALESCE($2, status_info), \
             status_changed = $3, terminated_at = COALESCE($4, terminated_at) \
             WHERE id = $5 AND status <> 'TERMINATED' AND status <> $1",
        )
        .bind(status.as_str())
        .bind(info)
        .bind(now)
        .bind(terminated)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Marks a session RUNNING with its host key and container.
    pub async fn set_running(
        &self,
        id: &str,
        host_key: Option<&str>,
        container_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE sessions SET status = 'RUNNING', status_info = NULL, status_changed = $1, \
             host_key = COALESCE($2, host_key), container_id = COALESCE($3, container_id) \
             WHERE id = $4 AND status IN ('PENDING', 'PREPARING')",
        )
        .bind(now_ms())
        .bind(host_key)
        .bind(container_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Deletes a session record (creation failed before anything ran).
    pub async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Saves the tail of a terminated session's log (replacing an earlier one).
    pub async fn save_session_log(&self, id: &str, log: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO session_logs (session_id, log, saved_at) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id) DO UPDATE SET log = excluded.log, saved_at = excluded.saved_at",
        )
        .bind(id)
        .bind(log)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The saved log of a terminated session, if one was saved.
    pub async fn session_log(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT log FROM session_logs WHERE session_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(l,)| l))
    }

    /// Sessions in `status` (for metrics).
    pub async fn session_count(&self, status: Status) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sessions WHERE status = $1")
            .bind(status.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
