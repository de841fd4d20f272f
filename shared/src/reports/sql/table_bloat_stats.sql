-- table_bloat_stats: dead tuples (the statistics system's counters) and an estimate of bloat
-- from the planner statistics, per user table, most dead tuples first. The estimate is adapted
-- from ioguix/pgsql-bloat-estimation table/table_bloat.sql (BSD-2-Clause, see
-- THIRD_PARTY_NOTICES); it reads relpages, reltuples and pg_stats, so it is only as fresh as the
-- table's last ANALYZE (n_mod_since_analyze, last_analyze, last_autoanalyze say how fresh).
SELECT t.schemaname::text AS schemaname,
       t.relname::text AS relname,
       t.n_live_tup::bigint AS n_live_tup,
       t.n_dead_tup::bigint AS n_dead_tup,
       round(100.0 * t.n_dead_tup / NULLIF(t.n_live_tup + t.n_dead_tup, 0), 2)::float8
           AS dead_tuple_percent,
       coalesce(b.bloat_bytes, 0)::bigint AS est_bloat_bytes,
       round(coalesce(b.bloat_pct, 0)::numeric, 2)::float8 AS est_bloat_pct,
       coalesce(b.is_na, true) AS estimate_na,
       pg_total_relation_size(t.relid)::bigint AS total_bytes,
       t.n_mod_since_analyze::bigint AS n_mod_since_analyze,
       t.last_vacuum, t.last_autovacuum, t.last_analyze, t.last_autoanalyze
FROM pg_stat_user_tables t
LEFT JOIN (
  SELECT tblid,
         CASE WHEN tblpages - est_tblpages_ff > 0 THEN (tblpages - est_tblpages_ff) * bs ELSE 0 END
             AS bloat_bytes,
         CASE WHEN tblpages > 0 AND tblpages - est_tblpages_ff > 0
             THEN 100 * (tblpages - est_tblpages_ff) / tblpages::float8 ELSE 0 END AS bloat_pct,
         is_na
  FROM (
    SELECT ceil(reltuples / ((bs - page_hdr) * fillfactor / (tpl_size * 100))) + ceil(toasttuples / 4)
               AS est_tblpages_ff,
           tblpages, bs, tblid, is_na
    FROM (
      SELECT (4 + tpl_hdr_size + tpl_data_size + (2 * ma)
                - CASE WHEN tpl_hdr_size % ma = 0 THEN ma ELSE tpl_hdr_size % ma END
                - CASE WHEN ceil(tpl_data_size)::int % ma = 0 THEN ma ELSE ceil(tpl_data_size)::int % ma END
             ) AS tpl_size,
             (heappages + toastpages) AS tblpages, reltuples, toasttuples, bs, page_hdr, tblid,
             fillfactor, is_na
      FROM (
        SELECT tbl.oid AS tblid, tbl.reltuples,
               tbl.relpages AS heappages, coalesce(toast.relpages, 0) AS toastpages,
               coalesce(toast.reltuples, 0) AS toasttuples,
               coalesce(substring(array_to_string(tbl.reloptions, ' ') FROM 'fillfactor=([0-9]+)')::smallint, 100)
                   AS fillfactor,
               current_setting('block_size')::numeric AS bs,
               CASE WHEN version() ~ 'mingw32' OR version() ~ '64-bit|x86_64|ppc64|ia64|amd64' THEN 8 ELSE 4 END AS ma,
               24 AS page_hdr,
               23 + CASE WHEN max(coalesce(s.null_frac, 0)) > 0 THEN (7 + count(s.attname)) / 8 ELSE 0::int END
                   AS tpl_hdr_size,
               sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 0)) AS tpl_data_size,
               -- Unusable statistics: a column of type name, a column without statistics, or
               -- a table never analysed (reltuples is -1 since PostgreSQL 14).
               bool_or(att.atttypid = 'pg_catalog.name'::regtype)
                 OR sum(CASE WHEN att.attnum > 0 THEN 1 ELSE 0 END) <> count(s.attname)
                 OR tbl.reltuples < 0 AS is_na
        FROM pg_attribute AS att
        JOIN pg_class AS tbl ON att.attrelid = tbl.oid
        JOIN pg_namespace AS ns ON ns.oid = tbl.relnamespace
        LEFT JOIN pg_stats AS s ON s.schemaname = ns.nspname
             AND s.tablename = tbl.relname AND s.inherited = false AND s.attname = att.attname
        LEFT JOIN pg_class AS toast ON tbl.reltoastrelid = toast.oid
        WHERE NOT att.attisdropped
          AND att.attnum > 0
          AND tbl.relkind IN ('r', 'm')
          AND ns.nspname NOT IN ('pg_catalog', 'information_schema')
          AND ns.nspname !~ '^pg_toast'
        GROUP BY tbl.oid, tbl.reltuples, tbl.relpages, toast.relpages, toast.reltuples, tbl.reloptions
      ) AS s1
    ) AS s2
  ) AS s3
) AS b ON b.tblid = t.relid
ORDER BY t.n_dead_tup DESC, t.schemaname, t.relname
