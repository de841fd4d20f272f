-- Indexes marked invalid (a failed CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY leaves
-- one): they cost every write and serve no read.
SELECT n.nspname::text AS schemaname,
       ct.relname::text AS relname,
       ci.relname::text AS indexrelname,
       pg_relation_size(i.indexrelid)::bigint AS index_bytes,
       count(*) OVER ()::bigint AS total_count
FROM pg_index i
JOIN pg_class ci ON ci.oid = i.indexrelid
JOIN pg_class ct ON ct.oid = i.indrelid
JOIN pg_namespace n ON n.oid = ct.relnamespace
WHERE NOT i.indisvalid
ORDER BY n.nspname, ci.relname
LIMIT $1
