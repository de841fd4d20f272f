-- Alerts (issue #16): incidents keyed by (rule, subject), and the durable outbox of messages
-- (alert notifications and heartbeat pings) that worker daemons deliver.

-- One row per incident. At most one open incident per (rule, event, subject): the partial unique
-- index is what makes concurrent evaluators produce one incident (INSERT ... ON CONFLICT).
CREATE TABLE alert_incidents (
    id               bigserial   PRIMARY KEY,
    rule             text        NOT NULL,
    subject          text        NOT NULL,
    event            text        NOT NULL,
    severity         text        NOT NULL,
    summary          text        NOT NULL,
    details          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    first_seen       timestamptz NOT NULL,
    last_seen        timestamptz NOT NULL,
    -- When the newest firing message (first or repeat) was queued.
    last_notified_at timestamptz NOT NULL,
    n_notified       integer     NOT NULL DEFAULT 1,
    resolved_at      timestamptz
);

CREATE UNIQUE INDEX alert_incidents_open_idx ON alert_incidents (rule, event, subject)
    WHERE resolved_at IS NULL;
CREATE INDEX alert_incidents_resolved_at_idx ON alert_incidents (resolved_at)
    WHERE resolved_at IS NOT NULL;

-- One row per message to one sink (or one ping URL). `message_id` is the idempotency key a
-- receiver sees; `dedup_key` makes producers that may run twice (pings) insert once.
--   pending  -> sending (claimed, lease until claimed_until) -> sent
--            -> pending again (failed, next_attempt_at after backoff) -> failed (gave up)
--   sending with an expired lease: the worker died mid-delivery -> in_doubt (or pending when
--   alerts.redeliver_in_doubt is true).
CREATE TABLE alert_outbox (
    id              bigserial   PRIMARY KEY,
    message_id      uuid        NOT NULL UNIQUE,
    dedup_key       text        UNIQUE,
    kind            text        NOT NULL CHECK (kind IN ('alert', 'ping', 'test')),
    sink            text        NOT NULL,
    incident_id     bigint      REFERENCES alert_incidents (id) ON DELETE SET NULL,
    payload         jsonb       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'in_doubt')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_by      text,
    claimed_until   timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);

CREATE INDEX alert_outbox_due_idx ON alert_outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX alert_outbox_lease_idx ON alert_outbox (claimed_until) WHERE state = 'sending';
CREATE INDEX alert_outbox_created_at_idx ON alert_outbox (created_at);
