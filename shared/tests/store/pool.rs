//! `DatabaseSettings::pool_options`: which connections are checked before use.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use upkeep_shared::store::DatabaseSettings;

/// A pool built with the production options, one connection, on the test's database.
async fn production_pool(test_pool: &PgPool) -> PgPool {
    let options = test_pool.connect_options().as_ref().clone();
    DatabaseSettings::default()
        .pool_options()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("connect the pool under test")
}

async fn backend_pid(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
}

async fn terminate(test_pool: &PgPool, pid: i32) {
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(test_pool)
        .await
        .expect("terminate the backend");
    assert!(terminated, "backend {pid} was not terminated");
}

/// Waits until the pool's only connection is back in it: sqlx returns a connection in a task of
/// its own, which checks it with a round trip first. A termination that lands before that check
/// makes the pool drop the connection there, and the next statement gets a new one.
async fn returned_to_pool(pool: &PgPool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.num_idle() < 1 {
        assert!(
            Instant::now() < deadline,
            "the connection never returned to the pool"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_connection_the_server_closed_while_it_sat_idle_is_replaced_before_use(pool: PgPool) {
    // Arrange: the pool's only connection is closed by the server (a restart, an admin)
    // while it sits idle in the pool.
    let ours = production_pool(&pool).await;
    let pid = backend_pid(&ours).await.expect("first statement");
    returned_to_pool(&ours).await;
    terminate(&pool, pid).await;
    // Idle longer than the threshold past which a connection is pinged before use (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Act
    let new_pid = backend_pid(&ours).await;

    // Assert: the ping found it dead and a new connection answered.
    let new_pid = new_pid.expect("an idle dead connection is replaced, not handed out");
    assert_ne!(new_pid, pid);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_connection_in_steady_use_is_not_pinged_so_its_death_fails_one_statement(pool: PgPool) {
    // The arrangement holds only if the next statement comes well within the idle threshold
    // (1 s) after the first: on a loaded machine the termination round trip alone can take
    // longer, and then the pool rightly pings and replaces the connection. Such a round tells
    // nothing, so it is arranged again.
    const WITHIN: Duration = Duration::from_millis(800);
    for _round in 0..5 {
        // Arrange: a connection used moments ago is closed by the server.
        let ours = production_pool(&pool).await;
        let pid = backend_pid(&ours).await.expect("first statement");
        let released = Instant::now();
        returned_to_pool(&ours).await;
        terminate(&pool, pid).await;
        // Let the termination land, well within the idle threshold.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if released.elapsed() >= WITHIN {
            continue;
        }

        // Act
        let failed = backend_pid(&ours).await;
        let retried = backend_pid(&ours).await;

        // Assert: without a ping before use the next statement meets the dead socket and fails
        // (callers on the hot path retry: the ledger writer and the fetcher treat it as an
        // outage), and the pool drops that connection, so the retry gets a new one.
        assert!(
            failed.is_err(),
            "a recently used connection is handed out without a ping (backend {pid} was \
             terminated; the next statement answered {failed:?})"
        );
        let new_pid = retried.expect("the dead connection was dropped and replaced");
        assert_ne!(new_pid, pid);
        return;
    }
    panic!("in 5 rounds the machine never ran the next statement within {WITHIN:?} of the first");
}
