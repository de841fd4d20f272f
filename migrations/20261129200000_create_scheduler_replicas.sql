-- One row per running scheduler replica: its last live sign and how far it has decided ticks.
-- A starting (or recovering) replica plans catch-up only for ticks due at or before the
-- oldest `decided_until` of the replicas still alive, so it never records as `missed` a tick
-- that a live but lagging replica is about to enqueue.
CREATE TABLE scheduler_replicas (
    identity      text PRIMARY KEY,
    -- Every tick due at or before this instant has been decided (claimed) by this replica.
    decided_until timestamptz NOT NULL,
    -- When the replica last wrote this row (on the replica's clock, like tick times).
    seen_at       timestamptz NOT NULL
);
