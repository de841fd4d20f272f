-- Tables closest to transaction-ID wraparound. After pghero's transaction_id_danger (MIT, see
-- THIRD_PARTY_NOTICES): 2146483648 minus the older of the table's and its TOAST table's
-- relfrozenxid age is how many transactions are left before Postgres stops accepting writes.
SELECT n.nspname::text AS schemaname,
       c.relname::text AS relname,
       greatest(age(c.relfrozenxid), age(t.relfrozenxid))::bigint AS xid_age,
       (2146483648 - greatest(age(c.relfrozenxid), age(t.relfrozenxid)))::bigint AS transactions_left,
       current_setting('autovacuum_freeze_max_age')::bigint AS autovacuum_freeze_max_age,
       count(*) OVER ()::bigint AS total_count
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class t ON c.reltoastrelid = t.oid
WHERE c.relkind IN ('r', 'm')
ORDER BY transactions_left ASC, n.nspname, c.relname
LIMIT $1
