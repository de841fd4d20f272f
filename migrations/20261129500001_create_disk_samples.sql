-- system.disk: one row per filesystem per run, for the "full within 24 h" trend and capacity
-- planning. subject is the filesystem's mount point.
CREATE TABLE disk_samples (
    id          bigserial   PRIMARY KEY,
    subject     text        NOT NULL,
    sampled_at  timestamptz NOT NULL,
    used_bytes  bigint      NOT NULL,
    avail_bytes bigint      NOT NULL,
    total_bytes bigint      NOT NULL
);
CREATE INDEX disk_samples_subject_sampled_at_idx ON disk_samples (subject, sampled_at);
