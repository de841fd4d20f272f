-- schedule_events: who paused, resumed, triggered or backfilled which schedule, and what each
-- reconciliation with the config added, changed or removed (actor 'config').
CREATE TABLE schedule_events (
    id        bigserial   PRIMARY KEY,
    schedule  text        NOT NULL,
    action    text        NOT NULL
              CHECK (action IN ('pause', 'resume', 'trigger', 'backfill', 'added', 'changed',
                                'removed')),
    actor     text        NOT NULL,
    detail    jsonb       NOT NULL DEFAULT '{}',
    at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX schedule_events_schedule_at_idx ON schedule_events (schedule, at DESC);
