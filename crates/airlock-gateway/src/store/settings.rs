//! Per-user settings and account SSH public keys.

use airlock_proto::api::{SshKeyInfo, UserSettings};
use airlock_proto::sshkey::ParsedKey;

use super::{Store, StoreError, conflict, now_ms, rfc3339};

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    name: String,
    algorithm: String,
    fingerprint: String,
    public_key: String,
    created_at: i64,
}

impl From<KeyRow> for SshKeyInfo {
    fn from(r: KeyRow) -> Self {
        SshKeyInfo {
            id: r.id,
            name: r.name,
            algorithm: r.algorithm,
            fingerprint: r.fingerprint,
            public_key: r.public_key,
            created_at: rfc3339(r.created_at),
        }
    }
}

impl Store {
    /// A user's settings (defaults when never set).
    pub async fn settings(&self, user_id: &str) -> Result<UserSettings, StoreError> {
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT ssh_port FROM user_settings WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        let ssh_port = row.and_then(|(p,)| p).and_then(|p| u16::try_from(p).ok());
        Ok(UserSettings { ssh_port })
    }

    /// Stores the preferred SSH port (`None` clears it).
    pub async fn set_ssh_port(&self, user_id: &str, port: Option<u16>) -> Result<(), StoreError> {
        let port = port.map(i64::from);
        sqlx::query(
            "INSERT INTO user_settings (user_id, ssh_port) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET ssh_port = excluded.ssh_port",
        )
        .bind(user_id)
        .bind(port)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A user's SSH keys, oldest first.
    pub async fn ssh_keys(&self, user_id: &str) -> Result<Vec<SshKeyInfo>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT id, name, algorithm, fingerprint, public_key, created_at FROM ssh_keys \
             WHERE user_id = $1 ORDER BY created_at, name",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(SshKeyInfo::from).collect())
    }

    /// Registers a (validated) SSH key under `name`.
    pub async fn add_ssh_key(
        &self,
        user_id: &str,
        name: &str,
        key: &ParsedKey,
    ) -> Result<SshKeyInfo, StoreError> {
        let row = KeyRow {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            algorithm: key.algorithm.clone(),
            fingerprint: key.fingerprint.clone(),
            public_key: key.line.clone(),
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO ssh_keys (id, user_id, name, public_key, algorithm, fingerprint, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&row.id)
        .bind(user_id)
        .bind(&row.name)
        .bind(&row.public_key)
        .bind(&row.algorithm)
        .bind(&row.fingerprint)
        .bind(row.created_at)
        .execute(&self.pool)
        .await
        .map_err(conflict(&format!(
            "a key named {name:?} or with fingerprint {}",
            key.fingerprint
        )))?;
        Ok(row.into())
    }

    /// Removes the key whose id, name or fingerprint is `which`; returns it.
    pub async fn remove_ssh_key(
        &self,
        user_id: &str,
        which: &str,
    ) -> Result<Option<SshKeyInfo>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(
            "SELECT id, name, algorithm, fingerprint, public_key, created_at FROM ssh_keys \
             WHERE user_id = $1 AND (id = $2 OR name = $2 OR fingerprint = $2)",
        )
        .bind(user_id)
        .bind(which)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        sqlx::query("DELETE FROM ssh_keys WHERE id = $1")
            .bind(&row.id)
            .execute(&self.pool)
            .await?;
        Ok(Some(row.into()))
    }
}
