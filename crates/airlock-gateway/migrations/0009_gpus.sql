-- Whole NVIDIA GPUs: how many a node has (its heartbeat says) and how many
-- a session holds.
ALTER TABLE agents ADD COLUMN gpus INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN gpus INTEGER NOT NULL DEFAULT 0;
