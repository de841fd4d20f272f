// PM2 ecosystem file for upkeep: every daemon, started directly (no shell wrapper, so signals
// reach the daemon itself), restarted when it exits or grows past max_memory_restart.
//
//   pm2 start deploy/pm2/ecosystem.config.js --env production
//
// UPKEEP_BIN_DIR (default /usr/local/bin), UPKEEP_CONFIG (default /etc/upkeep/upkeep.toml) and
// UPKEEP_LOG_DIR (default /var/log/upkeep) are read from the environment PM2 runs in; secrets
// (DATABASE_URL, REDIS_URL, UPKEEP_API_TOKEN, UPKEEP_SECRET_KEY) come from it as well and are
// never written here. See docs/operations.md.

const path = require("path");

const binDir = process.env.UPKEEP_BIN_DIR || "/usr/local/bin";
const logDir = process.env.UPKEEP_LOG_DIR || "/var/log/upkeep";
const config = process.env.UPKEEP_CONFIG || "/etc/upkeep/upkeep.toml";

// [worker] grace_period (30s) + 5s to release leftovers, + margin: PM2 sends SIGINT, then
// SIGKILL after kill_timeout milliseconds.
const WORKER_KILL_TIMEOUT_MS = 45000;
// The scheduler and the API have no long work in flight.
const QUICK_KILL_TIMEOUT_MS = 20000;

function daemon(name, binary, { killTimeout, maxMemory, extraEnv = {} }) {
  return {
    name,
    script: path.join(binDir, binary),
    interpreter: "none",
    exec_mode: "fork",
    instances: 1,
    autorestart: true,
    // A daemon that exits 2 (bad configuration) will not get better by restarting.
    stop_exit_codes: [0, 2],
    restart_delay: 5000,
    exp_backoff_restart_delay: 1000,
    kill_timeout: killTimeout,
    max_memory_restart: maxMemory,
    out_file: path.join(logDir, `${name}.out.log`),
    error_file: path.join(logDir, `${name}.log`),
    merge_logs: true,
    time: false,
    env: {
      UPKEEP_CONFIG: config,
      UPKEEP_LOG_FORMAT: "pretty",
      RUST_LOG: "info",
      ...extraEnv,
    },
    env_production: {
      UPKEEP_CONFIG: config,
      // One JSON object per line in the log files, for shippers.
      UPKEEP_LOG_FORMAT: "json",
      RUST_LOG: "info",
      ...extraEnv,
    },
  };
}

module.exports = {
  apps: [
    daemon("upkeep-scheduler-1", "upkeep-scheduler", {
      killTimeout: QUICK_KILL_TIMEOUT_MS,
      maxMemory: "256M",
    }),
    daemon("upkeep-scheduler-2", "upkeep-scheduler", {
      killTimeout: QUICK_KILL_TIMEOUT_MS,
      maxMemory: "256M",
    }),
    daemon("upkeep-worker-backup", "upkeep-worker-backup", {
      killTimeout: WORKER_KILL_TIMEOUT_MS,
      maxMemory: "512M",
    }),
    daemon("upkeep-worker-logs", "upkeep-worker-logs", {
      killTimeout: WORKER_KILL_TIMEOUT_MS,
      maxMemory: "512M",
    }),
    daemon("upkeep-worker-tokens", "upkeep-worker-tokens", {
      killTimeout: WORKER_KILL_TIMEOUT_MS,
      maxMemory: "256M",
    }),
    daemon("upkeep-worker-reports", "upkeep-worker-reports", {
      killTimeout: WORKER_KILL_TIMEOUT_MS,
      maxMemory: "512M",
    }),
    daemon("upkeep-api", "upkeep-api", {
      killTimeout: QUICK_KILL_TIMEOUT_MS,
      maxMemory: "256M",
    }),
  ],
};
