-- schedule_ticks: one row per expected tick of a schedule, with its decision.
--
-- UNIQUE (schedule, fire_at) is what makes scheduler replicas safe without a leader: only the
-- replica whose INSERT ... ON CONFLICT DO NOTHING returns the row enqueues the tick
-- (store::ticks::claim_tick). Its btree also serves "latest ticks of a schedule" by scanning
-- backwards, so there is no separate (schedule, fire_at DESC) index.
--
-- No foreign key to schedules: ticks of a removed schedule stay as history.
-- enqueued_at is null until the enqueue is confirmed; a claim that implies an enqueue and stays
-- unconfirmed (its claimer died in between) is re-enqueued by any replica.
CREATE TABLE schedule_ticks (
    id           bigserial   PRIMARY KEY,
    schedule     text        NOT NULL,
    fire_at      timestamptz NOT NULL,
    decision     text        NOT NULL
                 CHECK (decision IN ('pending', 'enqueued', 'caught_up', 'skipped_overlap',
                                     'skipped_paused', 'missed', 'manual', 'backfill')),
    job_id       uuid,
    claimed_by   text        NOT NULL,
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    enqueued_at  timestamptz,
    note         text,
    UNIQUE (schedule, fire_at)
);

-- Claims whose enqueue was never confirmed (store::ticks::unconfirmed_ticks); stays tiny.
CREATE INDEX schedule_ticks_unconfirmed_idx ON schedule_ticks (claimed_at)
    WHERE enqueued_at IS NULL AND decision IN ('enqueued', 'caught_up', 'manual', 'backfill');
