-- findings: the observations an attempt reported in its outcome (disk.used_pct, backup.stale),
-- one row each, written by store::runs::record_runs in the same statement as the run row.
--
-- ordinal is the finding's position in the outcome's list: one outcome may report several
-- findings with the same code (one per disk), and UNIQUE (job_id, attempt, ordinal) makes a
-- repeated write a no-op. Its leading column also serves lookups by job_id, so there is no
-- separate index on job_id. created_at is the attempt's finished_at: when it was observed.
CREATE TABLE findings (
    id          bigserial   PRIMARY KEY,
    job_id      uuid        NOT NULL,
    attempt     integer     NOT NULL,
    ordinal     integer     NOT NULL,
    kind        text        NOT NULL,
    code        text        NOT NULL,
    severity    text        NOT NULL CHECK (severity IN ('ok', 'warn', 'critical')),
    message     text        NOT NULL,
    detail      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, attempt, ordinal)
);

-- Latest findings of a code (task lists, dashboards).
CREATE INDEX findings_code_created_at_idx ON findings (code, created_at DESC);
