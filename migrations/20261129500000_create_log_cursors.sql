-- logs.scan_errors: where each source's reading stopped, and what each run counted.
-- A run commits its cursors, its batch and its counts in one transaction, so a run that dies
-- before the commit leaves no trace and the next one reads the same lines once.

CREATE TABLE log_cursors (
    source     text        NOT NULL,
    path       text        NOT NULL,
    device     bigint      NOT NULL,
    inode      bigint      NOT NULL,
    "offset"   bigint      NOT NULL CHECK ("offset" >= 0),
    head_len   bigint      NOT NULL,
    head_hash  bytea       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, path)
);

-- One committed read of one source by one attempt of a job.
CREATE TABLE log_scan_batches (
    id               bigserial   PRIMARY KEY,
    job_id           uuid        NOT NULL,
    source           text        NOT NULL,
    bytes_read       bigint      NOT NULL,
    lines_read       bigint      NOT NULL,
    backlog_bytes    bigint      NOT NULL,
    gaps             jsonb       NOT NULL DEFAULT '[]',
    previous_scan_at timestamptz,
    committed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX log_scan_batches_job_id_idx ON log_scan_batches (job_id, source);
CREATE INDEX log_scan_batches_committed_at_idx ON log_scan_batches (committed_at);

-- Lines per severity (signature '') and per signature (warning and worse) of a batch.
CREATE TABLE log_scan_counts (
    batch_id  bigint NOT NULL REFERENCES log_scan_batches (id) ON DELETE CASCADE,
    severity  text   NOT NULL,
    signature text   NOT NULL,
    count     bigint NOT NULL,
    example   text   NOT NULL,
    PRIMARY KEY (batch_id, severity, signature)
);

-- Every signature ever seen per source: "new" means first seen by this job.
CREATE TABLE log_signatures (
    source        text        NOT NULL,
    severity      text        NOT NULL,
    signature     text        NOT NULL,
    first_job_id  uuid        NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    total         bigint      NOT NULL,
    example       text        NOT NULL,
    PRIMARY KEY (source, severity, signature)
);
