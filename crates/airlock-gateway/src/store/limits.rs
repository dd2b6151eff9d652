//! Per-user quota overrides and the counts quotas are checked against.

use super::{Store, StoreError, now_ms};

/// One quota: a maximum, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// No limit.
    Unlimited,
    /// At most this many (sessions, tunnels, folders) or bytes (uploads).
    Max(u64),
}

impl Limit {
    /// The maximum, if there is one.
    pub fn max(self) -> Option<u64> {
        match self {
            Limit::Unlimited => None,
            Limit::Max(n) => Some(n),
        }
    }

    /// Whether one more fits when `in_use` are taken already.
    pub fn admits_one_more(self, in_use: u64) -> bool {
        match self {
            Limit::Unlimited => true,
            Limit::Max(n) => in_use < n,
        }
    }

    /// Database spelling: -1 for unlimited.
    fn to_db(self) -> i64 {
        match self {
            Limit::Unlimited => -1,
            Limit::Max(n) => i64::try_from(n).unwrap_or(i64::MAX),
        }
    }

    /// Reads the database spelling (any negative value is unlimited).
    fn from_db(v: i64) -> Self {
        u64::try_from(v).map_or(Limit::Unlimited, Limit::Max)
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Unlimited => f.write_str("unlimited"),
            Limit::Max(n) => write!(f, "{n}"),
        }
    }
}

/// An account's overrides of the server-wide quotas; `None` = the server's
/// default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLimits {
    /// Concurrent live sessions.
    pub sessions: Option<Limit>,
    /// Concurrent tunnels (SSH connections through the gateway).
    pub tunnels: Option<Limit>,
    /// Bytes of one upload.
    pub upload_bytes: Option<Limit>,
    /// Folders owned.
    pub folders: Option<Limit>,
}

#[derive(sqlx::FromRow)]
struct Row {
    max_sessions: Option<i64>,
    max_tunnels: Option<i64>,
    max_upload_bytes: Option<i64>,
    max_folders: Option<i64>,
}

fn to_db(l: Option<Limit>) -> Option<i64> {
    l.map(Limit::to_db)
}

impl Store {
    /// The overrides recorded for an account (all `None` when none are).
    pub async fn user_limits(&self, user_id: &str) -> Result<UserLimits, StoreError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT max_sessions, max_tunnels, max_upload_bytes, max_folders \
             FROM user_limits WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map_or_else(UserLimits::default, |r| UserLimits {
            sessions: r.max_sessions.map(Limit::from_db),
            tunnels: r.max_tunnels.map(Limit::from_db),
            upload_bytes: r.max_upload_bytes.map(Limit::from_db),
            folders: r.max_folders.map(Limit::from_db),
        }))
    }

    /// Replaces an account's overrides (one atomic upsert).
    pub async fn set_user_limits(
        &self,
        user_id: &str,
        limits: &UserLimits,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_limits \
             (user_id, max_sessions, max_tunnels, max_upload_bytes, max_folders, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (user_id) DO UPDATE SET max_sessions = excluded.max_sessions, \
             max_tunnels = excluded.max_tunnels, max_upload_bytes = excluded.max_upload_bytes, \
             max_folders = excluded.max_folders, updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(to_db(limits.sessions))
        .bind(to_db(limits.tunnels))
        .bind(to_db(limits.upload_bytes))
        .bind(to_db(limits.folders))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sessions of a user that still hold a container or a name (anything
    /// but TERMINATED and ERROR).
    pub async fn live_session_count(&self, user_id: &str) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM sessions \
             WHERE user_id = $1 AND status NOT IN ('TERMINATED', 'ERROR')",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Folders a user owns.
    pub async fn folder_count(&self, user_id: &str) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM vfolders WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
