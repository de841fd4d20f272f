//! [`Queue`]: the typed Rust side of the Lua scripts, one method per script.
//!
//! Every method is one round trip (one `EVALSHA`, falling back to `EVAL` when the script cache
//! is cold, e.g. after a Redis restart). Nothing here retries: a Redis error is returned as
//! [`Error::Redis`] and the caller's loop decides to back off and try again.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};

use super::conn::RedisConn;
use super::keys::QueueKeys;
use super::{Error, QueueOptions};
use crate::job::{JobId, QueueName};

// enqueue.lua and fetch.lua share one `incarnation()`, defined in a prelude.
static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/incarnation.lua"),
        include_str!("lua/enqueue.lua")
    ))
});
// fetch.lua, ack.lua, renew.lua and release.lua read leases with lease.lua's functions.
static FETCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/incarnation.lua"),
        include_str!("lua/lease.lua"),
        include_str!("lua/fetch.lua")
    ))
});
static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/lease.lua"),
        include_str!("lua/ack.lua")
    ))
});
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/lease.lua"),
        include_str!("lua/renew.lua")
    ))
});
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/lease.lua"),
        include_str!("lua/release.lua")
    ))
});
static REQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/requeue.lua")));
static STATS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/stats.lua")));

/// Jobs per enqueue script call: large batches are split so no call blocks Redis for long.
pub const ENQUEUE_CHUNK: usize = 200;

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The id it will have (callers mint it so they can log it before the round trip).
    pub id: JobId,
    /// The kind string (validated by the caller against the catalog).
    pub kind: String,
    /// JSON arguments.
    pub args: serde_json::Value,
    /// Attempts allowed, at least 1.
    pub max_attempts: u32,
    /// Run no earlier than this (unix ms); `None` runs now.
    pub run_at_ms: Option<i64>,
    /// A second enqueue with the same key returns the first job's id and enqueues nothing.
    pub idempotency_key: Option<String>,
    /// The schedule that produced it.
    pub schedule: Option<String>,
    /// The nominal tick time (unix ms) that produced it.
    pub tick_ms: Option<i64>,
}

impl NewJob {
    /// A job to run now with a fresh id and no extras.
    #[must_use]
    pub fn new(kind: impl Into<String>, args: serde_json::Value, max_attempts: u32) -> Self {
        Self {
            id: JobId::new(),
            kind: kind.into(),
            args,
            max_attempts: max_attempts.max(1),
            run_at_ms: None,
            idempotency_key: None,
            schedule: None,
            tick_ms: None,
        }
    }
}

/// What an enqueue did for one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The job was added under this id.
    New(JobId),
    /// An earlier job with the same idempotency key stands for it; it is in this state now.
    Duplicate(JobId, JobState),
}

impl Enqueued {
    /// The id that stands for the job either way.
    #[must_use]
    pub fn id(self) -> JobId {
        match self {
            Self::New(id) | Self::Duplicate(id, _) => id,
        }
    }
}

/// Where a job is in the queue's state machine (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Delayed until its run-at time.
    Scheduled,
    /// Ready to run.
    Available,
    /// Leased to a worker.
    Running,
    /// Waiting for a retry.
    Retryable,
    /// Succeeded; its record stays for the retention.
    Completed,
    /// A dead letter.
    Discarded,
    /// Redis no longer holds the job (deleted after its retention, or lost).
    Gone,
}

impl JobState {
    /// Parses the state spelling the scripts use; anything unknown is [`JobState::Gone`].
    #[must_use]
    pub fn parse(text: &str) -> Self {
        match text {
            "scheduled" => Self::Scheduled,
            "available" => Self::Available,
            "running" => Self::Running,
            "retryable" => Self::Retryable,
            "completed" => Self::Completed,
            "discarded" => Self::Discarded,
            _ => Self::Gone,
        }
    }
}

/// A job leased to a worker by [`Queue::fetch`].
#[derive(Debug, Clone, PartialEq)]
pub struct Leased {
    /// The id as stored (normally a UUID).
    pub id: String,
    /// The fencing token of this lease; every later ack/renew must carry it.
    pub token: String,
    /// Which delivery this is (1-based).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The stored kind string.
    pub kind: String,
    /// The stored argument text, not yet decoded.
    pub args: String,
    /// Enqueue time, unix ms.
    pub enqueued_at_ms: i64,
    /// The schedule that produced it.
    pub schedule: Option<String>,
    /// The tick (unix ms) that produced it.
    pub tick_ms: Option<i64>,
    /// True when the id had no job behind it; the script already dead-lettered it.
    pub missing: bool,
    /// True when the job was created by another incarnation of the Redis server (before a
    /// restart or failover, which may have lost its earlier leases and acks): its history must
    /// be read from the ledger before it runs, whatever its attempt number.
    pub suspect: bool,
}

/// A lease that expired and was taken over by [`Queue::fetch`] as a *verdict lease*: the job
/// is leased to the fetching worker under a new token with the same attempt count, and that
/// worker settles it to what the ledger holds for the lost attempt (see `fetch.lua`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reclaimed {
    /// The job id.
    pub id: String,
    /// The fencing token of the verdict lease.
    pub token: String,
    /// The attempt whose lease expired.
    pub attempt: u32,
    /// The worker that held it.
    pub worker: String,
    /// When that lease began, unix ms.
    pub leased_at_ms: i64,
    /// The stored kind.
    pub kind: String,
    /// The stored argument text.
    pub args: String,
    /// Enqueue time, unix ms.
    pub enqueued_at_ms: i64,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The schedule that produced it.
    pub schedule: Option<String>,
    /// The tick (unix ms) that produced it.
    pub tick_ms: Option<i64>,
}

/// The result of one fetch round trip.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fetched {
    /// Newly leased jobs.
    pub jobs: Vec<Leased>,
    /// Expired leases taken over in the same call, as verdict leases of this worker.
    pub reclaimed: Vec<Reclaimed>,
    /// Time until the earliest delayed or retrying job is due, if any; only computed when the
    /// fetch drained the ready list.
    pub next_due: Option<Duration>,
    /// Whether the ready list ran out before the fetch had leased as many jobs as it asked for:
    /// the worker may then wait on the wake list (every job that becomes ready later pushes a
    /// wake token, and `next_due` covers the delayed ones) instead of fetching again at once.
    pub drained: bool,
}

/// How an attempt ended, as the queue needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Succeeded: the job is completed and expires after the retention.
    Done,
    /// Failed: retry after this delay, unless it was the last attempt (then dead).
    Retry(Duration),
    /// Failed permanently: dead letter now.
    Dead,
    /// The attempt counts but has no result (its lease expired, or the worker stopped
    /// mid-attempt): back to the ready list, unless it was the last attempt (then dead).
    Release,
    /// The attempt never began: back to the ready list, and it does not count.
    Unstarted,
}

/// One attempt to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The job id.
    pub id: String,
    /// The fencing token the attempt was leased with.
    pub token: String,
    /// What to do with the job.
    pub verdict: Verdict,
    /// The error message for failed attempts.
    pub error: String,
}

/// What the queue did with a settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The job is completed.
    Completed,
    /// The job waits for a retry.
    Retryable,
    /// The job is dead.
    Discarded,
    /// The job was given back to the ready list.
    Available,
    /// The token was stale: another lease owns the job now. Nothing was changed.
    Refused,
}

/// Queue depth and counters, all read in O(1).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct QueueStats {
    /// The queue.
    pub name: String,
    /// Ready to run now.
    pub pending: u64,
    /// Delayed until a future time.
    pub scheduled: u64,
    /// Leased to a worker.
    pub running: u64,
    /// Waiting for a retry.
    pub retrying: u64,
    /// Dead letters.
    pub dead: u64,
    /// Workers seen in the last 30 s.
    pub workers: u64,
    /// How long the job next in line has been ready, in seconds: since it last became ready
    /// (enqueued to run now, promoted when due, given back, requeued or restored).
    pub oldest_pending_age_seconds: Option<f64>,
    /// Monotonic counters (defined in the module docs): enqueued, requeued, succeeded,
    /// failed, retried, dead, reclaimed.
    pub totals: HashMap<String, u64>,
    /// Attempts that succeeded in the current minute and the 59 before it (per-minute rollup
    /// written by the settle script; no history is read).
    pub succeeded_1h: u64,
    /// Attempts that failed (retried, dead or lost) in the same window.
    pub failed_1h: u64,
    /// Attempts settled (succeeded + failed) per minute over the last 4 full minutes and the
    /// current one so far.
    pub throughput_per_min: f64,
    /// Attempts settled in each of the 60 minutes ending with `minute`, oldest first:
    /// (succeeded, failed). The dashboard's chart; not part of the serialized stats.
    #[serde(skip)]
    pub per_minute: Vec<(u64, u64)>,
    /// The unix minute (by Redis' clock) of the last entry of `per_minute`.
    #[serde(skip)]
    pub minute: i64,
}

/// One job's current record in Redis.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobRecord {
    /// The job id.
    pub id: String,
    /// Every field of the job hash (`state`, `attempt`, `err`, ...).
    pub fields: HashMap<String, String>,
}

/// One queue under one key prefix: the typed face of the Lua scripts.
#[derive(Debug, Clone)]
pub struct Queue {
    conn: RedisConn,
    keys: QueueKeys,
    name: QueueName,
    options: QueueOptions,
}

impl Queue {
    /// A handle on `name` under `prefix`, using `conn` for every call.
    #[must_use]
    pub fn new(conn: RedisConn, prefix: &str, name: QueueName, options: QueueOptions) -> Self {
        Self {
            keys: QueueKeys::new(prefix, &name),
            conn,
            name,
            options,
        }
    }

    /// The queue's name.
    #[must_use]
    pub fn name(&self) -> &QueueName {
        &self.name
    }

    /// The queue's key names.
    #[must_use]
    pub fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    /// The queue's timing options.
    #[must_use]
    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    /// A clone of the connection, for callers that need a raw command.
    #[must_use]
    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Enqueues a batch: one round trip per [`ENQUEUE_CHUNK`] jobs.
    ///
    /// # Errors
    /// On a Redis error; chunks already sent stay enqueued (and idempotency keys make a retry
    /// of the whole batch safe when they are set).
    pub async fn enqueue(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, Error> {
        let mut out = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(ENQUEUE_CHUNK) {
            let mut invocation = ENQUEUE.prepare_invoke();
            invocation
                .key(&self.keys.ready)
                .key(&self.keys.delayed)
                .key(&self.keys.stats)
                .key(&self.keys.wake)
                .key(&self.keys.done)
                .key(&self.keys.tokens)
                .arg(&self.keys.base)
                .arg(millis(self.options.idempotency_ttl));
            for job in chunk {
                invocation
                    .arg(job.id.to_string())
                    .arg(&job.kind)
                    .arg(job.args.to_string())
                    .arg(job.max_attempts.max(1))
                    .arg(job.run_at_ms.unwrap_or(0))
                    .arg(job.idempotency_key.as_deref().unwrap_or(""))
                    .arg(job.schedule.as_deref().unwrap_or(""))
                    .arg(job.tick_ms.map(|t| t.to_string()).unwrap_or_default());
            }
            let reply: Value = invocation.invoke_async(&mut self.conn.clone()).await?;
            let fields = array(reply)?;
            for triple in fields.chunks(3) {
                let [id, fresh, state] = triple else {
                    return Err(protocol("enqueue reply is not triples"));
                };
                let id = JobId::parse(&text(id)?).map_err(|e| Error::Protocol(e.to_string()))?;
                out.push(if int(fresh)? == 1 {
                    Enqueued::New(id)
                } else {
                    Enqueued::Duplicate(id, JobState::parse(&text(state)?))
                });
            }
        }
        Ok(out)
    }

    /// Leases up to `count` ready jobs to `worker`, after promoting due jobs and reclaiming
    /// expired leases (each bounded by the options' `maintenance_limit`).
    ///
    /// # Errors
    /// On a Redis error or a malformed reply.
    pub async fn fetch(&self, worker: &str, count: usize) -> Result<Fetched, Error> {
        let reply: Value = FETCH
            .key(&self.keys.ready)
            .key(&self.keys.delayed)
            .key(&self.keys.retry)
            .key(&self.keys.leases)
            .key(&self.keys.dead)
            .key(&self.keys.stats)
            .key(&self.keys.fence)
            .key(&self.keys.workers)
            .key(&self.keys.tokens)
            .key(&self.keys.holders)
            .key(&self.keys.attempts)
            .key(&self.keys.done)
            .arg(&self.keys.base)
            .arg(worker)
            .arg(count)
            .arg(millis(self.options.lease))
            .arg(self.options.maintenance_limit)
            .arg(millis(self.options.dead_retention))
            .arg(millis(self.options.retention))
            .arg(millis(self.options.idempotency_ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut parts = array(reply)?.into_iter();
        let (Some(jobs), Some(reclaimed), Some(next_due), Some(incarnation)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(protocol("fetch reply has fewer than 4 parts"));
        };
        let mut fetched = Fetched::default();
        let packed = bulk(jobs, "fetch jobs")?;
        let incarnation = bulk(incarnation, "fetch incarnation")?;
        fetched.jobs = unpack_leased(&packed, count, &incarnation)?;
        for f in array(reclaimed)?.chunks(11) {
            let [
                id,
                token,
                attempt,
                worker,
                leased_at,
                kind,
                args,
                enq,
                max,
                sched,
                tick,
            ] = f
            else {
                return Err(protocol("fetch reclaim entry is not 11 fields"));
            };
            fetched.reclaimed.push(Reclaimed {
                id: text(id)?,
                token: text(token)?,
                attempt: int(attempt)? as u32,
                worker: text(worker)?,
                leased_at_ms: text(leased_at)?.parse().unwrap_or(0),
                kind: text(kind)?,
                args: text(args)?,
                enqueued_at_ms: text(enq)?.parse().unwrap_or(0),
                max_attempts: int(max)?.max(1) as u32,
                schedule: non_empty(text(sched)?),
                tick_ms: non_empty(text(tick)?).and_then(|t| t.parse().ok()),
            });
        }
        let next_due = int(&next_due)?;
        fetched.drained = next_due != -2;
        fetched.next_due = (next_due >= 0).then(|| Duration::from_millis(next_due as u64));
        Ok(fetched)
    }

    /// Settles a batch of attempts in one round trip. Stale tokens are refused, not applied.
    ///
    /// # Errors
    /// On a Redis error or a malformed reply.
    pub async fn settle(
        &self,
        settlements: &[Settlement],
    ) -> Result<Vec<(String, Settled)>, Error> {
        if settlements.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = ACK.prepare_invoke();
        invocation
            .key(&self.keys.leases)
            .key(&self.keys.retry)
            .key(&self.keys.dead)
            .key(&self.keys.stats)
            .key(&self.keys.wake)
            .key(&self.keys.tokens)
            .key(&self.keys.holders)
            .key(&self.keys.attempts)
            .key(&self.keys.done)
            .key(&self.keys.ready)
            .arg(&self.keys.base)
            .arg(millis(self.options.dead_retention));
        // Per settlement: id, token, and `done` or `verdict|delay ms|error` (see ack.lua).
        for s in settlements {
            invocation.arg(&s.id).arg(&s.token);
            let (verdict, delay) = match s.verdict {
                Verdict::Done => {
                    invocation.arg("done");
                    continue;
                }
                Verdict::Retry(delay) => ("retry", millis(delay)),
                Verdict::Dead => ("dead", 0),
                Verdict::Release => ("release", 0),
                Verdict::Unstarted => ("unstarted", 0),
            };
            invocation.arg(format!("{verdict}|{delay}|{}", s.error));
        }
        let reply: Value = invocation.invoke_async(&mut self.conn.clone()).await?;
        // One letter per settlement, in the order sent (see ack.lua).
        let states = match reply {
            Value::BulkString(bytes) => bytes,
            Value::SimpleString(text) => text.into_bytes(),
            other => return Err(protocol(&format!("ack reply is not a string: {other:?}"))),
        };
        if states.len() != settlements.len() {
            return Err(protocol(&format!(
                "ack reply has {} states for {} settlements",
                states.len(),
                settlements.len()
            )));
        }
        states
            .iter()
            .zip(settlements)
            .map(|(state, settlement)| {
                let settled = match state {
                    b'c' => Settled::Completed,
                    b'r' => Settled::Retryable,
                    b'd' => Settled::Discarded,
                    b'a' => Settled::Available,
                    b'x' => Settled::Refused,
                    other => {
                        return Err(protocol(&format!(
                            "ack reply has an unknown state {:?}",
                            char::from(*other)
                        )));
                    }
                };
                Ok((settlement.id.clone(), settled))
            })
            .collect()
    }

    /// Extends the leases `worker` holds; returns the ids whose lease it no longer holds.
    ///
    /// # Errors
    /// On a Redis error.
    pub async fn renew(
        &self,
        worker: &str,
        leases: &[(String, String)],
    ) -> Result<Vec<String>, Error> {
        let mut invocation = RENEW.prepare_invoke();
        invocation
            .key(&self.keys.leases)
            .key(&self.keys.workers)
            .key(&self.keys.tokens)
            .arg(&self.keys.base)
            .arg(worker)
            .arg(millis(self.options.lease));
        for (id, token) in leases {
            invocation.arg(id).arg(token);
        }
        let reply: Value = invocation.invoke_async(&mut self.conn.clone()).await?;
        array(reply)?.iter().map(text).collect()
    }

    /// Gives leased jobs back to the ready list. `started = false` means the attempt never
    /// began and does not count; a started attempt counts, and on the last attempt the job is
    /// dead-lettered instead. `deregister` removes `worker` from the live-worker set.
    ///
    /// # Errors
    /// On a Redis error.
    pub async fn release(
        &self,
        worker: &str,
        deregister: bool,
        leases: &[(String, String, bool)],
    ) -> Result<u64, Error> {
        let mut invocation = RELEASE.prepare_invoke();
        invocation
            .key(&self.keys.leases)
            .key(&self.keys.ready)
            .key(&self.keys.wake)
            .key(&self.keys.workers)
            .key(&self.keys.tokens)
            .key(&self.keys.holders)
            .key(&self.keys.attempts)
            .key(&self.keys.dead)
            .key(&self.keys.stats)
            .arg(&self.keys.base)
            .arg(if deregister { worker } else { "" })
            .arg(millis(self.options.dead_retention));
        for (id, token, started) in leases {
            invocation
                .arg(id)
                .arg(token)
                .arg(if *started { "1" } else { "0" });
        }
        let released: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(released as u64)
    }

    /// Moves a dead job back to the ready list with a fresh attempt budget.
    /// Returns false when `id` is not a dead letter of this queue.
    ///
    /// # Errors
    /// On a Redis error.
    pub async fn requeue_dead(&self, id: &str) -> Result<bool, Error> {
        let requeued: i64 = REQUEUE
            .key(&self.keys.dead)
            .key(&self.keys.ready)
            .key(&self.keys.wake)
            .key(&self.keys.attempts)
            .key(&self.keys.stats)
            .arg(&self.keys.base)
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(requeued == 1)
    }

    /// The newest dead letters, most recent first, at most `limit`.
    ///
    /// # Errors
    /// On a Redis error.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<JobRecord>, Error> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(&self.keys.dead)
            .arg(0)
            .arg(limit.saturating_sub(1))
            .arg("REV")
            .query_async(&mut conn)
            .await?;
        self.jobs(&ids)
            .await
            .map(|records| records.into_iter().flatten().collect())
    }

    /// One job's record, or `None` when Redis no longer knows it (finished and expired).
    ///
    /// The job's hash holds its payload and its last settled state; while it is leased, the
    /// lease fields (`state = running`, `token`, `worker`, `leased_at`) and the live `attempt`
    /// count come from its lease in the queue's `tokens` hash (or, for a lease of an earlier
    /// release, from `holders` and `attempts`) and are merged in here. A completed job without
    /// an `attempts` entry completed on its first attempt.
    ///
    /// # Errors
    /// On a Redis error.
    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>, Error> {
        let mut records = self.jobs(std::slice::from_ref(&id)).await?;
        Ok(records.pop().flatten())
    }

    /// The records of `ids`, in order, in one round trip (see [`Queue::job`]); `None` for an id
    /// Redis no longer knows.
    ///
    /// # Errors
    /// On a Redis error.
    pub async fn jobs<S: AsRef<str>>(&self, ids: &[S]) -> Result<Vec<Option<JobRecord>>, Error> {
        const PER_JOB: usize = 6;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            let id = id.as_ref();
            pipe.cmd("HGETALL")
                .arg(self.keys.job(id))
                .cmd("ZSCORE")
                .arg(&self.keys.leases)
                .arg(id)
                .cmd("HGET")
                .arg(&self.keys.tokens)
                .arg(id)
                .cmd("HGET")
                .arg(&self.keys.holders)
                .arg(id)
                .cmd("HGET")
                .arg(&self.keys.attempts)
                .arg(id)
                .cmd("ZSCORE")
                .arg(&self.keys.done)
                .arg(id);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.conn.clone()).await?;
        if replies.len() != ids.len() * PER_JOB {
            return Err(protocol("job lookup reply has the wrong length"));
        }
        let mut out = Vec::with_capacity(ids.len());
        let mut replies = replies.into_iter();
        for id in ids {
            let reply: JobReply =
                redis::from_redis_value(Value::Array(replies.by_ref().take(PER_JOB).collect()))
                    .map_err(|e| Error::Protocol(format!("job lookup reply: {e}")))?;
            out.push(job_record(id.as_ref(), reply));
        }
        Ok(out)
    }

    /// Depths and counters of the queue, in one round trip.
    ///
    /// # Errors
    /// On a Redis error.
    pub async fn stats(&self) -> Result<QueueStats, Error> {
        let reply: Value = STATS
            .key(&self.keys.ready)
            .key(&self.keys.delayed)
            .key(&self.keys.retry)
            .key(&self.keys.leases)
            .key(&self.keys.dead)
            .key(&self.keys.stats)
            .key(&self.keys.workers)
            .arg(&self.keys.base)
            .arg(30_000)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let parts = array(reply)?;
        let [
            pending,
            scheduled,
            retrying,
            running,
            dead,
            workers,
            oldest,
            now,
            counters,
            succeeded_1h,
            failed_1h,
            processed_5m,
            per_minute,
        ] = parts.as_slice()
        else {
            return Err(protocol("stats reply is not 13 parts"));
        };
        let now_ms = int(now)?;
        // The 5-minute window is 4 full minutes plus the elapsed part of the current one.
        let window_min = 4.0 + (now_ms.rem_euclid(60_000) as f64 / 60_000.0);
        let oldest = int(oldest)?;
        let mut totals = HashMap::new();
        for pair in array(counters.clone())?.chunks(2) {
            if let [field, value] = pair {
                totals.insert(text(field)?, text(value)?.parse().unwrap_or(0));
            }
        }
        Ok(QueueStats {
            name: self.name.to_string(),
            pending: int(pending)? as u64,
            scheduled: int(scheduled)? as u64,
            retrying: int(retrying)? as u64,
            running: int(running)? as u64,
            dead: int(dead)? as u64,
            workers: int(workers)? as u64,
            oldest_pending_age_seconds: (oldest >= 0)
                .then(|| (now_ms - oldest).max(0) as f64 / 1000.0),
            totals,
            succeeded_1h: int(succeeded_1h)?.max(0) as u64,
            failed_1h: int(failed_1h)?.max(0) as u64,
            throughput_per_min: int(processed_5m)?.max(0) as f64 / window_min,
            per_minute: array(per_minute.clone())?
                .chunks(2)
                .map(|pair| match pair {
                    [succeeded, failed] => {
                        Ok((int(succeeded)?.max(0) as u64, int(failed)?.max(0) as u64))
                    }
                    _ => Err(protocol("stats per-minute counts are not pairs")),
                })
                .collect::<Result<_, _>>()?,
            minute: now_ms.div_euclid(60_000),
        })
    }

    /// Blocks on the queue's wake list for at most `timeout`, on a connection made for
    /// blocking. Returns true when woken by an enqueue, false on timeout.
    ///
    /// # Errors
    /// On a Redis error.
    pub async fn wait_for_work(
        &self,
        blocking: &RedisConn,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let seconds = timeout.as_secs_f64().max(0.001);
        let popped: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(&self.keys.wake)
            .arg(seconds)
            .query_async(&mut blocking.clone())
            .await?;
        Ok(popped.is_some())
    }
}

/// HGETALL of the job, then its lease deadline, token, holder and live attempt count.
/// Merges a job's hash with its live lease and completion (see [`Queue::job`]).
fn job_record(id: &str, reply: JobReply) -> Option<JobRecord> {
    let (mut fields, lease_deadline, lease, holder, counted, completed_at) = reply;
    if fields.is_empty() {
        return None;
    }
    // What a first lease reads, packed (enqueue.lua): the same values as the named fields.
    fields.remove("p");
    if let Some(counted) = &counted {
        fields.insert("attempt".to_owned(), counted.clone());
    }
    if let Some(completed_at) = completed_at {
        fields.insert("state".to_owned(), "completed".to_owned());
        fields.insert("finished".to_owned(), completed_at.to_string());
        fields.remove("err");
        // `attempts` keeps a count from a job's second attempt on (fetch.lua): a completed job
        // without one completed on its first.
        if counted.is_none() {
            fields.insert("attempt".to_owned(), "1".to_owned());
        }
    }
    if let (Some(_), Some(lease)) = (lease_deadline, lease) {
        let (token, attempt, own_holder) = split_lease(&lease);
        fields.insert("state".to_owned(), "running".to_owned());
        fields.insert("token".to_owned(), token.to_owned());
        if let Some(attempt) = attempt {
            fields.insert("attempt".to_owned(), attempt.to_owned());
        }
        let holder = own_holder.or(holder.as_deref());
        if let Some((worker, leased_at)) = holder.and_then(|h| h.split_once('|')) {
            fields.insert("worker".to_owned(), worker.to_owned());
            fields.insert("leased_at".to_owned(), leased_at.to_owned());
        }
    }
    Some(JobRecord {
        id: id.to_owned(),
        fields,
    })
}

/// A lease's value in `tokens` (`lease.lua`): `token|attempt|worker|leased_at` as (token,
/// attempt, `worker|leased_at`), or a lease of an earlier release, the bare token, whose holder
/// and count are in the `holders` and `attempts` hashes.
fn split_lease(value: &str) -> (&str, Option<&str>, Option<&str>) {
    match value.split_once('|') {
        None => (value, None, None),
        Some((token, rest)) => match rest.split_once('|') {
            Some((attempt, holder)) => (token, Some(attempt), Some(holder)),
            None => (token, Some(rest), None),
        },
    }
}

type JobReply = (
    HashMap<String, String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The leased jobs of a fetch reply, packed by `fetch.lua` into one string: per job six
/// `|`-terminated fields (token, attempt, the current limit or nothing when the packed one
/// holds, `missing` or nothing, and the byte lengths of the id and of the job's packed part),
/// then the id and the packed part. The packed part is what `enqueue.lua` wrote once: seven
/// `|`-terminated fields (max, enq, tick, and the byte lengths of kind, args, sched and the
/// incarnation that created the job), then those four values back to back. A job whose
/// incarnation is not `current` (or when `current` is empty: the server denies INFO) is
/// suspect.
fn unpack_leased(mut rest: &[u8], count_hint: usize, current: &[u8]) -> Result<Vec<Leased>, Error> {
    fn field<'a>(rest: &mut &'a [u8]) -> Result<&'a str, Error> {
        let at = rest
            .iter()
            .position(|&b| b == b'|')
            .ok_or_else(|| protocol("fetch job entry is cut short"))?;
        let value = std::str::from_utf8(&rest[..at])
            .map_err(|_| protocol("fetch job entry's numbers are not text"))?;
        *rest = &rest[at + 1..];
        Ok(value)
    }
    fn bytes<'a>(rest: &mut &'a [u8], len: &str) -> Result<&'a [u8], Error> {
        let len: usize = len
            .parse()
            .map_err(|_| Error::Protocol(format!("fetch job entry: bad length {len:?}")))?;
        if len > rest.len() {
            return Err(protocol("fetch job entry is shorter than its lengths say"));
        }
        let (value, tail) = rest.split_at(len);
        *rest = tail;
        Ok(value)
    }
    fn take(rest: &mut &[u8], len: &str) -> Result<String, Error> {
        let value = bytes(rest, len)?;
        // Valid UTF-8 is checked on the fast path; `from_utf8_lossy` walks its input chunk by
        // chunk even when there is nothing to replace (1.5 % of a worker's instructions).
        Ok(match std::str::from_utf8(value) {
            Ok(text) => text.to_owned(),
            Err(_) => String::from_utf8_lossy(value).into_owned(),
        })
    }
    let mut jobs = Vec::with_capacity(count_hint.min(4096));
    while !rest.is_empty() {
        let token = field(&mut rest)?;
        let attempt = field(&mut rest)?;
        let current_max = field(&mut rest)?;
        let flag = field(&mut rest)?;
        let (id_len, packed_len) = (field(&mut rest)?, field(&mut rest)?);
        let id = take(&mut rest, id_len)?;
        // The packed part is read within its own length, so a job's framing never depends on
        // what its packed part holds.
        let mut packed = bytes(&mut rest, packed_len)?;
        let max = field(&mut packed)?;
        let enq = field(&mut packed)?;
        let tick = field(&mut packed)?;
        let (kind_len, args_len, sched_len, inc_len) = (
            field(&mut packed)?,
            field(&mut packed)?,
            field(&mut packed)?,
            field(&mut packed)?,
        );
        let kind = take(&mut packed, kind_len)?;
        let args = take(&mut packed, args_len)?;
        let schedule = Some(take(&mut packed, sched_len)?).filter(|s| !s.is_empty());
        let inc = bytes(&mut packed, inc_len)?;
        if !packed.is_empty() {
            return Err(protocol(
                "fetch job entry's packed part is longer than its lengths say",
            ));
        }
        jobs.push(Leased {
            token: token.to_owned(),
            attempt: int_text(attempt)? as u32,
            max_attempts: int_text(if current_max.is_empty() {
                max
            } else {
                current_max
            })? as u32,
            enqueued_at_ms: int_text(enq)?,
            tick_ms: tick.parse().ok(),
            missing: flag == "missing",
            suspect: flag != "missing" && (current.is_empty() || inc != current),
            id,
            kind,
            args,
            schedule,
        });
    }
    Ok(jobs)
}

/// One string of a reply, empty when nil; `what` names it in the error.
fn bulk(value: Value, what: &str) -> Result<Vec<u8>, Error> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::Nil => Ok(Vec::new()),
        other => Err(Error::Protocol(format!(
            "{what}: expected one string, got {other:?}"
        ))),
    }
}

fn protocol(message: &str) -> Error {
    Error::Protocol(message.to_owned())
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn array(value: Value) -> Result<Vec<Value>, Error> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(Error::Protocol(format!("expected an array, got {other:?}"))),
    }
}

fn text(value: &Value) -> Result<String, Error> {
    match value {
        Value::BulkString(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(n) => Ok(n.to_string()),
        Value::Okay => Ok("OK".to_owned()),
        Value::Nil | Value::Boolean(false) => Ok(String::new()),
        other => Err(Error::Protocol(format!("expected text, got {other:?}"))),
    }
}

fn int(value: &Value) -> Result<i64, Error> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::Nil | Value::Boolean(false) => Ok(0),
        other => int_text(&text(other)?),
    }
}

/// An integer written as text; empty is 0.
fn int_text(text: &str) -> Result<i64, Error> {
    if text.is_empty() {
        return Ok(0);
    }
    text.parse()
        .map_err(|_| Error::Protocol(format!("expected an integer, got {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::{split_lease, unpack_leased};

    #[test]
    fn a_lease_value_splits_into_token_attempt_and_holder_and_a_bare_token_is_an_earlier_releases()
    {
        assert_eq!(
            split_lease("41|2|host-7-ab12|1764460800000"),
            ("41", Some("2"), Some("host-7-ab12|1764460800000"))
        );
        assert_eq!(split_lease("41"), ("41", None, None));
        assert_eq!(split_lease("41|2"), ("41", Some("2"), None));
    }

    #[test]
    fn a_packed_part_longer_than_its_lengths_say_is_an_error() {
        // Kind "k", no args, no schedule, no incarnation, then one byte too many.
        let packed = "1|1764460800000||1|0|0|0|kX";
        let entry = format!("1|1|||2|{}|i1{packed}", packed.len());

        let read = unpack_leased(entry.as_bytes(), 1, b"");

        assert!(read.is_err(), "{read:?}");
        let whole = format!(
            "1|1|||2|{}|i1{}",
            packed.len() - 1,
            &packed[..packed.len() - 1]
        );
        assert_eq!(
            unpack_leased(whole.as_bytes(), 1, b"").unwrap()[0].kind,
            "k"
        );
    }

    #[test]
    fn a_packed_fetch_reply_is_read_by_its_byte_lengths_and_a_cut_one_is_an_error() {
        let args = r#"{"a":"x|y","b":"ü"}"#;
        let current = "run:repl";
        // As enqueue.lua packs a job: max|enq|tick|#kind|#args|#sched|#inc| kind args sched inc.
        let pack = |max: &str, tick: &str, kind: &str, sched: &str, inc: &str| {
            format!(
                "{max}|1764460800000|{tick}|{}|{}|{}|{}|{kind}{args}{sched}{inc}",
                kind.len(),
                args.len(),
                sched.len(),
                inc.len()
            )
        };
        let first = pack("3", "1764460800000", "task.x", "a|b|c", "old:incarnation");
        let second = pack("1", "", "task.y", "", current);
        let missing = "0|1764460800000||0|0|0|0|";
        let packed = format!(
            "7|2|||4|{}|id|1{first}8|4|5||2|{}|i2{second}0|0|0|missing|2|{}|i3{missing}",
            first.len(),
            second.len(),
            missing.len()
        );

        let jobs = unpack_leased(packed.as_bytes(), 3, current.as_bytes()).expect("well formed");

        assert_eq!(jobs.len(), 3);
        let job = &jobs[0];
        assert_eq!(
            (
                job.id.as_str(),
                job.token.as_str(),
                job.attempt,
                job.max_attempts,
                job.kind.as_str(),
                job.args.as_str(),
                job.schedule.as_deref(),
                job.tick_ms,
                job.enqueued_at_ms,
                job.suspect,
                job.missing,
            ),
            (
                "id|1",
                "7",
                2,
                3,
                "task.x",
                args,
                Some("a|b|c"),
                Some(1_764_460_800_000),
                1_764_460_800_000,
                true,
                false
            )
        );
        // The current limit, when given, is the one that holds (a requeue rewrote it).
        let job = &jobs[1];
        assert_eq!(
            (
                job.id.as_str(),
                job.max_attempts,
                job.kind.as_str(),
                job.schedule.as_deref(),
                job.tick_ms,
                job.suspect
            ),
            ("i2", 5, "task.y", None, None, false)
        );
        assert!(jobs[2].missing && !jobs[2].suspect && jobs[2].id == "i3");
        assert!(
            unpack_leased(packed.as_bytes(), 3, b"").unwrap()[1].suspect,
            "without the server's incarnation every job is suspect"
        );
        for cut in [packed.len() - 1, 30, 5] {
            assert!(
                unpack_leased(&packed.as_bytes()[..cut], 3, current.as_bytes()).is_err(),
                "cut at {cut}"
            );
        }
    }
}
