-- index_usage_stats: scans of every user index since the statistics were last reset, fewest
-- first, with its size and whether it is unique, primary or backs a constraint (those enforce
-- something, so few scans do not make them removable). After pghero's unused_indexes (MIT, see
-- THIRD_PARTY_NOTICES).
SELECT ui.schemaname::text AS schemaname,
       ui.relname::text AS relname,
       ui.indexrelname::text AS indexrelname,
       ui.indexrelid::bigint AS index_oid,
       ui.idx_scan::bigint AS index_scans,
       pg_relation_size(ui.indexrelid)::bigint AS index_bytes,
       i.indisunique AS is_unique,
       i.indisprimary AS is_primary,
       (c.conindid IS NOT NULL) AS backs_constraint,
       i.indisvalid AS is_valid,
       (SELECT d.stats_reset FROM pg_stat_database d WHERE d.datname = current_database())
           AS stats_reset
FROM pg_stat_user_indexes ui
JOIN pg_index i ON i.indexrelid = ui.indexrelid
-- Aggregated once and hash-joined: pg_constraint has no index on conindid.
LEFT JOIN (SELECT DISTINCT conindid FROM pg_constraint WHERE conindid <> 0) c
       ON c.conindid = ui.indexrelid
ORDER BY ui.idx_scan ASC, pg_relation_size(ui.indexrelid) DESC, ui.schemaname, ui.indexrelname
