-- The definitions of the indexes on tables that have more than one, for duplicate detection in
-- code (reports::findings::duplicate_pairs applies pghero's and pgx_scripts' prefix rule).
SELECT n.nspname::text AS schemaname,
       ct.relname::text AS relname,
       ci.relname::text AS indexrelname,
       am.amname::text AS access_method,
       i.indkey::text AS indkey,
       i.indnkeyatts::int AS n_key_columns,
       i.indclass::text AS indclass,
       i.indcollation::text AS indcollation,
       i.indoption::text AS indoption,
       pg_get_expr(i.indexprs, i.indrelid) AS expressions,
       pg_get_expr(i.indpred, i.indrelid) AS predicate,
       i.indisunique AS is_unique,
       i.indisprimary AS is_primary,
       i.indisvalid AS is_valid,
       pg_get_indexdef(i.indexrelid) AS definition,
       pg_relation_size(i.indexrelid)::bigint AS index_bytes
FROM pg_index i
JOIN pg_class ci ON ci.oid = i.indexrelid
JOIN pg_class ct ON ct.oid = i.indrelid
JOIN pg_namespace n ON n.oid = ct.relnamespace
JOIN pg_am am ON am.oid = ci.relam
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_toast'
  AND i.indrelid IN (SELECT indrelid FROM pg_index GROUP BY indrelid HAVING count(*) > 1)
ORDER BY n.nspname, ct.relname, ci.relname
LIMIT $1
