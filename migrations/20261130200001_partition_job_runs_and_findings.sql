-- job_runs and findings become native range-partitioned tables, one partition per calendar month
-- (UTC), so ledger retention detaches and drops whole months instead of deleting rows.
--
-- Partition key: job_id. Job ids are UUIDv7 (JobId::new): their first 48 bits are the unix
-- milliseconds at which the job was minted, and Postgres compares uuids bytewise, so the ids
-- minted in a month are exactly the range [upkeep_uuid_floor(month start),
-- upkeep_uuid_floor(next month start)). Keying on job_id keeps the idempotency keys as they were
-- (PRIMARY KEY (job_id, attempt) and (job_id, attempt, ordinal) already include the partition
-- key), so every `ON CONFLICT` keeps its target, and every attempt and finding of a job lives in
-- the same month's partitions as the job. (finished_at, the earlier candidate, changes when a
-- running row completes, and a unique key must include the partition key.)
--
-- Invariants (see ARCHITECTURE.md, store::partitions):
-- - partitions are named <table>_pYYYYMM, created ahead (current month + 2) by this migration,
--   by `upkeepctl migrate` and by the workers' maintenance loop;
-- - <table>_default takes whatever has no month partition (ids that are not v7, months not
--   created yet), so an insert never fails; creating a month moves its rows out of the default;
-- - retention drops a month of both tables together, only when its whole range is older than the
--   cutoff, and never while its job_runs partition holds a running row or a row finished after
--   the cutoff.
-- - `id` stays a sequence-assigned, increasing row id (keyset pagination); it is indexed but no
--   longer the primary key (a primary key must include the partition key).

CREATE FUNCTION upkeep_uuid_floor(ts timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0')
            || '00000000000000000000')::uuid
$$;

-- The old tables step aside; their sequences are kept (ids continue) and their indexes are
-- dropped so the new ones can take the same names.
ALTER TABLE job_runs RENAME TO job_runs_unpartitioned;
ALTER TABLE findings RENAME TO findings_unpartitioned;
ALTER SEQUENCE job_runs_id_seq OWNED BY NONE;
ALTER SEQUENCE findings_id_seq OWNED BY NONE;
DROP INDEX job_runs_finished_at_idx;
DROP INDEX job_runs_kind_status_finished_at_idx;
DROP INDEX job_runs_schedule_tick_at_idx;
DROP INDEX job_runs_schedule_succeeded_idx;
DROP INDEX findings_code_created_at_idx;
DROP INDEX findings_code_subject_created_at_idx;
ALTER TABLE job_runs_unpartitioned RENAME CONSTRAINT job_runs_pkey TO job_runs_unpartitioned_pkey;
ALTER TABLE findings_unpartitioned RENAME CONSTRAINT findings_pkey TO findings_unpartitioned_pkey;

CREATE TABLE job_runs (
    id           bigint      NOT NULL DEFAULT nextval('job_runs_id_seq'),
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
    next_state   text        CHECK (next_state IN ('done', 'retrying', 'dead')),
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    -- The idempotency key, and "every attempt of a job" (leading column job_id).
    PRIMARY KEY (job_id, attempt)
) PARTITION BY RANGE (job_id);
ALTER SEQUENCE job_runs_id_seq OWNED BY job_runs.id;

CREATE TABLE findings (
    id          bigint      NOT NULL DEFAULT nextval('findings_id_seq'),
    job_id      uuid        NOT NULL,
    attempt     integer     NOT NULL,
    ordinal     integer     NOT NULL,
    kind        text        NOT NULL,
    code        text        NOT NULL,
    severity    text        NOT NULL CHECK (severity IN ('ok', 'warn', 'critical')),
    message     text        NOT NULL,
    detail      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    subject     text,
    -- Idempotency of a run's findings; also serves the lookup of one attempt's findings.
    PRIMARY KEY (job_id, attempt, ordinal)
) PARTITION BY RANGE (job_id);
ALTER SEQUENCE findings_id_seq OWNED BY findings.id;

-- Indexes (partitioned: each partition gets its own).
-- Newest-first keyset pagination by id (GET /api/v1/runs?before=), and lookups by id.
CREATE INDEX job_runs_id_idx ON job_runs (id);
-- The same with a kind or a status filter.
CREATE INDEX job_runs_kind_id_idx ON job_runs (kind, id);
CREATE INDEX job_runs_status_id_idx ON job_runs (status, id);
-- Recent runs by finish time (`upkeepctl runs`, reconciliation, failure signatures), and the
-- retention check (DESC puts running rows, whose finished_at is null, first).
CREATE INDEX job_runs_finished_at_idx ON job_runs (finished_at DESC);
-- Task-list evidence: the newest succeeded/failed run of a kind in a window.
CREATE INDEX job_runs_kind_status_finished_at_idx ON job_runs (kind, status, finished_at DESC);
-- What ran for a schedule's tick.
CREATE INDEX job_runs_schedule_tick_at_idx ON job_runs (schedule, tick_at)
    WHERE schedule IS NOT NULL;
-- A schedule's last success (store::health).
CREATE INDEX job_runs_schedule_succeeded_idx ON job_runs (schedule, finished_at DESC)
    WHERE status = 'succeeded' AND schedule IS NOT NULL;

CREATE INDEX findings_id_idx ON findings (id);
CREATE INDEX findings_code_created_at_idx ON findings (code, created_at DESC);
CREATE INDEX findings_code_subject_created_at_idx
    ON findings (code, subject, created_at DESC, id DESC);

CREATE TABLE job_runs_default PARTITION OF job_runs DEFAULT;
CREATE TABLE findings_default PARTITION OF findings DEFAULT;

-- One month partition of each table for every month the existing v7 ids were minted in (up to
-- two months ahead), and for the current month and the next two.
DO $$
DECLARE
    month date;
BEGIN
    FOR month IN
        SELECT DISTINCT date_trunc('month', to_timestamp(
                   ('x' || lpad(replace(left(job_id::text, 13), '-', ''), 16, '0'))::bit(64)::bigint
                   / 1000.0) AT TIME ZONE 'UTC')::date
        FROM job_runs_unpartitioned
        WHERE substr(job_id::text, 15, 1) = '7'
        UNION
        SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => n))::date
        FROM generate_series(0, 2) AS n
    LOOP
        IF month < date '2000-01-01'
           OR month > (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months') THEN
            CONTINUE;
        END IF;
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF job_runs FOR VALUES FROM (%L) TO (%L)',
            'job_runs_p' || to_char(month, 'YYYYMM'),
            upkeep_uuid_floor(month::timestamp AT TIME ZONE 'UTC'),
            upkeep_uuid_floor((month + interval '1 month') AT TIME ZONE 'UTC'));
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF findings FOR VALUES FROM (%L) TO (%L)',
            'findings_p' || to_char(month, 'YYYYMM'),
            upkeep_uuid_floor(month::timestamp AT TIME ZONE 'UTC'),
            upkeep_uuid_floor((month + interval '1 month') AT TIME ZONE 'UTC'));
    END LOOP;
END
$$;

INSERT INTO job_runs (id, job_id, attempt, kind, queue, status, schedule, tick_at, enqueued_at,
                      started_at, finished_at, duration_ms, worker, args, outcome, error,
                      next_state, recorded_at)
SELECT id, job_id, attempt, kind, queue, status, schedule, tick_at, enqueued_at, started_at,
       finished_at, duration_ms, worker, args, outcome, error, next_state, recorded_at
FROM job_runs_unpartitioned;
INSERT INTO findings (id, job_id, attempt, ordinal, kind, code, severity, message, detail,
                      created_at, subject)
SELECT id, job_id, attempt, ordinal, kind, code, severity, message, detail, created_at, subject
FROM findings_unpartitioned;

DROP TABLE job_runs_unpartitioned;
DROP TABLE findings_unpartitioned;
