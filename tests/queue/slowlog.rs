//! [`SlowLog`]: what Redis's SLOWLOG saw on a test's own `redis-server`, each call named by the
//! queue script it ran, so tests can time script calls (`backlog`) or count them (`latency`).

use std::time::Duration;

use redis::Value;
use upkeep_shared::queue::Queue;

use crate::support::{info_field, raw};

/// SLOWLOG armed to record every command at least as slow as a threshold.
pub(crate) struct SlowLog {
    queue: Queue,
}

/// One SLOWLOG entry.
#[derive(Debug)]
pub(crate) struct SlowEntry {
    /// How long the command ran.
    pub(crate) micros: i64,
    /// The queue script it ran (see [`script_name`]), or `None` for a plain command.
    pub(crate) script: Option<&'static str>,
    /// The call as a line for reports: the script or the command, and the client.
    pub(crate) call: String,
}

impl SlowLog {
    /// Records every command that runs `slower_than` or longer (zero: every command), from
    /// an empty log and reset `INFO commandstats`.
    pub(crate) async fn arm(queue: &Queue, slower_than: Duration) -> Self {
        let config = |name: &str, value: &str| {
            let mut cmd = redis::cmd("CONFIG");
            cmd.arg("SET").arg(name).arg(value);
            cmd
        };
        let micros = slower_than.as_micros().to_string();
        let () = raw(queue, &config("slowlog-log-slower-than", &micros)).await;
        let () = raw(queue, &config("slowlog-max-len", "10000")).await;
        let () = raw(queue, redis::cmd("SLOWLOG").arg("RESET")).await;
        let () = raw(queue, redis::cmd("CONFIG").arg("RESETSTAT")).await;
        Self {
            queue: queue.clone(),
        }
    }

    /// Moves the server to the highest CFS priority when the OS allows it, so that SLOWLOG
    /// measures what the scripts cost rather than the time the kernel gave to other processes:
    /// builds and other tests share this machine's 2 cores, and a preempted 2 ms script can
    /// look like a 30 ms one. Best effort; says which it got.
    pub(crate) async fn prioritise_server(&self) -> &'static str {
        // Not SCHED_FIFO: a real-time task busy for more than sched_rt_runtime_us of each second
        // (950 ms by default), as redis-server is while 20,000 jobs are enqueued, is throttled
        // for the rest of the period, and a script it was running then shows up in SLOWLOG as
        // 50 ms.
        let pid = info_field(&self.queue, "server", "process_id").await;
        let status = std::process::Command::new("renice")
            .args(["-n", "-20", "-p", &pid])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(status) if status.success() => "redis-server at nice -20",
            _ => {
                "redis-server at its default priority (renice refused): timings include preemption"
            }
        }
    }

    /// Every entry recorded since [`SlowLog::arm`], newest first.
    pub(crate) async fn entries(&self) -> Vec<SlowEntry> {
        let reply: Value = raw(&self.queue, redis::cmd("SLOWLOG").arg("GET").arg(-1)).await;
        let Value::Array(entries) = reply else {
            panic!("SLOWLOG GET returned {reply:?}");
        };
        entries
            .into_iter()
            .map(|entry| {
                let Value::Array(fields) = entry else {
                    panic!("a SLOWLOG entry is an array, got {entry:?}");
                };
                let micros = match fields.get(2) {
                    Some(Value::Int(micros)) => *micros,
                    other => panic!("SLOWLOG duration is an integer, got {other:?}"),
                };
                let args: Vec<String> = match fields.get(3) {
                    Some(Value::Array(args)) => args
                        .iter()
                        .map(|arg| match arg {
                            Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                            other => format!("{other:?}"),
                        })
                        .collect(),
                    other => panic!("SLOWLOG arguments are an array, got {other:?}"),
                };
                let client = match fields.get(4) {
                    Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
                    _ => String::new(),
                };
                let script = script_name(&args);
                let what = match script {
                    Some(script) => format!(
                        "{script} ({} with {} arguments shown)",
                        args[0].to_ascii_uppercase(),
                        args.len().saturating_sub(3)
                    ),
                    None => args.join(" "),
                };
                SlowEntry {
                    micros,
                    script,
                    call: format!("{what} [client {client}]"),
                }
            })
            .collect()
    }

    /// How many scripts ran since [`SlowLog::arm`] (`INFO commandstats`).
    pub(crate) async fn evalsha_calls(&self) -> u64 {
        let stats = self.evalsha_stats().await;
        stats
            .split(['=', ','])
            .skip_while(|part| !part.ends_with("calls"))
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// The `cmdstat_evalsha` line of `INFO commandstats`.
    pub(crate) async fn evalsha_stats(&self) -> String {
        let info: String = raw(&self.queue, redis::cmd("INFO").arg("commandstats")).await;
        info.lines()
            .find(|line| line.starts_with("cmdstat_evalsha:"))
            .unwrap_or("no evalsha calls")
            .to_owned()
    }
}

/// The queue script an `EVALSHA`/`EVAL` ran, told apart by its number of keys (each script's
/// `KEYS` list has its own length); `None` for any other command.
fn script_name(args: &[String]) -> Option<&'static str> {
    let command = args.first()?;
    if !command.eq_ignore_ascii_case("evalsha") && !command.eq_ignore_ascii_case("eval") {
        return None;
    }
    Some(match args.get(2).map(String::as_str) {
        Some("12") => "fetch",
        Some("10") => "ack",
        Some("9") => "release",
        Some("7") => "stats",
        Some("6") => "enqueue",
        Some("5") => "requeue",
        Some("4") => "restore",
        Some("3") => "renew",
        _ => "script",
    })
}
