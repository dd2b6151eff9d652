-- The last part of a session's container log, saved when it is terminated
-- (bounded: see sessions::SAVED_LOG_BYTES), so the log of a failed session
-- is still there when its owner looks.
CREATE TABLE session_logs (
    session_id TEXT PRIMARY KEY,
    log TEXT NOT NULL,
    saved_at BIGINT NOT NULL
);
