-- Per-agent credentials (`airlockd node enroll ID`): an enrolled agent
-- authenticates with its own token, and the gateway presents that token to
-- it; the shared --agent-token no longer works for that id. Revoking
-- deletes the row. The token is kept as is because the gateway must present
-- it (like the shared token, which lives in the gateway's environment).
CREATE TABLE agent_credentials (
    agent_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
