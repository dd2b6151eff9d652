//! Agents (nodes) as last reported.

use super::accounts::random_string;
use super::{Store, StoreError, now_ms};

/// Whether a node takes new sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// It gets none; the ones it runs stay.
    Drained,
    /// It takes new sessions.
    Accepting,
}

/// An enrolled agent's own token (`airlockd node enroll`): what it presents
/// to the gateway and the gateway to it. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentCredential(String);

impl AgentCredential {
    /// The token itself, to put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AgentCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentCredential(…)")
    }
}

/// What the live sessions of a node hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU millicores.
    pub cpu_milli: i64,
    /// Memory bytes.
    pub mem_bytes: i64,
    /// Whole GPUs.
    pub gpus: i64,
}

/// An enrolled agent, as `airlockd node list` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Enrollment {
    /// Agent id.
    pub agent_id: String,
    /// When it was enrolled (epoch ms).
    pub created_at: i64,
}

/// Prefix of enrolled agents' tokens (tells them apart from a shared one).
const CREDENTIAL_PREFIX: &str = "airlock-agent-";

/// An agent's registration.
#[derive(Debug, Clone)]
pub struct AgentRow {
    /// Agent id.
    pub id: String,
    /// URL the gateway reaches it at.
    pub url: String,
    /// Agent version.
    pub version: String,
    /// Schedulable CPU (millicores).
    pub cpu_milli: i64,
    /// Schedulable memory.
    pub mem_bytes: i64,
    /// Whole NVIDIA GPUs it has.
    pub gpus: i64,
    /// Its 1-minute load average, in thousandths, as last reported.
    pub load_milli: i64,
    /// Its available memory, as last reported.
    pub mem_available: i64,
    /// Last heartbeat (epoch ms).
    pub last_seen: i64,
    /// An administrator drained it: no new sessions (kept across
    /// heartbeats, which never change it).
    pub draining: bool,
    /// Its own credential when enrolled (else the shared agent token
    /// applies); read with the row, never written by a heartbeat.
    pub credential: Option<AgentCredential>,
}

/// How an agent row is stored (booleans as 0/1, which SQLite and
/// PostgreSQL read the same way).
#[derive(sqlx::FromRow)]
struct StoredAgent {
    id: String,
    url: String,
    version: String,
    cpu_milli: i64,
    mem_bytes: i64,
    gpus: i64,
    load_milli: i64,
    mem_available: i64,
    last_seen: i64,
    draining: i32,
    credential: Option<String>,
}

impl From<StoredAgent> for AgentRow {
    fn from(a: StoredAgent) -> Self {
        Self {
            id: a.id,
            url: a.url,
            version: a.version,
            cpu_milli: a.cpu_milli,
            mem_bytes: a.mem_bytes,
            gpus: a.gpus,
            load_milli: a.load_milli,
            mem_available: a.mem_available,
            last_seen: a.last_seen,
            draining: a.draining != 0,
            credential: a.credential.map(AgentCredential),
        }
    }
}

/// `SELECT` of every agent column, then `$tail` (a string literal).
macro_rules! select_agents {
    ($tail:literal) => {
        concat!(
            "SELECT id, url, version, cpu_milli, mem_bytes, CAST(gpus AS BIGINT) AS gpus, load_milli, \
             mem_available, last_seen, draining, \
             c.token AS credential FROM agents LEFT JOIN agent_credentials c \
             ON c.agent_id = agents.id ",
            $tail
        )
    };
}

impl Store {
    /// Records a heartbeat.
    pub async fn upsert_agent(&self, a: &AgentRow) -> Result<(), StoreError> {
        // One atomic statement; `ON CONFLICT … DO UPDATE` is the same in
        // SQLite and PostgreSQL.
        sqlx::query(
            "INSERT INTO agents (id, url, version, cpu_milli, mem_bytes, last_seen, gpus, \
             load_milli, mem_available) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id) DO UPDATE SET url = excluded.url, version = excluded.version, \
             cpu_milli = excluded.cpu_milli, mem_bytes = excluded.mem_bytes, \
             last_seen = excluded.last_seen, gpus = excluded.gpus, \
             load_milli = excluded.load_milli, mem_available = excluded.mem_available",
        )
        .bind(&a.id)
        .bind(&a.url)
        .bind(&a.version)
        .bind(a.cpu_milli)
        .bind(a.mem_bytes)
        .bind(now_ms())
        .bind(i32::try_from(a.gpus).unwrap_or(i32::MAX))
        .bind(a.load_milli)
        .bind(a.mem_available)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Agents seen within `max_age_ms`.
    pub async fn online_agents(&self, max_age_ms: i64) -> Result<Vec<AgentRow>, StoreError> {
        let rows: Vec<StoredAgent> =
            sqlx::query_as(select_agents!("WHERE last_seen > $1 ORDER BY id"))
                .bind(now_ms() - max_age_ms)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(AgentRow::from).collect())
    }

    /// One agent.
    pub async fn agent(&self, id: &str) -> Result<Option<AgentRow>, StoreError> {
        let row: Option<StoredAgent> = sqlx::query_as(select_agents!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(AgentRow::from))
    }

    /// Drains an agent (no new sessions) or ends the drain; false when no
    /// such agent is known.
    pub async fn set_agent_draining(&self, id: &str, to: Drain) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE agents SET draining = $1 WHERE id = $2")
            .bind(i32::from(to == Drain::Drained))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// What live sessions on `agent_id` hold.
    pub async fn agent_usage(&self, agent_id: &str) -> Result<Usage, StoreError> {
        let (cpu, mem, gpus): (Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT CAST(SUM(cpu_milli) AS BIGINT), CAST(SUM(mem_bytes) AS BIGINT), \
             CAST(SUM(gpus) AS BIGINT) FROM sessions \
             WHERE agent_id = $1 AND status IN ('PENDING', 'PREPARING', 'RUNNING')",
        )
        .bind(agent_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Usage {
            cpu_milli: cpu.unwrap_or(0),
            mem_bytes: mem.unwrap_or(0),
            gpus: gpus.unwrap_or(0),
        })
    }

    /// Gives agent `id` its own credential, replacing any earlier one (which
    /// stops working at once); returns it.
    pub async fn enroll_agent(&self, id: &str) -> Result<AgentCredential, StoreError> {
        let token = format!("{CREDENTIAL_PREFIX}{}", random_string(43));
        sqlx::query(
            "INSERT INTO agent_credentials (agent_id, token, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (agent_id) DO UPDATE SET token = excluded.token, \
             created_at = excluded.created_at",
        )
        .bind(id)
        .bind(&token)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(AgentCredential(token))
    }

    /// Deletes agent `id`'s credential; false when it had none.
    pub async fn revoke_agent(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM agent_credentials WHERE agent_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Agent `id`'s own credential, when it is enrolled.
    pub async fn agent_credential(&self, id: &str) -> Result<Option<AgentCredential>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT token FROM agent_credentials WHERE agent_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(t,)| AgentCredential(t)))
    }

    /// Every enrolled agent, by id.
    pub async fn enrollments(&self) -> Result<Vec<Enrollment>, StoreError> {
        Ok(
            sqlx::query_as("SELECT agent_id, created_at FROM agent_credentials ORDER BY agent_id")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
