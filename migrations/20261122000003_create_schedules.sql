-- schedules: the schedules as last reconciled from the config by store::schedules::reconcile.
--
-- The config is the source of truth for the definition; the table adds what the config cannot
-- hold: the operator's pause flag (which survives reconciliation), whether the schedule is still
-- in the config (removed ones are kept, disabled, so their ticks and events keep a name), and
-- config_hash, a stable hash of the definition that tells "changed" from "unchanged".
CREATE TABLE schedules (
    name                text        PRIMARY KEY,
    cron                text        NOT NULL,
    timezone            text        NOT NULL,
    kind                text        NOT NULL,
    args                jsonb       NOT NULL DEFAULT '{}',
    queue               text        NOT NULL,
    catch_up            text        NOT NULL CHECK (catch_up IN ('skip', 'latest', 'all')),
    catch_up_window_ms  bigint      NOT NULL,
    catch_up_max        integer     NOT NULL,
    overlap             text        NOT NULL CHECK (overlap IN ('allow', 'skip', 'queue_one')),
    jitter_ms           bigint      NOT NULL DEFAULT 0,
    enabled             boolean     NOT NULL DEFAULT true,
    in_config           boolean     NOT NULL DEFAULT true,
    paused              boolean     NOT NULL DEFAULT false,
    paused_by           text,
    paused_at           timestamptz,
    config_hash         text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
