//! Pure tests of cron expressions against other implementations: no Postgres, no Redis.

mod agreement;
