-- report_snapshots: each health report a reports job took of a target database, one row per
-- (job, database, report), written by store::reports::record_snapshot. rows is the bounded
-- report (top N rows as JSON, each table row with its last_analyze) and total_count how many
-- rows there were before the limit; stats_reset says since when the counters run, so a reader
-- knows how old the numbers are. status is 'ok' or 'unavailable' (pg_stat_statements missing;
-- note says why and how to enable it). Delivery is at-least-once: a repeated write of the same
-- job's snapshot replaces it.
CREATE TABLE report_snapshots (
    id           bigserial   PRIMARY KEY,
    job_id       uuid        NOT NULL,
    database     text        NOT NULL,
    report       text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('ok', 'unavailable')),
    taken_at     timestamptz NOT NULL DEFAULT now(),
    stats_reset  timestamptz,
    total_count  bigint      NOT NULL DEFAULT 0,
    rows         jsonb       NOT NULL DEFAULT '[]',
    note         text,
    UNIQUE (job_id, database, report)
);

-- The latest snapshots of one report of one database.
CREATE INDEX report_snapshots_database_report_taken_at_idx
    ON report_snapshots (database, report, taken_at DESC);

-- report_index_first_seen: when upkeep first saw an index in an index_usage report. Postgres 15
-- records no creation time for an index, and "few scans" only means "unused" for an index that
-- has existed for a while (reports.thresholds.unused_index_min_age). Keyed by the index's oid
-- as well as its name, so a dropped and recreated index starts over.
CREATE TABLE report_index_first_seen (
    database    text        NOT NULL,
    index_name  text        NOT NULL,
    index_oid   bigint      NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (database, index_oid, index_name)
);
