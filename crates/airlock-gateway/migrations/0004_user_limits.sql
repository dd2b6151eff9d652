-- Per-user quota overrides set by an administrator. A NULL column means
-- "the server-wide default" (airlockd flags); -1 means unlimited; any other
-- value is the limit itself.
CREATE TABLE user_limits (
    user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    max_sessions BIGINT,
    max_tunnels BIGINT,
    max_upload_bytes BIGINT,
    max_folders BIGINT,
    updated_at BIGINT NOT NULL
);
