-- Fingerprints of the account SSH keys authorised in each session (so the
-- CLI knows whether a local key will be accepted).
ALTER TABLE sessions ADD COLUMN key_fingerprints TEXT NOT NULL DEFAULT '[]';
