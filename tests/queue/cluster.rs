//! Redis Cluster: every key of a queue shares the queue's hash tag, so queues whose tags land
//! on different masters each work through a cluster connection.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use upkeep_shared::queue::{QueueOptions, RedisTarget};
use upkeep_tests::{free_port, unique_prefix};

use crate::support::{
    Calls, TestLedger, TestWorker, consumer, counting, exclusive, jobs, queue_on, stats, total,
    wait_for_succeeded,
};

/// Three masters, no replicas, in a temporary directory; killed on drop.
struct Cluster {
    ports: Vec<u16>,
    nodes: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(masters: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("upkeep-cluster-")
            .tempdir()
            .context("a directory for the cluster")?;
        let mut cluster = Self {
            ports: Vec::new(),
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..masters {
            let (port, bus) = (free_port(), free_port());
            let child = spawn_node(cluster.dir.path(), port, bus)?;
            cluster.ports.push(port);
            cluster.nodes.push(child);
        }
        for &port in &cluster.ports {
            cluster.wait_for(port, "PING", |reply| reply == "PONG")?;
        }
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("running redis-cli --cluster create")?;
        if !created.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&created.stdout),
                String::from_utf8_lossy(&created.stderr)
            );
        }
        for &port in &cluster.ports {
            cluster.wait_for(port, "CLUSTER INFO", |info| {
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{masters}"))
            })?;
        }
        Ok(cluster)
    }

    fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// Runs `command` on one node with redis-cli until `ok` accepts its output (20 s at most).
    fn wait_for(&self, port: u16, command: &str, ok: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let reply = cli(port, command)?;
            if ok(&reply) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("node {port} never answered {command} as expected; last reply: {reply}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Which port serves each slot, from CLUSTER NODES.
    fn slot_owners(&self) -> anyhow::Result<HashMap<u16, u16>> {
        let nodes = cli(self.ports[0], "CLUSTER NODES")?;
        let mut owners = HashMap::new();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let port: u16 = fields[1]
                .split(['@', ','])
                .next()
                .and_then(|address| address.rsplit(':').next())
                .and_then(|port| port.parse().ok())
                .with_context(|| format!("a node address in {line}"))?;
            for range in &fields[8..] {
                let (first, last) = range.split_once('-').unwrap_or((range, range));
                for slot in first.parse::<u16>()?..=last.parse::<u16>()? {
                    owners.insert(slot, port);
                }
            }
        }
        Ok(owners)
    }

    /// Queue names whose hash tags land on `n` different masters, with their master's port.
    fn names_on_distinct_masters(&self, n: usize) -> anyhow::Result<Vec<(String, u16)>> {
        let owners = self.slot_owners()?;
        let mut picked: Vec<(String, u16)> = Vec::new();
        for i in 0..1_000 {
            let name = format!("cq{i}");
            let slot: u16 = cli(self.ports[0], &format!("CLUSTER KEYSLOT {name}"))?.parse()?;
            let owner = *owners.get(&slot).context("every slot has an owner")?;
            if picked.iter().all(|(_, port)| *port != owner) {
                picked.push((name, owner));
            }
            if picked.len() == n {
                return Ok(picked);
            }
        }
        bail!("no {n} queue names on distinct masters among 1,000 candidates")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

fn spawn_node(dir: &Path, port: u16, bus: u16) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("redis-{port}.log")))?;
    Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--cluster-port", &bus.to_string()])
        .args(["--cluster-enabled", "yes"])
        .arg("--cluster-config-file")
        .arg(dir.join(format!("nodes-{port}.conf")))
        .args(["--cluster-node-timeout", "5000"])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting redis-server (is it installed?)")
}

/// One redis-cli command against a node; its output without the trailing newline.
fn cli(port: u16, command: &str) -> anyhow::Result<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(command.split_whitespace())
        .stdin(Stdio::null())
        .output()
        .context("running redis-cli")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_on_three_different_cluster_masters_each_process_their_jobs_through_a_cluster_connection()
 {
    let _machine = exclusive().await;
    // Arrange
    let cluster = tokio::task::block_in_place(|| Cluster::start(3)).expect("a 3-master cluster");
    let names = cluster
        .names_on_distinct_masters(3)
        .expect("queue names on distinct masters");
    let target = RedisTarget {
        url: String::new(),
        cluster_urls: cluster.urls(),
        response_timeout: Duration::from_secs(5),
    };
    let prefix = unique_prefix();
    let calls = Arc::new(Calls::default());
    let mut queues = Vec::new();
    for (name, _) in &names {
        let queue = queue_on(&target, &prefix, name, QueueOptions::default());
        queue
            .enqueue(&jobs(100, 1))
            .await
            .expect("enqueue through the cluster");
        queues.push(queue);
    }

    // Act
    let workers: Vec<TestWorker> = queues
        .iter()
        .map(|queue| {
            TestWorker::start(
                queue.clone(),
                &target,
                consumer("cluster", 8),
                Arc::new(TestLedger::default()),
                counting(calls.clone()),
            )
        })
        .collect();
    for queue in &queues {
        wait_for_succeeded(queue, 100, Duration::from_secs(30)).await;
    }
    for worker in workers {
        worker.stop().await;
    }

    // Assert
    assert_eq!(calls.total(), 300);
    for ((name, port), queue) in names.iter().zip(&queues) {
        let stats = stats(queue).await;
        println!("cluster: queue {name} on master :{port}: {stats:?}");
        assert_eq!(total(&stats, "succeeded"), 100, "queue {name}");
        assert_eq!(total(&stats, "enqueued"), 100, "queue {name}");
        assert_eq!((stats.pending, stats.running, stats.dead), (0, 0, 0));
        let stats_key = &queue.keys().stats;
        let exists = cli(*port, &format!("EXISTS {stats_key}")).expect("redis-cli");
        assert_eq!(exists, "1", "{stats_key} lives on master :{port}");
    }
    drop(cluster);
}
