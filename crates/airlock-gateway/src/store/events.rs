//! The audit trail: append, read back with filters, prune by age. There is
//! deliberately no update and no per-row delete.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, rfc3339};

/// One recorded event: what was appended, with the id the store gave it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Sortable id (time, then a sequence number).
    pub id: String,
    /// RFC 3339 rendering of `at` (for people and `jq`).
    pub time: String,
    /// What happened (its fields appear at this level in JSON).
    #[serde(flatten)]
    pub what: NewEvent,
}

/// An event to append (the store assigns the id).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NewEvent {
    /// Epoch milliseconds.
    pub at: i64,
    /// What happened, e.g. `login.ok`, `tunnel.closed`, `sftp.write`.
    pub kind: String,
    /// The account it concerns (or that acted).
    pub user_id: Option<String>,
    /// That account's email when the event happened.
    pub user: Option<String>,
    /// The client's address as the gateway saw it.
    pub client: Option<String>,
    /// The session it concerns.
    pub session_id: Option<String>,
    /// That session's name.
    pub session: Option<String>,
    /// Ties together the events of one connection (an HTTP connection, a
    /// tunnel and the SSH connection inside it).
    pub conn: Option<String>,
    /// Kind-specific facts (paths, sizes, byte counts, reasons).
    pub detail: serde_json::Value,
}

impl NewEvent {
    /// The detail's fields that have a value, in order.
    pub fn details(&self) -> impl Iterator<Item = (&str, &serde_json::Value)> {
        self.detail
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.as_str(), v))
    }
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// An account id or email.
    pub user: Option<String>,
    /// Exactly this account id (a user's own view).
    pub user_id: Option<String>,
    /// A session id or name.
    pub session: Option<String>,
    /// Only events at or after this time (epoch ms).
    pub since: Option<i64>,
    /// Only events strictly after this id (for tailing).
    pub after_id: Option<String>,
    /// At most this many (the newest ones); `None` = all.
    pub limit: Option<u32>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    at: i64,
    kind: String,
    user_id: Option<String>,
    user_email: Option<String>,
    client: Option<String>,
    session_id: Option<String>,
    session_name: Option<String>,
    conn_id: Option<String>,
    detail: String,
}

impl From<Row> for Event {
    fn from(r: Row) -> Self {
        Event {
            time: rfc3339(r.at),
            id: r.id,
            what: NewEvent {
                at: r.at,
                kind: r.kind,
                user_id: r.user_id,
                user: r.user_email,
                client: r.client,
                session_id: r.session_id,
                session: r.session_name,
                conn: r.conn_id,
                detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
            },
        }
    }
}

/// Sequence within this process; with the time and a random suffix it makes
/// ids unique across processes and sortable within one.
static SEQ: AtomicU64 = AtomicU64::new(0);

fn event_id(at: i64) -> String {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let salt: u32 = rand::random();
    format!("{:013}-{:010}-{salt:08x}", at.max(0), seq % 10_000_000_000)
}

impl Store {
    /// Appends events in one transaction (a batch from a runner is one
    /// round trip's worth of work, not one per event).
    pub async fn append_events(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        // Multi-row INSERTs of up to ROWS rows (10 binds each; well under
        // SQLite's and PostgreSQL's bind limits), in one transaction.
        const ROWS: usize = 100;
        let mut tx = self.pool.begin().await?;
        for chunk in events.chunks(ROWS) {
            let mut sql = String::from(
                "INSERT INTO events (id, at, kind, user_id, user_email, client, session_id, \
                 session_name, conn_id, detail) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 10;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for j in 1..=10 {
                    if j > 1 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("${}", b + j));
                }
                sql.push(')');
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                q = q
                    .bind(event_id(e.at))
                    .bind(e.at)
                    .bind(e.kind.clone())
                    .bind(e.user_id.clone())
                    .bind(e.user.clone())
                    .bind(e.client.clone())
                    .bind(e.session_id.clone())
                    .bind(e.session.clone())
                    .bind(e.conn.clone())
                    .bind(e.detail.to_string());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Events matching `filter`, oldest first.
    pub async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let mut sql = String::from(
            "SELECT id, at, kind, user_id, user_email, client, session_id, session_name, \
             conn_id, detail FROM events WHERE 1 = 1",
        );
        let mut binds: Vec<String> = Vec::new();
        let mut n = 0;
        let mut next = |binds: &mut Vec<String>, v: String| {
            binds.push(v);
            n += 1;
            n
        };
        if let Some(u) = &filter.user {
            let i = next(&mut binds, u.clone());
            sql.push_str(&format!(" AND (user_id = ${i} OR user_email = ${i})"));
        }
        if let Some(u) = &filter.user_id {
            let i = next(&mut binds, u.clone());
            sql.push_str(&format!(" AND user_id = ${i}"));
        }
        if let Some(s) = &filter.session {
            let i = next(&mut binds, s.clone());
            sql.push_str(&format!(" AND (session_id = ${i} OR session_name = ${i})"));
        }
        if let Some(a) = &filter.after_id {
            let i = next(&mut binds, a.clone());
            sql.push_str(&format!(" AND id > ${i}"));
        }
        // The time bound is an integer bind (PostgreSQL will not compare a
        // BIGINT with TEXT).
        let since_idx = filter.since.map(|_| n + 1);
        if let Some(i) = since_idx {
            sql.push_str(&format!(" AND at >= ${i}"));
        }
        // Newest `limit`, then back to oldest first.
        sql.push_str(" ORDER BY at DESC, id DESC");
        if let Some(l) = filter.limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        let mut q = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql));
        for b in &binds {
            q = q.bind(b);
        }
        if let Some(since) = filter.since {
            q = q.bind(since);
        }
        let mut rows: Vec<Event> = q
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(Event::from)
            .collect();
        rows.reverse();
        Ok(rows)
    }

    /// Deletes events older than `before` (epoch ms): the retention period.
    pub async fn prune_events(&self, before: i64) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM events WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}
