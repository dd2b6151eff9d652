-- The audit trail. Append-only from the API's point of view: the gateway
-- only inserts, reads, and prunes rows older than the retention period.
-- No foreign keys: events outlive the users and sessions they name.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    user_id TEXT,
    user_email TEXT,
    client TEXT,
    session_id TEXT,
    session_name TEXT,
    conn_id TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_user ON events (user_id, at);
CREATE INDEX events_session ON events (session_id, at);
CREATE INDEX events_conn ON events (conn_id);
