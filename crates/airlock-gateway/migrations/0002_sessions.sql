-- Agents (nodes), compute sessions and storage folders.

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    version TEXT NOT NULL,
    cpu_milli BIGINT NOT NULL,
    mem_bytes BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    image TEXT NOT NULL,
    status TEXT NOT NULL,
    status_info TEXT,
    status_changed BIGINT NOT NULL,
    agent_id TEXT,
    container_id TEXT,
    cpu_milli BIGINT NOT NULL,
    mem_bytes BIGINT NOT NULL,
    mounts TEXT NOT NULL,
    host_key TEXT,
    created_at BIGINT NOT NULL,
    terminated_at BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_agent ON sessions (agent_id);
-- A name is unique among a user's live sessions.
CREATE UNIQUE INDEX sessions_live_name ON sessions (user_id, name)
    WHERE status NOT IN ('TERMINATED', 'ERROR');

CREATE TABLE vfolders (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (user_id, name)
);
