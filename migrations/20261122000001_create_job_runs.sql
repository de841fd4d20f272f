-- job_runs: one row per attempt of a job, written by workers through store::runs.
--
-- Delivery is at-least-once, so writes are idempotent on UNIQUE (job_id, attempt): a finished
-- row is never overwritten; only a 'running' or 'abandoned' row may be completed later.
--
-- Retention: delete finished rows older than a cutoff in bounded batches through
-- job_runs_finished_at_idx (store::runs::delete_runs_older_than), so no statement holds locks
-- or bloats WAL for long. Range partitioning by finished_at was rejected: a unique key on a
-- partitioned table must include the partition key, and (job_id, attempt) is the key that
-- makes writes idempotent while finished_at changes when a running row completes.
CREATE TABLE job_runs (
    id           bigserial   PRIMARY KEY,
    job_id       uuid        NOT NULL,
    attempt      integer     NOT NULL CHECK (attempt >= 0),
    kind         text        NOT NULL,
    queue        text        NOT NULL,
    status       text        NOT NULL
                 CHECK (status IN ('running', 'succeeded', 'failed', 'abandoned', 'skipped')),
    schedule     text,
    tick_at      timestamptz,
    enqueued_at  timestamptz NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    duration_ms  bigint,
    worker       text        NOT NULL,
    args         jsonb       NOT NULL DEFAULT '{}',
    outcome      jsonb,
    error        text,
    -- What the queue did after this attempt: 'done' (succeeded or skipped), 'retrying' or 'dead'.
    next_state   text        CHECK (next_state IN ('done', 'retrying', 'dead')),
    -- When the ledger last wrote this row (differs from finished_at when a worker's batch
    -- was delayed).
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    -- Also serves "every attempt of a job" (its leading column is job_id), so there is no
    -- separate index on job_id.
    UNIQUE (job_id, attempt)
);

-- Recent runs (newest first; running rows, whose finished_at is null, sort first as in
-- ORDER BY finished_at DESC) and the retention delete.
CREATE INDEX job_runs_finished_at_idx ON job_runs (finished_at DESC);
-- Recent runs of one kind, optionally with one status (`upkeepctl runs`, GET /api/v1/runs).
CREATE INDEX job_runs_kind_status_finished_at_idx ON job_runs (kind, status, finished_at DESC);
-- What ran for a schedule's tick (task lists, "did the 02:00 backup run?").
CREATE INDEX job_runs_schedule_tick_at_idx ON job_runs (schedule, tick_at)
    WHERE schedule IS NOT NULL;
