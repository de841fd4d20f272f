-- Retention deletes report snapshots by age (logs::retention::prune, with the ledger's
-- retention); the existing index leads with (database, report), so the age scan needs its own.
CREATE INDEX report_snapshots_taken_at_idx ON report_snapshots (taken_at);
