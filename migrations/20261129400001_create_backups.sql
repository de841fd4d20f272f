-- The backup catalog: one row per committed backup (a manifest on disk). A dump that failed or
-- was interrupted never gets a row; its partial files live under .tmp/ and are swept.
CREATE TABLE backups (
    id                bigserial PRIMARY KEY,
    database          text        NOT NULL,
    format            text        NOT NULL CHECK (format IN ('custom', 'directory')),
    -- The data (a file for custom, a directory for directory format), the manifest, globals.
    path              text        NOT NULL UNIQUE,
    manifest_path     text        NOT NULL,
    globals_path      text,
    size_bytes        bigint      NOT NULL CHECK (size_bytes >= 0),
    -- Hex SHA-256 of the data file (custom) or of the manifest's file list (directory).
    sha256            text        NOT NULL,
    server_version    text        NOT NULL,
    pg_dump_version   text        NOT NULL,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL,
    -- toc < full_read < restored; 'corrupt' once a verification found it damaged.
    verification      text        NOT NULL CHECK (verification IN ('toc', 'full_read', 'restored', 'corrupt')),
    verified_at       timestamptz,
    restore_tested_at timestamptz,
    restore_ok        boolean,
    restore_error     text,
    table_count       integer     NOT NULL,
    row_counts        jsonb       NOT NULL DEFAULT '{}',
    copies            jsonb       NOT NULL DEFAULT '[]',
    job_id            uuid,
    deleted_at        timestamptz
);

CREATE INDEX backups_database_finished_idx ON backups (database, finished_at DESC) WHERE deleted_at IS NULL;
