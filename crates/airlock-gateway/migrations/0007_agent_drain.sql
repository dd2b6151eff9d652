-- An administrator can drain a node: no new sessions are scheduled on it,
-- the ones it runs stay. 0 or 1.
ALTER TABLE agents ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;
