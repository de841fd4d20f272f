//! The pause scenario (issue 10): workers frozen with SIGSTOP for longer than their lease, then
//! resumed with SIGCONT, with one and with three attempts per job. A frozen worker may have
//! committed results it has not acked yet; its leases expire and the other worker takes them
//! over. Then no job whose success is in the ledger is dead or runs again, and the final state
//! in Redis agrees with the ledger for every job.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::harness::{Cluster, ClusterOptions, drain_timeout, n_jobs, report};

/// The workers' config: a 4 s lease, frozen for 5-6 s at a time.
fn config(max_attempts: u32) -> String {
    format!(
        r#"
[queues.reports]
concurrency = 4
lease = "4s"
max_attempts = {max_attempts}
backoff_base = "100ms"
backoff_max = "1s"

[worker]
grace_period = "2s"

[redis]
response_timeout = "2s"

[database]
connect_timeout = "2s"
"#
    )
}

/// Job arguments and their share in percent: no planned failures, so a job ends dead only
/// when a pause cost it every attempt.
const MIX: &[(&str, usize)] = &[
    ("{}", 55),
    (r#"{"sleep_ms":100}"#, 30),
    (r#"{"sleep_ms":400}"#, 10),
    (r#"{"sleep_ms":1500}"#, 5),
];

/// Pauses made whatever the progress: worker 0, worker 1, then both.
const MIN_PAUSES: usize = 3;

/// Pauses made at most: the full profile (10,000 jobs) made 49 without a cap with three
/// attempts and took 9 minutes, close to nextest's 10-minute limit; a dozen exercise the same
/// paths.
const MAX_PAUSES: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_paused_longer_than_their_lease_with_one_attempt_leave_redis_agreeing_with_the_ledger()
 {
    run("pause_max1", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_paused_longer_than_their_lease_with_three_attempts_leave_redis_agreeing_with_the_ledger()
 {
    run("pause_max3", 3).await;
}

async fn run(scenario: &str, max_attempts: u32) {
    let n = n_jobs();
    let mut cluster = Cluster::start(&ClusterOptions {
        config: config(max_attempts),
        ..ClusterOptions::default()
    });
    let mut ids = Vec::with_capacity(n);
    for (args, percent) in MIX {
        ids.extend(cluster.enqueue(args, n * percent / 100));
    }
    let started = Instant::now();

    // One worker at a time (the other takes its expired leases over), then both at once, at
    // least three times and then until nine tenths of the jobs have a final row (a dozen
    // pauses at most).
    let mut n_pauses = 0;
    while n_pauses < MIN_PAUSES
        || (n_pauses < MAX_PAUSES
            && n_final(&cluster).await < n * 9 / 10
            && started.elapsed() < drain_timeout(n))
    {
        let slots: Vec<usize> = if n_pauses % 3 == 2 {
            vec![0, 1]
        } else {
            vec![n_pauses % 2]
        };
        for slot in &slots {
            if let Some(worker) = cluster.workers[*slot].as_mut() {
                worker.sigstop().expect("SIGSTOP");
            }
        }
        tokio::time::sleep(Duration::from_millis(rand::random_range(5000..6000))).await;
        for slot in &slots {
            if let Some(worker) = cluster.workers[*slot].as_mut() {
                worker.sigcont().expect("SIGCONT");
            }
        }
        n_pauses += 1;
        tokio::time::sleep(Duration::from_millis(rand::random_range(300..1500))).await;
    }
    let judged = wait_until_settled(&cluster, &ids, drain_timeout(n)).await;
    let drain = started.elapsed();

    let line = format!(
        "chaos scenario={scenario} jobs={} lost={} double_completed={} redeliveries={} \
         unaccounted={} drain={:.1}s pauses={n_pauses} dead={} ran_again={} \
         dead_after_success={} disagreements={} taken_over={} settled_from_ledger={}",
        ids.len(),
        judged.lost.len(),
        judged.double_completed.len(),
        judged.redeliveries,
        judged.ran_again.len() + judged.disagreements.len(),
        drain.as_secs_f64(),
        judged.n_dead,
        judged.ran_again.len(),
        judged.dead_after_success.len(),
        judged.disagreements.len(),
        cluster.count_worker_logs("lease expired; job taken back"),
        cluster.count_worker_logs("the ledger holds another verdict"),
    );
    report(&line);
    assert!(
        n_pauses >= 2,
        "only {n_pauses} pauses: the backlog drained too fast"
    );
    judged.assert_clean();
}

/// Jobs with a final row: succeeded, or dead after a failure or a lost lease (0 while Postgres
/// is unreachable).
async fn n_final(cluster: &Cluster) -> usize {
    let Ok(mut ledger) = PgConnection::connect(&cluster.postgres.url()).await else {
        return 0;
    };
    let n: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT job_id) FROM job_runs \
         WHERE status = 'succeeded' OR next_state = 'dead'",
    )
    .fetch_one(&mut ledger)
    .await
    .unwrap_or(0);
    usize::try_from(n).unwrap_or(0)
}

/// What the ledger and Redis say about one job at the end.
#[derive(Debug, Default)]
struct Judged {
    lost: Vec<Uuid>,
    double_completed: Vec<Uuid>,
    ran_again: Vec<Uuid>,
    dead_after_success: Vec<Uuid>,
    disagreements: Vec<(Uuid, String)>,
    redeliveries: usize,
    n_dead: usize,
}

impl Judged {
    fn assert_clean(&self) {
        assert!(
            self.lost.is_empty(),
            "lost: {:?}",
            &self.lost[..self.lost.len().min(5)]
        );
        assert!(
            self.double_completed.is_empty(),
            "completed twice: {:?}",
            self.double_completed
        );
        assert!(
            self.dead_after_success.is_empty(),
            "dead although the ledger has their success: {:?}",
            self.dead_after_success
        );
        assert!(
            self.ran_again.is_empty(),
            "ran again after their success: {:?}",
            self.ran_again
        );
        assert!(
            self.disagreements.is_empty(),
            "redis disagrees with the ledger: {:?}",
            &self.disagreements[..self.disagreements.len().min(5)]
        );
    }
}

/// (attempt, status, next_state) of each run.
type Runs = Vec<(i32, String, Option<String>)>;

/// Waits until Redis holds nothing in flight and every job is completed or dead, then judges
/// each job; fails the test after `timeout`.
async fn wait_until_settled(cluster: &Cluster, ids: &[Uuid], timeout: Duration) -> Judged {
    let deadline = Instant::now() + timeout;
    loop {
        if cluster.n_unsettled() == Some(0) {
            let states = final_states(cluster, ids);
            if states.iter().all(|state| state != "unsettled") {
                let runs = read_runs(cluster).await;
                return judge(ids, &states, &runs);
            }
        }
        assert!(
            Instant::now() < deadline,
            "not settled within {timeout:?}: {:?} in flight",
            cluster.n_unsettled()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn judge(ids: &[Uuid], states: &[String], runs: &BTreeMap<Uuid, Runs>) -> Judged {
    let mut judged = Judged::default();
    let empty = Vec::new();
    for (id, state) in ids.iter().zip(states) {
        let runs = runs.get(id).unwrap_or(&empty);
        let successes: Vec<usize> = runs
            .iter()
            .enumerate()
            .filter(|(_, (_, status, _))| status == "succeeded")
            .map(|(idx, _)| idx)
            .collect();
        judged.redeliveries += runs.len().saturating_sub(1);
        if state == "discarded" {
            judged.n_dead += 1;
        }
        match successes.as_slice() {
            [] => {
                // Dead is the only agreeing end, and the ledger's last row must say so.
                let last_says_dead = runs
                    .last()
                    .is_some_and(|(_, _, next)| next.as_deref() == Some("dead"));
                if state != "discarded" {
                    judged.lost.push(*id);
                } else if !last_says_dead {
                    judged
                        .disagreements
                        .push((*id, format!("dead in redis, ledger {runs:?}")));
                }
            }
            [at] => {
                if state == "discarded" {
                    judged.dead_after_success.push(*id);
                } else if state != "completed" {
                    judged
                        .disagreements
                        .push((*id, format!("{state} in redis, ledger {runs:?}")));
                }
                if runs[at + 1..]
                    .iter()
                    .any(|(_, status, _)| status != "skipped" && status != "abandoned")
                {
                    judged.ran_again.push(*id);
                }
            }
            _ => judged.double_completed.push(*id),
        }
    }
    judged
}

/// Each job's state in Redis: completed, discarded, or unsettled.
fn final_states(cluster: &Cluster, ids: &[Uuid]) -> Vec<String> {
    let keys = cluster.keys();
    let mut connection = cluster.redis_connection();
    let mut states = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("ZSCORE")
                .arg(&keys.done)
                .arg(id.to_string())
                .cmd("ZSCORE")
                .arg(&keys.dead)
                .arg(id.to_string());
        }
        let scores: Vec<Option<f64>> = pipe.query(&mut connection).expect("reading final states");
        for pair in scores.chunks(2) {
            states.push(match pair {
                [Some(_), _] => "completed".to_owned(),
                [None, Some(_)] => "discarded".to_owned(),
                _ => "unsettled".to_owned(),
            });
        }
    }
    states
}

async fn read_runs(cluster: &Cluster) -> BTreeMap<Uuid, Runs> {
    let rows: Vec<(Uuid, i32, String, Option<String>)> = sqlx::query_as(
        "SELECT job_id, attempt, status, next_state FROM job_runs ORDER BY job_id, attempt",
    )
    .fetch_all(&mut cluster.ledger().await)
    .await
    .expect("reading job_runs");
    let mut runs: BTreeMap<Uuid, Runs> = BTreeMap::new();
    for (job_id, attempt, status, next_state) in rows {
        runs.entry(job_id)
            .or_default()
            .push((attempt, status, next_state));
    }
    runs
}
