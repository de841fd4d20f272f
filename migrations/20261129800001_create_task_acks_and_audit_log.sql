-- task_acks: an operator's acknowledgement of a checklist item in one period window, with a
-- note. A manual item ("security audit") is done by one; an item in `attention` is done once
-- acknowledged after the run it covers. Rows are never updated: a later acknowledgement is a
-- new row, and the newest one counts.
CREATE TABLE task_acks (
    id            bigserial   PRIMARY KEY,
    period        text        NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly')),
    item          text        NOT NULL,
    window_start  date        NOT NULL,
    note          text        NOT NULL,
    actor         text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX task_acks_item_window_idx
    ON task_acks (period, item, window_start, created_at DESC);

-- audit_log: every mutating operator action (API call, CLI verb), whoever made it and with
-- what result. Append-only; read newest first.
CREATE TABLE audit_log (
    id           bigserial   PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    actor        text        NOT NULL,
    action       text        NOT NULL,
    target       text        NOT NULL,
    client_addr  text,
    result       text        NOT NULL,
    detail       jsonb
);
