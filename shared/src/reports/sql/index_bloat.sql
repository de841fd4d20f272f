-- Estimated bloat of btree indexes from the planner statistics, most wasted bytes first. Adapted
-- from ioguix/pgsql-bloat-estimation btree/btree_bloat.sql (BSD-2-Clause, see
-- THIRD_PARTY_NOTICES). The estimate goes negative on low-cardinality indexes that btree
-- deduplication (PostgreSQL 13+) compacts, so it is clamped at 0 and is indicative only.
SELECT nspname::text AS schemaname, tblname::text AS relname, idxname::text AS indexrelname,
       (bs * relpages)::bigint AS index_bytes,
       greatest(bs * (relpages - est_pages_ff), 0)::bigint AS est_bloat_bytes,
       round(greatest(100 * (relpages - est_pages_ff)::numeric / relpages, 0), 2)::float8 AS est_bloat_pct,
       count(*) OVER ()::bigint AS total_count
FROM (
  SELECT coalesce(1 + ceil(reltuples / floor((bs - pageopqdata - pagehdr) * fillfactor
                                             / (100 * (4 + nulldatahdrwidth)::float))), 0) AS est_pages_ff,
         bs, nspname, tblname, idxname, relpages, is_na
  FROM (
    SELECT maxalign, bs, nspname, tblname, idxname, reltuples, relpages, idxoid, fillfactor,
           (index_tuple_hdr_bm
              + maxalign - CASE WHEN index_tuple_hdr_bm % maxalign = 0 THEN maxalign
                                ELSE index_tuple_hdr_bm % maxalign END
              + nulldatawidth + maxalign - CASE WHEN nulldatawidth = 0 THEN 0
                                                WHEN nulldatawidth::integer % maxalign = 0 THEN maxalign
                                                ELSE nulldatawidth::integer % maxalign END
           )::numeric AS nulldatahdrwidth,
           pagehdr, pageopqdata, is_na
    FROM (
      SELECT n.nspname, i.tblname, i.idxname, i.reltuples, i.relpages, i.idxoid, i.fillfactor,
             current_setting('block_size')::numeric AS bs,
             CASE WHEN version() ~ 'mingw32' OR version() ~ '64-bit|x86_64|ppc64|ia64|amd64' THEN 8 ELSE 4 END
                 AS maxalign,
             24 AS pagehdr,
             16 AS pageopqdata,
             CASE WHEN max(coalesce(s.null_frac, 0)) = 0 THEN 8 ELSE 8 + ((32 + 8 - 1) / 8) END
                 AS index_tuple_hdr_bm,
             sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 1024)) AS nulldatawidth,
             max(CASE WHEN i.atttypid = 'pg_catalog.name'::regtype THEN 1 ELSE 0 END) > 0 AS is_na
      FROM (
        SELECT ct.relname AS tblname, ct.relnamespace, ic.idxname, ic.attpos, ic.indkey,
               ic.indkey[ic.attpos], ic.reltuples, ic.relpages, ic.tbloid, ic.idxoid, ic.fillfactor,
               coalesce(a1.attnum, a2.attnum) AS attnum, coalesce(a1.attname, a2.attname) AS attname,
               coalesce(a1.atttypid, a2.atttypid) AS atttypid,
               CASE WHEN a1.attnum IS NULL THEN ic.idxname ELSE ct.relname END AS attrelname
        FROM (
          SELECT idxname, reltuples, relpages, tbloid, idxoid, fillfactor, indkey,
                 pg_catalog.generate_series(1, indnatts) AS attpos
          FROM (
            SELECT ci.relname AS idxname, ci.reltuples, ci.relpages, i.indrelid AS tbloid,
                   i.indexrelid AS idxoid,
                   coalesce(substring(array_to_string(ci.reloptions, ' ') FROM 'fillfactor=([0-9]+)')::smallint, 90)
                       AS fillfactor,
                   i.indnatts,
                   pg_catalog.string_to_array(pg_catalog.textin(pg_catalog.int2vectorout(i.indkey)), ' ')::int[]
                       AS indkey
            FROM pg_catalog.pg_index i
            JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid
            JOIN pg_catalog.pg_namespace cn ON cn.oid = ci.relnamespace
            WHERE ci.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')
              AND ci.relpages > 0
              AND cn.nspname NOT IN ('pg_catalog', 'information_schema')
              AND cn.nspname !~ '^pg_toast'
          ) AS idx_data
        ) AS ic
        JOIN pg_catalog.pg_class ct ON ct.oid = ic.tbloid
        LEFT JOIN pg_catalog.pg_attribute a1 ON ic.indkey[ic.attpos] <> 0
             AND a1.attrelid = ic.tbloid AND a1.attnum = ic.indkey[ic.attpos]
        LEFT JOIN pg_catalog.pg_attribute a2 ON ic.indkey[ic.attpos] = 0
             AND a2.attrelid = ic.idxoid AND a2.attnum = ic.attpos
      ) i
      JOIN pg_catalog.pg_namespace n ON n.oid = i.relnamespace
      JOIN pg_catalog.pg_stats s ON s.schemaname = n.nspname
           AND s.tablename = i.attrelname AND s.attname = i.attname
      GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
    ) AS rows_data_stats
  ) AS rows_hdr_pdg_stats
) AS relation_stats
WHERE NOT is_na
ORDER BY est_bloat_bytes DESC, nspname, idxname
LIMIT $1
