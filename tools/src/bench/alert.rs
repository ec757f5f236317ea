//! `varta bench alert`: freeze → notification latency of the two alert paths, in one run,
//! through the real daemon and the real operations stack (Debian's `prometheus` and
//! `prometheus-alertmanager`, on loopback). Prints figures; asserts nothing.
//!
//! One observer (`--threshold-ms T`, this build's linked-in observer or `--observer-exe`),
//! N real agents (`varta agent`) beating every 20 ms, each frozen once with SIGSTOP, staggered
//! by 370 ms (not a divisor of the scrape interval, so the freezes fall at every phase of it);
//! two Alertmanagers routed by `deploy/alertmanager/alertmanager.yml` (`group_wait: 0s`), each
//! notifying its own webhook receiver in this process:
//!
//! * **direct**: the observer posts to its Alertmanager itself (`--alertmanager-url`) the
//!   moment it reports the stall;
//! * **prometheus**: a Prometheus scrapes the observer every second and evaluates
//!   `deploy/prometheus/varta.rules.yml` every second, alerting the other Alertmanager.
//!
//! Latency is from the moment this process sent SIGSTOP to the moment the receiver read the
//! first notification naming the agent. The agent's last beat was up to one beat interval
//! (20 ms) before the freeze, so the direct path's figure is about the threshold minus up to
//! 20 ms plus the delivery; its goal is threshold + `group_wait` + 50 ms.

#[allow(
    dead_code,
    reason = "shared with the daemon's operations tests (watch/tests/ops_support), which use the rest"
)]
mod stack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use varta_watch::alerting::{DeliveryCounters, ALERT_STALLED};

use self::stack::{tmpdir, write_am_config, Alertmanager, Observer, Programs, Prometheus, Webhook};
use super::BenchArgs;
/// Beat interval of the frozen agents, ms.
const BEAT_MS: u32 = 20;
/// Time between two freezes.
const STEP: Duration = Duration::from_millis(370);
/// How long after the last freeze notifications are awaited.
const GRACE: Duration = Duration::from_secs(8);

/// Latencies of one path, ms, sorted.
pub struct Latency {
    /// Freeze → first notification, per agent notified.
    pub ms: Vec<f64>,
    /// Agents frozen but never notified within the grace period.
    pub missing: usize,
}

impl Latency {
    /// Nearest-rank quantile `q` (0..=1).
    #[must_use]
    pub fn pct(&self, q: f64) -> f64 {
        if self.ms.is_empty() {
            return f64::NAN;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank among a few dozen samples"
        )]
        let rank = (q * self.ms.len() as f64).ceil().max(1.0) as usize;
        self.ms[rank.min(self.ms.len()) - 1]
    }

    /// `min … median … p99 … max` in one line.
    #[must_use]
    pub fn line(&self) -> String {
        format!(
            "n={:<3} min {:>7.1} ms  median {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms{}",
            self.ms.len(),
            self.pct(0.0),
            self.pct(0.5),
            self.pct(0.99),
            self.pct(1.0),
            if self.missing > 0 {
                format!("  ({} never notified)", self.missing)
            } else {
                String::new()
            }
        )
    }
}

/// What one run measured.
pub struct AlertFigures {
    /// Agents frozen.
    pub freezes: usize,
    /// The observer's threshold, ms.
    pub threshold_ms: u64,
    /// Direct delivery.
    pub direct: Latency,
    /// Prometheus rules.
    pub prometheus: Latency,
    /// The observer's `varta_alerts_sent_total` by outcome at the end.
    pub outcomes: Vec<(String, f64)>,
}

fn in_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// Runs the benchmark: `exe` is this binary (agents, and the observer unless
/// `--observer-exe`), the number of freezes `--samples` (default 24, `--quick` 5).
///
/// # Errors
/// A missing program or `deploy/` file, or a part of the stack that did not come up.
pub fn run(exe: &Path, a: &BenchArgs) -> Result<AlertFigures, String> {
    for bin in ["prometheus", "prometheus-alertmanager"] {
        if !in_path(bin) {
            return Err(format!(
                "bench alert: `{bin}` not found: install Debian's prometheus and prometheus-alertmanager"
            ));
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if !root.join("deploy/alertmanager/alertmanager.yml").is_file() {
        return Err(format!(
            "bench alert: {} has no deploy/ files (run it from the source tree's build)",
            root.display()
        ));
    }
    let progs = Programs {
        observer: match &a.observer_exe {
            Some(p) => (p.clone(), Vec::new()),
            None => (exe.to_path_buf(), vec!["observe".into()]),
        },
        varta: exe.to_path_buf(),
    };
    let freezes = a.samples.unwrap_or(if a.quick { 5 } else { 24 }).max(1);
    let threshold_ms = a.threshold_ms;
    // The stack's helpers panic with what went wrong (a process that did not start, a wait
    // that timed out): run them on a thread and report that as the error.
    std::thread::spawn(move || measure(&root, &progs, freezes, threshold_ms))
        .join()
        .map_err(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            format!("bench alert: {msg}")
        })
}

fn alertmanager(dir: &Path, root: &Path, tag: &str, hook: &Webhook) -> Alertmanager {
    let own: PathBuf = dir.join(tag);
    std::fs::create_dir_all(&own).unwrap_or_else(|e| panic!("{}: {e}", own.display()));
    let cfg = write_am_config(root, &own, hook);
    Alertmanager::start(&own, &cfg, None)
}

fn measure(root: &Path, progs: &Programs, freezes: usize, threshold_ms: u64) -> AlertFigures {
    let dir = tmpdir("bench-alert");
    let hook_direct = Webhook::start();
    let hook_prom = Webhook::start();
    let am_direct = alertmanager(&dir, root, "direct", &hook_direct);
    let am_prom = alertmanager(&dir, root, "prom", &hook_prom);
    let threshold = threshold_ms.to_string();
    let obs = Observer::start(
        progs,
        &dir,
        &[
            "--threshold-ms",
            &threshold,
            "--alertmanager-url",
            &am_direct.url,
        ],
        &[],
    );
    let prom = Prometheus::start(root, &dir, &[obs.prom], &[&am_prom]);
    prom.wait_targets_up(1);

    let agents: Vec<_> = (0..freezes).map(|_| obs.agent(BEAT_MS)).collect();
    let mut frozen_at: HashMap<String, Instant> = HashMap::new();
    let mut next = Instant::now();
    for agent in &agents {
        while Instant::now() < next {
            std::thread::sleep(Duration::from_millis(1));
        }
        agent.freeze();
        frozen_at.insert(agent.alert_name(), Instant::now());
        next += STEP;
    }
    let all_in = |h: &Webhook| {
        frozen_at
            .keys()
            .all(|a| !h.about(ALERT_STALLED, a).is_empty())
    };
    let last = Instant::now();
    while !(all_in(&hook_direct) && all_in(&hook_prom)) && last.elapsed() < GRACE {
        std::thread::sleep(Duration::from_millis(20));
    }
    let path = |h: &Webhook| {
        let mut ms = Vec::new();
        let mut missing = 0;
        for (agent, t) in &frozen_at {
            match h
                .about(ALERT_STALLED, agent)
                .iter()
                .map(|(at, _)| *at)
                .min()
            {
                Some(first) => ms.push(first.duration_since(*t).as_secs_f64() * 1e3),
                None => missing += 1,
            }
        }
        ms.sort_by(f64::total_cmp);
        Latency { ms, missing }
    };
    let figures = AlertFigures {
        freezes,
        threshold_ms,
        direct: path(&hook_direct),
        prometheus: path(&hook_prom),
        // The observer's outcome labels, as its delivery counts them.
        outcomes: DeliveryCounters::default()
            .outcomes()
            .iter()
            .map(|(o, _)| {
                let series = format!("varta_alerts_sent_total{{outcome=\"{o}\"}}");
                ((*o).to_string(), obs.metric(&series).unwrap_or(f64::NAN))
            })
            .collect(),
    };
    for agent in &agents {
        agent.thaw();
    }
    drop(agents);
    drop(obs);
    let _ = std::fs::remove_dir_all(&dir);
    figures
}
