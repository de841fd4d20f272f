-- slow_queries: statements of the current database from pg_stat_statements, most total time first.
-- Adapted from pghero's current_query_stats (MIT, see THIRD_PARTY_NOTICES). PG13+ column names.
SELECT s.queryid::bigint AS queryid,
       r.rolname::text AS username,
       s.calls::bigint AS calls,
       (s.total_plan_time + s.total_exec_time)::float8 AS total_ms,
       ((s.total_plan_time + s.total_exec_time) / NULLIF(s.calls, 0))::float8 AS mean_ms,
       s.rows::bigint AS rows,
       (100 * (s.total_plan_time + s.total_exec_time)
            / NULLIF(sum(s.total_plan_time + s.total_exec_time) OVER (), 0))::float8 AS pct_total_time,
       left(s.query, 10000)::text AS query
FROM pg_stat_statements s
JOIN pg_database d ON d.oid = s.dbid
LEFT JOIN pg_roles r ON r.oid = s.userid
WHERE s.calls > 0
  AND d.datname = current_database()
ORDER BY total_ms DESC
