-- Whole NVIDIA GPUs: how many a node has (its heartbeat says) and how many
-- a session holds; and the node's load as its last heartbeat said (the
-- 1-minute load average in thousandths, available memory in bytes).
ALTER TABLE agents ADD COLUMN gpus INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN gpus INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN load_milli BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN mem_available BIGINT NOT NULL DEFAULT 0;
