//! Agents (nodes) as last reported.

use super::{Store, StoreError, now_ms};

/// An agent's registration.
#[derive(Debug, Clone, sqlx::FromRow)]
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
    /// Last heartbeat (epoch ms).
    pub last_seen: i64,
}

impl Store {
    /// Records a heartbeat.
    pub async fn upsert_agent(&self, a: &AgentRow) -> Result<(), StoreError> {
        // One atomic statement; `ON CONFLICT … DO UPDATE` is the same in
        // SQLite and PostgreSQL.
        sqlx::query(
            "INSERT INTO agents (id, url, version, cpu_milli, mem_bytes, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET url = excluded.url, version = excluded.version, \
             cpu_milli = excluded.cpu_milli, mem_bytes = excluded.mem_bytes, \
             last_seen = excluded.last_seen",
        )
        .bind(&a.id)
        .bind(&a.url)
        .bind(&a.version)
        .bind(a.cpu_milli)
        .bind(a.mem_bytes)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Agents seen within `max_age_ms`.
    pub async fn online_agents(&self, max_age_ms: i64) -> Result<Vec<AgentRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, url, version, cpu_milli, mem_bytes, last_seen FROM agents \
             WHERE last_seen > $1 ORDER BY id",
        )
        .bind(now_ms() - max_age_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// One agent.
    pub async fn agent(&self, id: &str) -> Result<Option<AgentRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, url, version, cpu_milli, mem_bytes, last_seen FROM agents WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// CPU millicores and memory held by live sessions on `agent_id`.
    pub async fn agent_usage(&self, agent_id: &str) -> Result<(i64, i64), StoreError> {
        let (cpu, mem): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT CAST(SUM(cpu_milli) AS BIGINT), CAST(SUM(mem_bytes) AS BIGINT) FROM sessions \
             WHERE agent_id = $1 AND status IN ('PENDING', 'PREPARING', 'RUNNING')",
        )
        .bind(agent_id)
        .fetch_one(&self.pool)
        .await?;
        Ok((cpu.unwrap_or(0), mem.unwrap_or(0)))
    }
}
