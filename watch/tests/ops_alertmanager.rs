//! Direct Alertmanager delivery against a real Alertmanager (Debian's
//! `prometheus-alertmanager`) on loopback, with a webhook receiver inside the test, routed by
//! the shipped `deploy/alertmanager/alertmanager.yml` (its webhook URL pointed at the receiver,
//! its group interval shortened to 1 s).
//!
//! Some tests drive the alerting module directly (an [`AlertBook`] fed tracker events, a
//! [`Delivery`] posting its batches); the `daemon_*` ones run the real daemon
//! (`varta-watch --alertmanager-url`, see `ops_support::daemon`) with real agents frozen by
//! SIGSTOP: one observer and one Alertmanager, then a fleet of three observers and two
//! clustered Alertmanagers.

mod ops_support;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use ops_support::{free_port, tmpdir, wait, write_am_config, Alertmanager, Daemon, Webhook};
use varta_watch::alerting::{
    AgentFacts, AlertBook, AlertingConfig, Delivery, Now, ALERT_CRASHED, ALERT_STALLED,
};
use varta_watch::tracker::{AgentId, Event};

/// Observer time of the test: nanoseconds since `t0`.
fn now(t0: Instant) -> Now {
    Now {
        mono: u64::try_from(t0.elapsed().as_nanos()).unwrap(),
        wall: SystemTime::now(),
    }
}

/// One simulated observer: an alert book and its delivery thread.
struct Sender {
    book: AlertBook,
    delivery: Delivery,
}

impl Sender {
    fn new(observer: &str, ams: &[&Alertmanager]) -> Sender {
        let urls: Vec<&str> = ams.iter().map(|a| a.url.as_str()).collect();
        let cfg = AlertingConfig::new(&urls, observer).unwrap();
        Sender {
            book: cfg.book(),
            delivery: Delivery::start(cfg).unwrap(),
        }
    }

    fn handle(&mut self, t: Now, e: &Event) {
        self.book.handle_event(t, e, &AgentFacts::default());
        while let Some(batch) = self.book.poll_batch() {
            self.delivery.try_send(batch).unwrap();
        }
    }

    fn wait_sent(&self, n: u64) {
        let c = self.delivery.counters();
        wait(Duration::from_secs(10), "posts accepted", || {
            (c.sent.load(Ordering::Relaxed) >= n).then_some(())
        });
    }
}

fn unix(pid: u32) -> AgentId {
    AgentId::unix(pid)
}

fn stalled(t: Now, agent: AgentId) -> Event {
    Event::Stalled {
        at: t.mono,
        agent,
        last_beat: t.mono.saturating_sub(1_000_000_000),
        nonce: 1,
    }
}

#[test]
fn direct_path_firing_then_resolved_naming_the_agent() {
    let dir = tmpdir("direct");
    let hook = Webhook::start();
    let cfg = write_am_config(&dir, &hook);
    let am = Alertmanager::start(&dir, &cfg, None);
    let t0 = Instant::now();
    let mut s = Sender::new("host-a", &[&am]);
    let agent = unix(4242);

    s.handle(now(t0), &stalled(now(t0), agent));
    let firing = hook.wait_for(
        ALERT_STALLED,
        "unix:4242",
        "firing",
        Duration::from_secs(10),
    );
    let alert = &firing["alerts"][0];
    assert_eq!(alert["labels"]["pid"], "4242");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["annotations"]["observer"], "host-a");
    assert_eq!(alert["annotations"]["listener"], "unix");
    assert_eq!(firing["groupLabels"]["agent"], "unix:4242");
    assert!(hook
        .about(ALERT_STALLED, "unix:4242")
        .iter()
        .all(|(_, n)| n["status"] == "firing"));

    let back = Event::Recovered {
        at: now(t0).mono,
        agent,
        silent_for: 2_000_000_000,
    };
    s.handle(now(t0), &back);
    let resolved = hook.wait_for(
        ALERT_STALLED,
        "unix:4242",
        "resolved",
        Duration::from_secs(10),
    );
    assert_eq!(
        resolved["alerts"][0]["annotations"]["resolved_by"],
        "recovered"
    );
    s.wait_sent(2);
    let c = s.delivery.counters();
    assert_eq!(c.failed.load(Ordering::Relaxed), 0);
    assert_eq!(c.dropped.load(Ordering::Relaxed), 0);
}

/// A webhook receiver and two Alertmanagers clustered with each other, both notifying it.
fn clustered_pair(dir: &std::path::Path) -> (Webhook, Alertmanager, Alertmanager) {
    let hook = Webhook::start();
    let cfg = write_am_config(dir, &hook);
    let (g1, g2) = (free_port(), free_port());
    let am1 = Alertmanager::start(dir, &cfg, Some((g1, &[g2])));
    let am2 = Alertmanager::start(dir, &cfg, Some((g2, &[g1])));
    am1.wait_cluster(2);
    am2.wait_cluster(2);
    (hook, am1, am2)
}

#[test]
fn three_observers_two_clustered_alertmanagers_one_notification() {
    let dir = tmpdir("ha");
    let (hook, am1, am2) = clustered_pair(&dir);

    let t0 = Instant::now();
    let mut senders: Vec<Sender> = ["host-a", "host-b", "host-c"]
        .iter()
        .map(|o| Sender::new(o, &[&am1, &am2]))
        .collect();
    let agent = unix(777);
    for s in &mut senders {
        s.handle(now(t0), &stalled(now(t0), agent));
    }
    for s in &senders {
        s.wait_sent(2);
    }
    hook.wait_for(ALERT_STALLED, "unix:777", "firing", Duration::from_secs(10));
    // Both instances have the group; the second one would notify after its peer timeout (1 s)
    // if the first one's notification log entry had not reached it. Give it several times that.
    std::thread::sleep(Duration::from_secs(5));
    let notes = hook.about(ALERT_STALLED, "unix:777");
    assert_eq!(notes.len(), 1, "expected one notification, got {notes:#?}");
    // One alert in it, whichever observer's copy won.
    assert_eq!(notes[0].1["alerts"].as_array().unwrap().len(), 1);
}

#[test]
fn unreachable_alertmanager_is_retried_counted_and_never_blocks_the_caller() {
    // A port nobody listens on.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut cfg = AlertingConfig::new(&[dead.as_str()], "host-a").unwrap();
    cfg.queue_capacity = 2;
    cfg.max_attempts = 3;
    cfg.backoff_initial = Duration::from_millis(200);
    let d = Delivery::start(cfg.clone()).unwrap();
    let mut book = cfg.book();
    let t0 = Instant::now();
    for pid in 1..=50 {
        book.handle_event(
            now(t0),
            &stalled(now(t0), unix(pid)),
            &AgentFacts::default(),
        );
        let batch = book.poll_batch().unwrap();
        let _ = d.try_send(batch);
    }
    let c = d.counters();
    // 50 batches into a queue of 2 behind a thread busy retrying: most were dropped, at once.
    assert!(
        c.dropped.load(Ordering::Relaxed) >= 40,
        "{:?}",
        c.outcomes()
    );
    wait(
        Duration::from_secs(20),
        "a failed post after its retries",
        || (c.failed.load(Ordering::Relaxed) >= 1).then_some(()),
    );
    assert!(c.retried.load(Ordering::Relaxed) >= 2, "{:?}", c.outcomes());
    assert_eq!(c.sent.load(Ordering::Relaxed), 0);
}

#[test]
fn daemon_direct_path_frozen_agent_firing_then_resolved() {
    let dir = tmpdir("daemon");
    let hook = Webhook::start();
    let cfg = write_am_config(&dir, &hook);
    let am = Alertmanager::start(&dir, &cfg, None);
    let obs = ops_support::daemon(
        &dir,
        &[
            "--threshold-ms",
            "300",
            "--alertmanager-url",
            &am.url,
            "--alert-resend-ms",
            "300",
        ],
    );
    let agent = obs.agent(50);
    let healthy = obs.agent(50);
    agent.freeze();
    let name = agent.alert_name();
    let firing = hook.wait_for(ALERT_STALLED, &name, "firing", Duration::from_secs(10));
    let alerts = firing["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{firing:#}");
    assert_eq!(alerts[0]["labels"]["pid"], agent.pid().to_string());
    assert_eq!(alerts[0]["labels"]["severity"], "critical");
    assert_eq!(alerts[0]["annotations"]["listener"], "unix");
    assert_eq!(alerts[0]["annotations"]["last_status"], "ok");
    assert_eq!(firing["groupLabels"]["agent"], name.as_str());
    // While it stays frozen, the alert is re-sent (every 300 ms here): firing, then re-sends.
    wait(
        Duration::from_secs(10),
        "re-sends of the firing alert",
        || (obs.metric("varta_alerts_sent_total{outcome=\"sent\"}")? >= 3.0).then_some(()),
    );
    assert_eq!(obs.metric("varta_alerts_active"), Some(1.0));
    agent.thaw();
    let resolved = hook.wait_for(ALERT_STALLED, &name, "resolved", Duration::from_secs(10));
    assert_eq!(
        resolved["alerts"][0]["annotations"]["resolved_by"],
        "recovered"
    );
    // The healthy agent (an agent of its own name) never had an alert.
    assert_ne!(healthy.alert_name(), name);
    assert!(hook.about(ALERT_STALLED, &healthy.alert_name()).is_empty());
    assert_eq!(obs.metric("varta_alerts_active"), Some(0.0));

    // A crash report is an alert of its own, firing at once.
    let crashing = obs.agent_with(50, &["--crash-after", "5"]);
    let crashed = hook.wait_for(
        ALERT_CRASHED,
        &crashing.alert_name(),
        "firing",
        Duration::from_secs(10),
    );
    assert_eq!(
        crashed["alerts"][0]["labels"]["pid"],
        crashing.pid().to_string()
    );
    assert_eq!(obs.metric("varta_alerts_active"), Some(1.0));
    // Nothing failed or was dropped on the way.
    for outcome in ["failed", "dropped"] {
        let series = format!("varta_alerts_sent_total{{outcome=\"{outcome}\"}}");
        assert_eq!(obs.metric(&series), Some(0.0), "{series}");
    }
}

/// An "Alertmanager" that accepts connections and never answers.
fn black_hole() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    url
}

#[test]
fn daemon_shutdown_is_not_held_by_an_alertmanager_that_never_answers() {
    let dir = tmpdir("black-hole");
    let hole = black_hole();
    let mut obs = ops_support::daemon(
        &dir,
        &["--threshold-ms", "300", "--alertmanager-url", &hole],
    );
    // Three stalls, each its own batch; each post waits for its 2 s timeout, four attempts.
    let agents: Vec<_> = (0..3).map(|_| obs.agent(50)).collect();
    for a in &agents {
        a.freeze();
        let pid = format!("\"pid\":{}", a.pid());
        obs.wait_line(&["\"kind\":\"stall\"", &pid], Duration::from_secs(10));
    }
    // Detection went on regardless; the posts are being retried.
    wait(Duration::from_secs(15), "a retried post", || {
        (obs.metric("varta_alerts_sent_total{outcome=\"retried\"}")? >= 1.0).then_some(())
    });
    assert_eq!(
        obs.metric("varta_alerts_sent_total{outcome=\"sent\"}"),
        Some(0.0)
    );
    // Posting what is queued would take tens of seconds: the exit must come well within a
    // service manager's stop timeout (10 s in the shipped unit).
    let status = obs.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

/// Forwards every datagram reaching the returned address to each of `to`: one agent process
/// reporting to several observers, as an agent configured with redundant observers does.
fn fan_out(to: Vec<SocketAddr>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok(n) = sock.recv(&mut buf) {
            for t in &to {
                let _ = sock.send_to(&buf[..n], t);
            }
        }
    });
    at
}

#[test]
fn daemon_fleet_three_observers_two_clustered_alertmanagers_one_notification() {
    let dir = tmpdir("fleet");
    let (hook, am1, am2) = clustered_pair(&dir);

    let key = dir.join("shared.key");
    std::fs::write(&key, "5a".repeat(32)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key_arg = key.display().to_string();
    let observers: Vec<Daemon> = ["a", "b", "c"]
        .iter()
        .map(|host| {
            let own = dir.join(host);
            std::fs::create_dir_all(&own).unwrap();
            ops_support::daemon(
                &own,
                &[
                    "--threshold-ms",
                    "300",
                    "--udp-port",
                    "0",
                    "--key-file",
                    &key_arg,
                    "--alertmanager-url",
                    &am1.url,
                    "--alertmanager-url",
                    &am2.url,
                ],
            )
        })
        .collect();
    let relay = fan_out(observers.iter().map(|o| o.udp.unwrap()).collect());
    let agent = observers[0].udp_agent(relay, &key, 50);
    let pid = format!("\"pid\":{}", agent.pid());
    for o in &observers {
        o.wait_line(&[&pid], Duration::from_secs(10));
    }
    agent.freeze();
    let name = agent.alert_name();
    for o in &observers {
        o.wait_line(&["\"kind\":\"stall\"", &pid], Duration::from_secs(10));
    }
    hook.wait_for(ALERT_STALLED, &name, "firing", Duration::from_secs(10));
    // Every observer posted its copy to both Alertmanagers.
    for o in &observers {
        wait(Duration::from_secs(10), "each observer's two posts", || {
            (o.metric("varta_alerts_sent_total{outcome=\"sent\"}")? >= 2.0).then_some(())
        });
    }
    // The second instance would notify after its peer timeout (1 s) had the first one's
    // notification log entry not reached it: give it several times that.
    std::thread::sleep(Duration::from_secs(5));
    let notes = hook.about(ALERT_STALLED, &name);
    assert_eq!(notes.len(), 1, "expected one notification, got {notes:#?}");
    let alerts = notes[0].1["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{notes:#?}");
    assert_eq!(alerts[0]["labels"]["pid"], agent.pid().to_string());
    assert_eq!(alerts[0]["annotations"]["listener"], "udp0");

    agent.thaw();
    hook.wait_for(ALERT_STALLED, &name, "resolved", Duration::from_secs(10));
}
