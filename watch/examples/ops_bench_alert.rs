//! Freeze → notification latency of the two alert paths, in one run (run by
//! `scripts/ops-bench-alert.sh`; prints figures, asserts nothing).
//!
//! One real observer (`varta-watch`, `--threshold-ms T`), real agents beating every 20 ms, each
//! frozen once with SIGSTOP, staggered; two real Alertmanagers (routing from
//! `deploy/alertmanager/alertmanager.yml`, `group_wait: 0s`), each notifying its own webhook
//! receiver in this process:
//!
//! * **direct**: the observer's alert posted to Alertmanager the moment it reports the stall.
//!   Until `--alertmanager-url` is wired into the daemon, this process relays the observer's
//!   stall event line into the alerting module (`AlertBook` → `Delivery`), which is what the
//!   daemon will run right after writing that line; with `--daemon-direct` the daemon posts
//!   itself.
//! * **prometheus**: a real Prometheus scraping the observer every second, evaluating
//!   `deploy/prometheus/varta.rules.yml` every second, alerting the other Alertmanager.
//!
//! Usage: `ops_bench_alert [--freezes N] [--threshold-ms T] [--daemon-direct]`.

#[path = "../tests/ops_support/mod.rs"]
mod ops_support;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use varta_watch::alerting::{AgentFacts, AlertingConfig, Delivery, Now, ALERT_STALLED};
use varta_watch::tracker::{AgentId, Event};

use ops_support::{tmpdir, write_am_config, Alertmanager, Daemon, Prometheus, Webhook};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn summary(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        println!("{label:<12} no notifications");
        return;
    }
    let at = |q: f64| {
        // Nearest rank.
        let rank = (q * ms.len() as f64).ceil().max(1.0) as usize;
        ms[rank.min(ms.len()) - 1]
    };
    println!(
        "{label:<12} n={:<3} min {:>8.1} ms   median {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms",
        ms.len(),
        ms[0],
        at(0.5),
        at(0.99),
        ms[ms.len() - 1]
    );
}

fn main() {
    let freezes: usize = arg("--freezes").map_or(24, |v| v.parse().expect("--freezes N"));
    let threshold_ms: u32 =
        arg("--threshold-ms").map_or(200, |v| v.parse().expect("--threshold-ms T"));
    let daemon_direct = std::env::args().any(|a| a == "--daemon-direct");

    let dir = tmpdir("bench-alert");
    let hook_direct = Webhook::start();
    let hook_prom = Webhook::start();
    let am_direct = Alertmanager::start(
        &dir.join("direct"),
        &{
            std::fs::create_dir_all(dir.join("direct")).unwrap();
            write_am_config(&dir.join("direct"), &hook_direct)
        },
        None,
    );
    let am_prom = Alertmanager::start(
        &dir.join("prom"),
        &{
            std::fs::create_dir_all(dir.join("prom")).unwrap();
            write_am_config(&dir.join("prom"), &hook_prom)
        },
        None,
    );
    let threshold = threshold_ms.to_string();
    let mut args = vec!["--threshold-ms", threshold.as_str()];
    if daemon_direct {
        args.extend(["--alertmanager-url", am_direct.url.as_str()]);
    }
    let obs = Daemon::start(&dir, &args);
    let prom = Prometheus::start(&dir, &[obs.prom], &[&am_prom]);
    prom.wait_targets_up(1);

    // The relay (until the daemon posts itself).
    let cfg = AlertingConfig::new(&[am_direct.url.as_str()], "bench").unwrap();
    let mut book = cfg.book();
    let delivery = Delivery::start(cfg).unwrap();
    let t0 = Instant::now();

    let agents: Vec<_> = (0..freezes).map(|_| obs.agent(20)).collect();
    let mut frozen_at: HashMap<String, Instant> = HashMap::new();
    // Stagger the freezes by a step that is not a divisor of the scrape interval, so they fall
    // at every phase of it.
    let step = Duration::from_millis(370);
    let mut next = Instant::now();
    let mut i = 0;
    let deadline_after_last = Duration::from_secs(8);
    let mut last_freeze = Instant::now();
    loop {
        if i < agents.len() && Instant::now() >= next {
            agents[i].freeze();
            frozen_at.insert(agents[i].alert_name(), Instant::now());
            last_freeze = Instant::now();
            i += 1;
            next += step;
        }
        // Relay stall lines to the alerting module.
        while let Ok((_, line)) = obs.lines.try_recv() {
            if daemon_direct || !line.contains("\"kind\":\"stall\"") {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let (Some(pid), Some(at), Some(last)) = (
                v["pid"].as_u64(),
                v["at_ns"].as_u64(),
                v["last_beat_ns"].as_u64(),
            ) else {
                continue;
            };
            let agent = AgentId::unix(u32::try_from(pid).unwrap());
            let now = Now {
                mono: u64::try_from(t0.elapsed().as_nanos()).unwrap(),
                wall: SystemTime::now(),
            };
            let ev = Event::Stalled {
                at: now.mono,
                agent,
                last_beat: now.mono.saturating_sub(at.saturating_sub(last)),
                nonce: v["nonce"].as_u64().unwrap_or(0),
            };
            book.handle_event(now, &ev, &AgentFacts::default());
            while let Some(b) = book.poll_batch() {
                let _ = delivery.try_send(b);
            }
        }
        let done = |h: &Webhook| {
            frozen_at
                .keys()
                .all(|a| !h.about(ALERT_STALLED, a).is_empty())
        };
        if i == agents.len()
            && ((done(&hook_direct) && done(&hook_prom))
                || last_freeze.elapsed() > deadline_after_last)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }

    let latencies = |h: &Webhook| -> Vec<f64> {
        frozen_at
            .iter()
            .filter_map(|(a, t)| {
                let first = h
                    .about(ALERT_STALLED, a)
                    .into_iter()
                    .map(|(at, _)| at)
                    .min()?;
                Some(first.duration_since(*t).as_secs_f64() * 1e3)
            })
            .collect()
    };
    println!(
        "freeze -> webhook notification, {freezes} freezes, --threshold-ms {threshold_ms}, group_wait 0s; Prometheus scrape and evaluation every 1 s"
    );
    summary(
        if daemon_direct { "direct" } else { "direct*" },
        latencies(&hook_direct),
    );
    summary("prometheus", latencies(&hook_prom));
    if !daemon_direct {
        println!(
            "* the observer's stall event line relayed into the alerting module by this process"
        );
    }
    println!(
        "direct-path goal: threshold + group_wait + 50 ms = {} ms",
        threshold_ms + 50
    );
    let c = delivery.counters();
    println!("relay delivery outcomes: {:?}", c.outcomes());
    for a in &agents {
        a.thaw();
    }
}
