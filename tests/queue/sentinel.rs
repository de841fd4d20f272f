//! Sentinel-managed Redis: workers and a producer on one `redis+sentinel://` URL follow a
//! failover by themselves, both a graceful `SENTINEL FAILOVER` and a `kill -9` of the master.
//!
//! Each test runs its own master, replica and sentinel on 127.0.0.1, with data in temporary
//! directories; every process is killed when the test ends.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;
use upkeep_shared::queue::{AttemptStatus, NewJob, Queue, QueueOptions, RedisTarget};
use upkeep_shared::{JobId, Outcome};
use upkeep_tests::{ChildProcess, PrivateRedis, RedisOptions, free_port, unique_prefix};

use crate::support::{
    Calls, KIND, TestLedger, TestWorker, consumer, eventually, exclusive, handler, info_field,
    queue_on, stats,
};

/// The name the sentinel monitors the master under.
const MASTER_NAME: &str = "upkeep-test";

/// A master, its replica and one sentinel watching them (quorum 1).
struct Topology {
    master: PrivateRedis,
    replica: PrivateRedis,
    sentinel: ChildProcess,
    sentinel_port: u16,
    /// A port nothing listens on, listed first in the URL: the client must skip a sentinel
    /// that is down.
    dead_sentinel_port: u16,
    /// Holds `sentinel.conf`, which the sentinel rewrites as it learns the topology.
    _dir: TempDir,
}

impl Topology {
    /// Starts the three servers and waits until the replica is in sync and the sentinel knows
    /// it, so that a failover can pick it.
    ///
    /// With `min_replicas_to_write`, the master refuses writes once no replica is attached:
    /// when the replica leaves it to become the new master, writes that still reach the old
    /// one fail (NOREPLICAS) instead of being acknowledged and then lost. The replica does not
    /// get the setting: once promoted it has no replica of its own until the sentinel demotes
    /// the old master.
    fn start(min_replicas_to_write: bool) -> anyhow::Result<Self> {
        let mut master_options = RedisOptions::default();
        if min_replicas_to_write {
            master_options = master_options
                .arg("--min-replicas-to-write")
                .arg("1")
                .arg("--min-replicas-max-lag")
                .arg("10");
        }
        let master = PrivateRedis::start_with(master_options).context("starting the master")?;
        let replica = PrivateRedis::start_with(
            RedisOptions::default()
                .arg("--replicaof")
                .arg("127.0.0.1")
                .arg(master.port().to_string()),
        )
        .context("starting the replica")?;
        let dir = tempfile::Builder::new()
            .prefix("upkeep-sentinel-")
            .tempdir()
            .context("a directory for the sentinel")?;
        let sentinel_port = free_port();
        let config = dir.path().join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 10000\n",
                dir = dir.path().display(),
                master = master.port(),
            ),
        )
        .context("writing sentinel.conf")?;
        let mut command = Command::new("redis-server");
        command.arg(&config).arg("--sentinel");
        let sentinel = ChildProcess::spawn("redis-sentinel", command)?;
        let topology = Self {
            master,
            replica,
            sentinel,
            sentinel_port,
            dead_sentinel_port: free_port(),
            _dir: dir,
        };
        topology.wait_until(
            "the replica to be in sync and known to the sentinel",
            || {
                let link: String = topology.replica_info("master_link_status")?;
                let replicas: Vec<HashMap<String, String>> = topology
                    .sentinel_query(redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER_NAME))?;
                let known = replicas.iter().any(|replica| {
                    replica.get("port") == Some(&topology.replica.port().to_string())
                        && replica.get("flags").map(String::as_str) == Some("slave")
                        && replica.get("master-link-status").map(String::as_str) == Some("ok")
                });
                Ok(link == "up" && known)
            },
        )?;
        Ok(topology)
    }

    /// `redis+sentinel://` URL listing a dead sentinel first, then the live one.
    fn url(&self) -> String {
        format!(
            "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/{MASTER_NAME}",
            self.dead_sentinel_port, self.sentinel_port
        )
    }

    /// The port of the server the sentinel names as master.
    fn named_master_port(&self) -> anyhow::Result<u16> {
        let (_, port): (String, u16) = self.sentinel_query(
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER_NAME),
        )?;
        Ok(port)
    }

    /// What an operator's graceful switch-over does: the master's writes pause (as Redis's
    /// own FAILOVER command pauses them) until the replica has everything the master
    /// acknowledged, then `SENTINEL FAILOVER` promotes the replica while the pause lasts.
    /// SENTINEL FAILOVER alone does not stop the old master: it keeps accepting writes for
    /// about ten seconds, until the sentinel demotes it.
    fn graceful_failover(&self) -> anyhow::Result<()> {
        let mut master = connect(self.master.port())?;
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(3_000)
            .arg("WRITE")
            .query::<()>(&mut master)
            .context("CLIENT PAUSE on the master")?;
        self.wait_until("the replica to catch up with the paused master", || {
            let master_offset: u64 = info(&mut master, "replication", "master_repl_offset")?;
            let replica_offset: u64 = self.replica_info("master_repl_offset")?;
            Ok(replica_offset >= master_offset)
        })?;
        self.failover()
    }

    /// `SENTINEL FAILOVER`, then waits until the sentinel names the replica as master.
    fn failover(&self) -> anyhow::Result<()> {
        // The sentinel refuses while it is still gathering replica information (NOGOODSLAVE).
        self.wait_until("SENTINEL FAILOVER to be accepted", || {
            let accepted: redis::RedisResult<String> =
                self.sentinel_query_raw(redis::cmd("SENTINEL").arg("FAILOVER").arg(MASTER_NAME));
            Ok(accepted.is_ok())
        })?;
        self.wait_for_promotion()
    }

    /// Waits until the sentinel names the replica as master.
    fn wait_for_promotion(&self) -> anyhow::Result<()> {
        let replica_port = self.replica.port();
        self.wait_until("the sentinel to name the replica as master", || {
            Ok(self.named_master_port()? == replica_port)
        })
    }

    fn replica_info<T: std::str::FromStr>(&self, field: &str) -> anyhow::Result<T> {
        info(&mut connect(self.replica.port())?, "replication", field)
    }

    fn sentinel_query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        self.sentinel_query_raw(cmd)
            .context("querying the sentinel")
    }

    fn sentinel_query_raw<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.sentinel_port))?;
        let mut connection = client.get_connection_with_timeout(Duration::from_secs(2))?;
        cmd.query(&mut connection)
    }

    /// Polls `ok` every 50 ms for up to 20 s; an `Err` from it counts as "not yet".
    fn wait_until(
        &self,
        what: &str,
        mut ok: impl FnMut() -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let last = ok();
            if matches!(last, Ok(true)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out waiting for {what} (last answer: {last:?}); sentinel log:\n{}",
                    self.sentinel.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn connect(port: u16) -> anyhow::Result<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    Ok(client.get_connection_with_timeout(Duration::from_secs(2))?)
}

/// A field of `INFO <section>`, parsed.
fn info<T: std::str::FromStr>(
    connection: &mut redis::Connection,
    section: &str,
    field: &str,
) -> anyhow::Result<T> {
    let text: String = redis::cmd("INFO").arg(section).query(connection)?;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("INFO {section} has no usable {field}"))
}

/// Enqueues one job every few milliseconds through one connection until stopped, retrying
/// each job (with its idempotency key, so a retry after a lost reply cannot add it twice)
/// until Redis takes it.
struct Producer {
    stop: Arc<AtomicBool>,
    /// The jobs Redis acknowledged, in order.
    enqueued: Arc<Mutex<Vec<JobId>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Producer {
    fn start(queue: Queue) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let enqueued = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let stop = stop.clone();
            let enqueued = enqueued.clone();
            async move {
                while !stop.load(Ordering::SeqCst) {
                    let mut job = NewJob::new(KIND, serde_json::json!({}), 3);
                    job.idempotency_key = Some(job.id.to_string());
                    while queue.enqueue(std::slice::from_ref(&job)).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    enqueued.lock().expect("enqueued lock").push(job.id);
                    tokio::time::sleep(Duration::from_millis(4)).await;
                }
            }
        });
        Self {
            stop,
            enqueued,
            task,
        }
    }

    /// How many jobs Redis has acknowledged so far.
    fn n_enqueued(&self) -> usize {
        self.enqueued.lock().expect("enqueued lock").len()
    }
}

/// The running system of one test: a producer and two workers on one sentinel URL.
struct Running {
    queue: Queue,
    calls: Arc<Calls>,
    ledger: Arc<TestLedger>,
    workers: Vec<TestWorker>,
    producer: Producer,
}

impl Running {
    fn start(topology: &Topology) -> Self {
        let target = RedisTarget::standalone(topology.url());
        // A short lease, so a job whose lease lived only on a lost master is soon reclaimed.
        let options = QueueOptions {
            lease: Duration::from_secs(3),
            ..QueueOptions::default()
        };
        let queue = queue_on(&target, &unique_prefix(), "q", options);
        let calls = Arc::new(Calls::default());
        let ledger = Arc::new(TestLedger::default());
        let work = {
            let calls = calls.clone();
            handler(move |job| {
                calls.record(&job);
                async {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    Ok(Outcome::default())
                }
            })
        };
        let workers = (0..2)
            .map(|_| {
                TestWorker::start(
                    queue.clone(),
                    &target,
                    consumer("sentinel", 8),
                    ledger.clone(),
                    work.clone(),
                )
            })
            .collect();
        let producer = Producer::start(queue.clone());
        Self {
            queue,
            calls,
            ledger,
            workers,
            producer,
        }
    }

    /// Waits until the handler has run `more` jobs beyond what it had run so far.
    async fn progress(&self, more: u64) {
        let floor = self.calls.total();
        eventually(
            "the workers to make progress",
            Duration::from_secs(20),
            || {
                let done = self.calls.total();
                async move { (done >= floor + more).then_some(()) }
            },
        )
        .await;
    }

    /// The port of the server the queue's connection talks to.
    async fn served_by(&self) -> u16 {
        served_by(&self.queue).await
    }

    /// Waits until every job of `ids` has a succeeded attempt.
    async fn wait_for_success_of(&self, ids: &[JobId]) {
        let what = format!("{} jobs to succeed", ids.len());
        eventually(&what, Duration::from_secs(20), || async {
            let missing = ids.len() - self.succeeded_among(ids).len();
            (missing == 0).then_some(())
        })
        .await;
    }

    /// The jobs of `ids` that have a succeeded attempt.
    fn succeeded_among(&self, ids: &[JobId]) -> HashSet<JobId> {
        let wanted: HashSet<JobId> = ids.iter().copied().collect();
        self.ledger
            .attempts()
            .into_iter()
            .filter(|attempt| attempt.status == AttemptStatus::Succeeded)
            .map(|attempt| attempt.job_id)
            .filter(|id| wanted.contains(id))
            .collect()
    }

    /// Waits until the queue on the current master has nothing pending or running.
    async fn wait_until_drained(&self) {
        eventually("the queue to drain", Duration::from_secs(20), || async {
            let stats = self.queue.stats().await.ok()?;
            (stats.pending == 0 && stats.running == 0).then_some(())
        })
        .await;
    }

    /// Stops the producer and returns every job it enqueued, leaving the workers running.
    async fn producer_stop(&self) -> Vec<JobId> {
        self.producer.stop.store(true, Ordering::SeqCst);
        eventually("the producer to stop", Duration::from_secs(20), || async {
            self.producer.task.is_finished().then_some(())
        })
        .await;
        self.producer
            .enqueued
            .lock()
            .expect("enqueued lock")
            .clone()
    }

    async fn stop_workers(self) {
        for worker in self.workers {
            assert!(!worker.has_ended(), "a worker ended on its own");
            worker.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_a_producer_on_a_sentinel_url_follow_a_graceful_failover_and_every_job_succeeds()
 {
    let _machine = exclusive().await;
    // Arrange
    let topology =
        tokio::task::block_in_place(|| Topology::start(true)).expect("master, replica, sentinel");
    let running = Running::start(&topology);
    running.progress(100).await;
    assert_eq!(running.served_by().await, topology.master.port());

    // Act: the replica takes over while the producer and the workers keep going.
    tokio::task::block_in_place(|| topology.graceful_failover()).expect("a graceful failover");
    let n_before_switch = running.producer.n_enqueued();
    running.progress(100).await;
    let enqueued = running.producer_stop().await;

    // Assert: nothing acknowledged was lost, before or after the switch.
    assert!(
        enqueued.len() > n_before_switch,
        "jobs were enqueued after the switch"
    );
    running.wait_for_success_of(&enqueued).await;
    running.wait_until_drained().await;
    let served_by = eventually(
        "the connection to follow",
        Duration::from_secs(5),
        || async {
            let port = running.served_by().await;
            (port == topology.replica.port()).then_some(port)
        },
    )
    .await;
    let stats = stats(&running.queue).await;
    println!(
        "sentinel graceful failover: {} jobs ({} after the switch), {} handler calls, now on :{served_by}, {stats:?}",
        enqueued.len(),
        enqueued.len() - n_before_switch,
        running.calls.total(),
    );
    running.stop_workers().await;
    drop(topology);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_a_producer_on_a_sentinel_url_ride_out_a_killed_master_and_every_later_job_succeeds()
 {
    let _machine = exclusive().await;
    // Arrange
    let mut topology =
        tokio::task::block_in_place(|| Topology::start(true)).expect("master, replica, sentinel");
    let running = Running::start(&topology);
    running.progress(100).await;

    // Act: the master dies; the sentinel notices after down-after-milliseconds (1 s) and
    // promotes the replica while the producer keeps retrying and the workers keep fetching.
    tokio::task::block_in_place(|| {
        topology.master.kill9().expect("kill -9 the master");
        topology.wait_for_promotion()
    })
    .expect("the sentinel promotes the replica");
    let n_before_switch = running.producer.n_enqueued();
    running.progress(100).await;
    let enqueued = running.producer_stop().await;

    // Assert: every job the new master acknowledged succeeds. Replication is asynchronous,
    // so jobs the old master acknowledged in its last moments may never have reached the
    // replica: for those only the count is reported, nothing is asserted.
    let after_switch = &enqueued[n_before_switch..];
    assert!(
        !after_switch.is_empty(),
        "jobs were enqueued after the switch"
    );
    running.wait_for_success_of(after_switch).await;
    running.wait_until_drained().await;
    let before_switch = &enqueued[..n_before_switch];
    let lost = before_switch.len() - running.succeeded_among(before_switch).len();
    assert_eq!(running.served_by().await, topology.replica.port());
    println!(
        "sentinel kill -9: {} jobs before the switch ({lost} lost with the old master), {} after, {} handler calls",
        before_switch.len(),
        after_switch.len(),
        running.calls.total(),
    );
    running.stop_workers().await;
    drop(topology);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_connection_moves_to_the_promoted_replica_while_the_old_master_still_accepts_writes()
 {
    let _machine = exclusive().await;
    // Arrange: a master without min-replicas-to-write, so nothing but the client's own check
    // of the sentinels moves it: the old master answers every command as before.
    let topology =
        tokio::task::block_in_place(|| Topology::start(false)).expect("master, replica, sentinel");
    let target = RedisTarget::standalone(topology.url());
    let queue = queue_on(&target, &unique_prefix(), "q", QueueOptions::default());
    assert_eq!(served_by(&queue).await, topology.master.port());

    // Act
    tokio::task::block_in_place(|| topology.failover()).expect("SENTINEL FAILOVER");
    let switched_at = Instant::now();
    eventually(
        "the connection to reach the promoted replica",
        Duration::from_secs(3),
        || async { (served_by(&queue).await == topology.replica.port()).then_some(()) },
    )
    .await;
    let followed_after = switched_at.elapsed();

    // Assert: the next job goes to the new master.
    let job = NewJob::new(KIND, serde_json::json!({}), 3);
    queue
        .enqueue(std::slice::from_ref(&job))
        .await
        .expect("enqueue");
    let mut replica = connect(topology.replica.port()).expect("connect to the new master");
    let exists: bool = redis::cmd("EXISTS")
        .arg(queue.keys().job(&job.id.to_string()))
        .query(&mut replica)
        .expect("EXISTS on the new master");
    assert!(exists, "the job is on the new master");
    // Informational: Redis 7.0's sentinel demotes the old master about ten seconds after the
    // switch, so a client that waited for an error would have written to it until then.
    let old_role: Vec<redis::Value> = redis::cmd("ROLE")
        .query(&mut connect(topology.master.port()).expect("connect to the old master"))
        .expect("ROLE on the old master");
    println!(
        "sentinel check: followed the switch after {followed_after:?}; old master's role then: {:?}",
        old_role.first()
    );
    drop(topology);
}

/// The port of the server `queue`'s connection talks to.
async fn served_by(queue: &Queue) -> u16 {
    info_field(queue, "server", "tcp_port")
        .await
        .parse()
        .expect("INFO server has a numeric tcp_port")
}
