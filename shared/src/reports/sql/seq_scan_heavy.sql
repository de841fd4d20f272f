-- Tables of at least 10,000 estimated rows read mostly by sequential scans (fewer than 95 % of
-- scans use an index): a missing-index hint. After pghero's missing_indexes (MIT, see
-- THIRD_PARTY_NOTICES); tables with no index scan at all count too once they have had 100
-- sequential scans.
SELECT t.schemaname::text AS schemaname,
       t.relname::text AS relname,
       t.seq_scan::bigint AS seq_scan,
       coalesce(t.idx_scan, 0)::bigint AS idx_scan,
       t.n_live_tup::bigint AS n_live_tup,
       round(100.0 * coalesce(t.idx_scan, 0) / NULLIF(t.seq_scan + coalesce(t.idx_scan, 0), 0), 2)::float8
           AS index_use_pct,
       count(*) OVER ()::bigint AS total_count
FROM pg_stat_user_tables t
WHERE t.n_live_tup >= 10000
  AND t.seq_scan >= 100
  AND 100.0 * coalesce(t.idx_scan, 0) / (t.seq_scan + coalesce(t.idx_scan, 0)) < 95
ORDER BY t.seq_scan DESC, t.schemaname, t.relname
LIMIT $1
