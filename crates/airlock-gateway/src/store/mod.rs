//! Persistent state behind a connection URL.
//!
//! Everything goes through sqlx's `Any` driver with portable SQL (`$n`
//! placeholders, TEXT ids, BIGINT epoch-millisecond times, INTEGER 0/1 flags), so
//! the same code and migrations run on SQLite (`sqlite://…`, the embedded
//! default) and PostgreSQL (`postgres://…`).

mod accounts;
mod agents;
mod events;
mod folders;
mod limits;
mod sessions;
mod settings;

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr};

pub use accounts::{Account, Keypair, NewUser, Role, User};
pub use agents::{AgentCredential, AgentRow, Drain, Enrollment, Usage};
pub use events::{Event, EventFilter, NewEvent};
pub use folders::Folder;
pub use limits::{Limit, UserLimits};
pub use sessions::{Lookup, MountRecord, NewSession, SessionRow, Status};

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database rejected or failed a query.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A unique constraint was violated (e.g. an email already registered).
    #[error("{0} already exists")]
    Conflict(String),
    /// Password hashing failed.
    #[error("password hashing failed")]
    Hash,
    /// The URL names a database we do not support.
    #[error("unsupported database URL {0:?} (use sqlite://PATH or postgres://…)")]
    Url(String),
}

/// The migrations, embedded in the binary.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "accounts",
        include_str!("../../migrations/0001_accounts.sql"),
    ),
    (
        2,
        "sessions",
        include_str!("../../migrations/0002_sessions.sql"),
    ),
    (
        3,
        "keys",
        include_str!("../../migrations/0003_session_keys.sql"),
    ),
    (
        4,
        "user limits",
        include_str!("../../migrations/0004_user_limits.sql"),
    ),
    (
        5,
        "events",
        include_str!("../../migrations/0005_events.sql"),
    ),
    (
        6,
        "session logs",
        include_str!("../../migrations/0006_session_logs.sql"),
    ),
    (
        7,
        "agent drain",
        include_str!("../../migrations/0007_agent_drain.sql"),
    ),
    (
        8,
        "agent credentials",
        include_str!("../../migrations/0008_agent_credentials.sql"),
    ),
    (
        9,
        "gpus and node load",
        include_str!("../../migrations/0009_gpus.sql"),
    ),
];

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(v, d, sql)| {
                Migration::new(
                    *v,
                    Cow::Borrowed(*d),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Milliseconds since the Unix epoch, the time unit of every table.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 rendering of an epoch-millisecond time.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A handle on the database (cheap to clone).
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::open(&url).await
    }

    /// Opens the database at `url` and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        if !is_sqlite && !url.starts_with("postgres:") && !url.starts_with("postgresql:") {
            return Err(StoreError::Url(url.to_owned()));
        }
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            // SQLite serialises writers anyway; a few connections let reads
            // proceed during a write (WAL).
            .max_connections(if is_sqlite { 4 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if is_sqlite {
                        // sqlx enables WAL and foreign keys by default; make
                        // concurrent writers wait instead of failing.
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        Ok(Self { pool })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes the pool, waiting for in-flight queries.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
fn conflict(what: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_owned())
        }
        _ => StoreError::Database(e),
    }
}
