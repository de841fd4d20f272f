-- dashboard_sessions: one row per signed-in dashboard browser. The cookie holds a random
-- 256-bit value; only its SHA-256 is stored, so a copy of this table signs nobody in. Rows
-- live in Postgres (not in one process) so any API replica serves any session, and logout
-- on one replica is logout everywhere. csrf_token is the synchronizer token every form of
-- the session carries. Expired rows are deleted when someone signs in.
CREATE TABLE dashboard_sessions (
    id_hash      bytea       PRIMARY KEY,
    actor        text        NOT NULL,
    can_operate  boolean     NOT NULL,
    csrf_token   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

CREATE INDEX dashboard_sessions_expires_at_idx ON dashboard_sessions (expires_at);
