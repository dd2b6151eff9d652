//! Users, their API keypairs and their web (cookie) sessions.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use rand::RngExt;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

use super::{Store, StoreError, conflict, now_ms};

/// Whether an account may log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// It may.
    Enabled,
    /// It may not; its logins end.
    Disabled,
}

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sees and manages everything.
    Admin,
    /// Sees only their own sessions, folders and tunnels.
    User,
}

impl Role {
    /// Database and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "admin" {
            Role::Admin
        } else {
            Role::User
        }
    }
}

/// An account.
#[derive(Debug, Clone)]
pub struct User {
    /// UUID.
    pub id: String,
    /// Login email (unique).
    pub email: String,
    /// Role.
    pub role: Role,
    /// Inactive users cannot log in or call the API.
    pub is_active: bool,
    /// Epoch milliseconds.
    pub created_at: i64,
}

impl User {
    /// Whether the user is an administrator.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// An API keypair.
#[derive(Clone)]
pub struct Keypair {
    /// 20 characters, `AKIA…`.
    pub access_key: String,
    /// 40 characters; never logged.
    pub secret_key: String,
    /// Owner.
    pub user_id: String,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<secret>")
            .field("user_id", &self.user_id)
            .finish()
    }
}

/// What it takes to create a user.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    /// Login email.
    pub email: &'a str,
    /// Plain password (hashed with argon2id before storing).
    pub password: &'a str,
    /// Role.
    pub role: Role,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    email: String,
    role: String,
    is_active: i32,
    created_at: i64,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: r.id,
            email: r.email,
            role: Role::parse(&r.role),
            is_active: r.is_active != 0,
            created_at: r.created_at,
        }
    }
}

/// `len` random letters and digits.
pub(super) fn random_string(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A new access key: `AKIA` and 16 upper-case letters or digits.
fn new_access_key() -> String {
    format!("AKIA{}", random_string(16).to_ascii_uppercase())
}

/// argon2id memory cost per hash, KiB (19 MiB: the OWASP minimum for m).
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// argon2id passes.
pub const ARGON2_ITERATIONS: u32 = 2;
/// Stored hashes with a larger memory cost than this are refused rather
/// than verified (bounds the memory a verification can take).
const ARGON2_MAX_MEMORY_KIB: u32 = 64 * 1024;

fn argon2() -> Argon2<'static> {
    let params =
        argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, 1, None).unwrap_or_default();
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// At most this many password hashes are computed at once (about one per
/// CPU), so a login flood costs bounded CPU and at most
/// `slots × ARGON2_MEMORY_KIB` of memory; the rest wait their turn.
fn hash_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        tokio::sync::Semaphore::new(n.clamp(1, 16))
    })
}

/// Runs CPU-heavy password work on a blocking thread, within the hashing
/// concurrency bound.
async fn with_hash_slot<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    let _permit = hash_slots().acquire().await.map_err(|_| StoreError::Hash)?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| StoreError::Hash)
}

/// Hashes a password with argon2id (CPU-heavy: call from a blocking thread).
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| StoreError::Hash)
}

/// Checks a password against a stored hash (CPU-heavy).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        let bounded = argon2::Params::try_from(&h)
            .is_ok_and(|p| p.m_cost() <= ARGON2_MAX_MEMORY_KIB && p.t_cost() <= 16);
        bounded && argon2().verify_password(password.as_bytes(), &h).is_ok()
    })
}

/// A fixed hash to verify against when the account does not exist, so that
/// response times do not reveal which emails are registered.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn dummy_hash() -> &'static str {
    DUMMY_HASH.get_or_init(|| hash_password("airlock-timing-equaliser").unwrap_or_default())
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `SELECT` of the columns a [`UserRow`] is read from, then `$tail`.
macro_rules! select_users {
    ($tail:literal) => {
        concat!(
            "SELECT id, email, role, is_active, created_at FROM users ",
            $tail
        )
    };
}

impl Store {
    /// Number of users.
    pub async fn user_count(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// Creates a user and their keypair.
    pub async fn create_user(&self, new: NewUser<'_>) -> Result<(User, Keypair), StoreError> {
        let password = new.password.to_owned();
        let hash = with_hash_slot(move || hash_password(&password)).await??;
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            // Emails are case-insensitive: store them lower-cased so that the
            // unique index sees `A@x` and `a@x` as the same account.
            email: new.email.trim().to_lowercase(),
            role: new.role,
            is_active: true,
            created_at: now_ms(),
        };
        let keypair = Keypair {
            access_key: new_access_key(),
            secret_key: random_string(40),
            user_id: user.id.clone(),
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, role, is_active, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&hash)
        .bind(user.role.as_str())
        .bind(i32::from(user.is_active))
        .bind(user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(conflict(&format!("a user with email {}", user.email)))?;
        sqlx::query(
            "INSERT INTO keypairs (access_key, secret_key, user_id, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&keypair.access_key)
        .bind(&keypair.secret_key)
        .bind(&user.id)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO user_settings (user_id, ssh_port) VALUES ($1, NULL)")
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((user, keypair))
    }

    /// Looks a user up by email (case-insensitive).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.one_user(select_users!("WHERE LOWER(email) = LOWER($1)"), email)
            .await
    }

    /// Looks a user up by id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.one_user(select_users!("WHERE id = $1"), id).await
    }

    /// The user that `sql` (with one parameter, `value`) finds.
    async fn one_user(&self, sql: &'static str, value: &str) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as(sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(User::from))
    }

    /// All users, oldest first.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows: Vec<UserRow> = sqlx::query_as(select_users!("ORDER BY created_at, email"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(User::from).collect())
    }

    /// Sets a new password and ends every web session of the account
    /// (in-memory transfer tokens are the caller's to revoke).
    pub async fn set_password(&self, user_id: &str, password: &str) -> Result<(), StoreError> {
        let password = password.to_owned();
        let hash = with_hash_slot(move || hash_password(&password)).await??;
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        // A new password ends every web session of the account.
        sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Enables or disables an account; disabling ends its web sessions.
    pub async fn set_account(&self, user_id: &str, to: Account) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET is_active = $1 WHERE id = $2")
            .bind(i32::from(to == Account::Enabled))
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if to == Account::Disabled {
            sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ends every web session (login cookie) of an account; returns how many.
    pub async fn delete_web_sessions_of(&self, user_id: &str) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Replaces every API keypair of an account with a new one (the old
    /// access keys stop working at once) and returns it.
    pub async fn regenerate_keypair(&self, user_id: &str) -> Result<Keypair, StoreError> {
        let keypair = Keypair {
            access_key: new_access_key(),
            secret_key: random_string(40),
            user_id: user_id.to_owned(),
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM keypairs WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO keypairs (access_key, secret_key, user_id, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&keypair.access_key)
        .bind(&keypair.secret_key)
        .bind(user_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(keypair)
    }

    /// Deletes every API keypair of an account (signed requests stop
    /// working until one is generated again); returns how many.
    pub async fn revoke_keypairs(&self, user_id: &str) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM keypairs WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Checks an email/password pair; `None` when wrong or unknown.
    pub async fn check_password(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Option<User>, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT id, password_hash FROM users WHERE LOWER(email) = LOWER($1)")
                .bind(email)
                .fetch_optional(&self.pool)
                .await?;
        let (id, hash) = match row {
            Some((id, hash)) => (Some(id), hash),
            None => (None, dummy_hash().to_owned()),
        };
        let password = password.to_owned();
        let ok = with_hash_slot(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        match (ok, id) {
            (true, Some(id)) => self.user_by_id(&id).await,
            _ => Ok(None),
        }
    }

    /// The keypair with this access key.
    pub async fn keypair(&self, access_key: &str) -> Result<Option<Keypair>, StoreError> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT access_key, secret_key, user_id FROM keypairs WHERE access_key = $1",
        )
        .bind(access_key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(access_key, secret_key, user_id)| Keypair {
            access_key,
            secret_key,
            user_id,
        }))
    }

    /// The (first) keypair of a user.
    pub async fn keypair_of(&self, user_id: &str) -> Result<Option<Keypair>, StoreError> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT access_key, secret_key, user_id FROM keypairs WHERE user_id = $1 \
             ORDER BY created_at LIMIT 1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(access_key, secret_key, user_id)| Keypair {
            access_key,
            secret_key,
            user_id,
        }))
    }

    /// Starts a web session; returns the cookie value (only its hash is stored).
    pub async fn create_web_session(
        &self,
        user_id: &str,
        max_age_secs: i64,
    ) -> Result<String, StoreError> {
        let token = hex::encode(rand::random::<[u8; 16]>());
        let now = now_ms();
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(hash_token(&token))
        .bind(user_id)
        .bind(now)
        .bind(now + max_age_secs * 1000)
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    /// The user of a live web session.
    pub async fn web_session_user(&self, token: &str) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT u.id, u.email, u.role, u.is_active, u.created_at FROM web_sessions s \
             JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1 AND s.expires_at > $2",
        )
        .bind(hash_token(token))
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(User::from))
    }

    /// Ends a web session.
    pub async fn delete_web_session(&self, token: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
            .bind(hash_token(token))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets expired web sessions.
    pub async fn purge_web_sessions(&self) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_keys_look_right() {
        let ak = new_access_key();
        assert_eq!(ak.len(), 20);
        assert!(ak.starts_with("AKIA"));
        assert!(
            ak.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
        assert_eq!(random_string(40).len(), 40);
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("nope", &h));
        assert!(!verify_password("s3cret", "garbage"));
    }
}
