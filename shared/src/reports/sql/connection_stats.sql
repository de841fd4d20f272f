-- connection_stats: client connections of the whole server by state, against max_connections.
SELECT count(*)::bigint AS total,
       count(*) FILTER (WHERE a.datname = current_database())::bigint AS this_database,
       count(*) FILTER (WHERE a.state = 'active')::bigint AS active,
       count(*) FILTER (WHERE a.state = 'idle')::bigint AS idle,
       count(*) FILTER (WHERE a.state IN ('idle in transaction', 'idle in transaction (aborted)'))::bigint
           AS idle_in_transaction,
       count(*) FILTER (WHERE a.wait_event_type = 'Lock')::bigint AS waiting,
       current_setting('max_connections')::bigint AS max_connections,
       current_setting('superuser_reserved_connections')::bigint AS reserved_connections,
       round(100.0 * count(*) / current_setting('max_connections')::numeric, 2)::float8 AS used_pct
FROM pg_stat_activity a
WHERE a.backend_type = 'client backend'
