//! Drop-in for `varta-watch` 0.2: a scrape of the real daemon shows every metric name its
//! alert rules and dashboard read, with its type, labels and label values, from the first
//! scrape; and its alert rules (`deploy/prometheus/upstream.rules.yml`) evaluate over series
//! scraped from the real daemon with `promtool test rules`, firing when they should.

mod compat_support;

use std::fmt::Write as _;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use compat_support::{sample, tmpdir, wait_until, write_file, Observer};
use vlp_core::{Frame, Status};

const TOKEN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// Operator-facing names of the original observer: name, type, label, label values that
/// must be present from the first scrape (empty: any, once an agent exists).
const NAMES: &[(&str, &str, &str, &[&str])] = &[
    ("varta_beats_total", "counter", "pid", &[]),
    ("varta_stalls_total", "counter", "pid", &[]),
    ("varta_status", "gauge", "pid", &[]),
    (
        "varta_rate_limited_total",
        "counter",
        "reason",
        &["per_pid", "global"],
    ),
    ("varta_decode_errors_total", "counter", "kind", &[]),
    ("varta_frame_auth_failures_total", "counter", "", &[]),
    ("varta_frame_decrypt_failures_total", "counter", "", &[]),
    ("varta_io_errors_total", "counter", "", &[]),
    ("varta_truncated_datagrams_total", "counter", "", &[]),
    ("varta_ctrl_truncated_total", "counter", "", &[]),
    ("varta_tracker_capacity", "gauge", "", &[]),
    ("varta_tracker_capacity_exceeded_total", "counter", "", &[]),
    ("varta_tracker_evicted_total", "counter", "", &[]),
    (
        "varta_recovery_outcomes_total",
        "counter",
        "outcome",
        &[
            "spawned",
            "debounced",
            "reaped_zero",
            "reaped_nonzero",
            "killed",
            "spawn_failed",
        ],
    ),
    (
        "varta_recovery_refused_total",
        "counter",
        "reason",
        &[
            "unauthenticated_transport",
            "cross_namespace_agent",
            "debounce_capacity",
            "outstanding_capacity",
            "socket_mode_only",
        ],
    ),
    ("varta_recovery_duration_ns_sum", "gauge", "", &[]),
    ("varta_recovery_duration_count_total", "counter", "", &[]),
    ("varta_recovery_audit_dropped_total", "counter", "", &[]),
    ("varta_origin_conflict_total", "counter", "", &[]),
    ("varta_prom_auth_failures_total", "counter", "", &[]),
    (
        "varta_prom_connections_dropped_total",
        "counter",
        "reason",
        &["capacity"],
    ),
    ("varta_observer_iteration_seconds", "histogram", "", &[]),
    ("varta_observer_uds_rcvbuf_bytes", "gauge", "", &[]),
    ("varta_watch_uptime_seconds", "gauge", "", &[]),
    (
        "varta_watch_last_poll_loop_timestamp_seconds",
        "gauge",
        "",
        &[],
    ),
    ("varta_watch_pids_tracked", "gauge", "", &[]),
];

fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn beat(pid: u32) -> [u8; 32] {
    Frame::new(Status::Ok, pid, mono_ns(), 1, 0).unwrap().emit()
}

/// The metric family of a sample name (what `# TYPE` names: counters without `_total`,
/// histograms without their suffixes).
fn family(name: &str, kind: &str) -> String {
    match kind {
        "counter" => name.trim_end_matches("_total").to_string(),
        _ => name.to_string(),
    }
}

fn has_series(body: &str, name: &str, label: &str, value: Option<&str>) -> bool {
    body.lines().filter(|l| !l.starts_with('#')).any(|l| {
        let Some(rest) = l.strip_prefix(name) else {
            return false;
        };
        let sample_name_ends = rest.starts_with(' ') || rest.starts_with('{');
        let suffixed = rest.starts_with("_bucket") || rest.starts_with("_count");
        (sample_name_ends || suffixed)
            && (label.is_empty()
                || match value {
                    Some(v) => rest.contains(&format!("{label}=\"{v}\"")),
                    None => rest.contains(&format!("{label}=\"")),
                })
    })
}

#[test]
fn every_operator_facing_name_with_its_type_and_labels_from_the_first_scrape() {
    let dir = tmpdir("names");
    let sock = dir.join("s.sock");
    let obs = Observer::start(&[
        "--socket".into(),
        sock.display().to_string(),
        "--prom-addr".into(),
        "127.0.0.1:0".into(),
    ]);
    let (code, first) = obs.get("/metrics", None);
    assert_eq!(code, 200);
    for (name, kind, label, values) in NAMES {
        let fam = family(name, kind);
        assert!(
            first.contains(&format!("# TYPE {fam} {kind}\n")),
            "{name}: no `# TYPE {fam} {kind}`\n{first}"
        );
        for v in *values {
            assert!(
                has_series(&first, name, label, Some(v)),
                "{name}{{{label}=\"{v}\"}} missing from the first scrape\n{first}"
            );
        }
        if *label != "pid" && !(*label == "kind" && values.is_empty()) {
            assert!(
                has_series(&first, name, label, None),
                "{name} missing from the first scrape\n{first}"
            );
        }
    }
    // One name per meaning: ours that duplicated the original's are gone.
    for old in [
        "varta_uptime_seconds",
        "varta_agents_tracked",
        "varta_receive_errors",
    ] {
        assert!(
            !first.contains(&format!("{old} ")) && !first.contains(&format!("# TYPE {old} ")),
            "{old} is still exposed"
        );
    }
    // Per-pid series keep `pid` once an agent beats; a malformed datagram gives a kind.
    let c = UnixDatagram::unbound().unwrap();
    c.send_to(&beat(std::process::id()), &sock).unwrap();
    c.send_to(&[0xAB; 32], &sock).unwrap();
    let pid = std::process::id().to_string();
    let body = obs.wait_scrape(None, "the beat and the garbage handled", |b| {
        has_series(b, "varta_beats_total", "pid", Some(&pid))
            && sample(b, "varta_frames_accepted_total") == Some(1.0)
            && b.lines()
                .any(|l| l.starts_with("varta_decode_errors_total{kind=") && !l.ends_with(" 0"))
    });
    for name in ["varta_beats_total", "varta_stalls_total", "varta_status"] {
        assert!(
            has_series(&body, name, "pid", Some(&pid)),
            "{name}{{pid=\"{pid}\"}}\n{body}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every sample of a scrape, `series -> value`.
fn samples(response: &str) -> Vec<(String, String)> {
    let body = response.split_once("\r\n\r\n").map_or(response, |(_, b)| b);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.to_string()))
        })
        .collect()
}

/// A `promtool test rules` file over `scrapes` (one per 15 s), with `alerts` as its
/// `alert_rule_test` entries.
fn promtool_test(rules: &Path, scrapes: &[String], alerts: &str) -> String {
    let mut series: Vec<(String, Vec<String>)> = Vec::new();
    for (i, body) in scrapes.iter().enumerate() {
        for (name, value) in samples(body) {
            let at = match series.iter().position(|(n, _)| *n == name) {
                Some(at) => at,
                None => {
                    series.push((name, vec!["_".to_string(); i]));
                    series.len() - 1
                }
            };
            series[at].1.push(value);
        }
        for s in &mut series {
            s.1.resize(i + 1, "_".to_string());
        }
    }
    let mut out = format!(
        "rule_files:\n  - {}\nevaluation_interval: 15s\ntests:\n  - interval: 15s\n    input_series:\n",
        rules.display()
    );
    for (name, values) in &series {
        let name = if name.contains('{') {
            name.replacen('{', "{job=\"varta-watch\",", 1)
        } else {
            format!("{name}{{job=\"varta-watch\"}}")
        };
        let _ = writeln!(
            out,
            "      - series: '{name}'\n        values: '{}'",
            values.join(" ")
        );
    }
    out.push_str("    alert_rule_test:\n");
    out.push_str(alerts);
    out
}

fn alert(at: u32, name: &str, labels: &[(&str, &str)]) -> String {
    let mut s = format!("      - eval_time: {at}s\n        alertname: {name}\n        exp_alerts:");
    if labels.is_empty() {
        s.push_str(" []\n");
        return s;
    }
    s.push_str("\n          - exp_labels:\n");
    for (k, v) in labels {
        let _ = writeln!(s, "              {k}: \"{v}\"");
    }
    let _ = writeln!(
        s,
        "            exp_annotations:\n              summary: \"{}\"",
        summary(name, "")
    );
    s
}

/// The summary annotation of each rule of `upstream.rules.yml`, with `{{ $labels.x }}`
/// filled in (`instance` is empty in these series; `label` is the grouping label's value).
fn summary(name: &str, label: &str) -> String {
    match name {
        "VartaObserverWedged" => "varta-watch on  is not turning its loop".to_string(),
        "VartaTrackerCapacityExceeded" => {
            "varta-watch refused new agents: the tracker is full (varta_tracker_capacity)"
                .to_string()
        }
        "VartaDecodeAnomalies" => format!("varta-watch refused malformed frames ({label})"),
        "VartaFrameAuthFailures" => {
            "varta-watch received frames failing authentication (spoofed pid or wrong key)"
                .to_string()
        }
        "VartaScrapeAuthFailures" => {
            "requests to varta-watch's metrics endpoint without the right bearer token".to_string()
        }
        other => panic!("no summary for {other}"),
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_original_alert_rules_fire_over_series_scraped_from_ours() {
    let dir = tmpdir("rules");
    let sock = dir.join("s.sock");
    let token = write_file(&dir, "token", TOKEN, 0o600);
    let block = dir.join("hold-the-loop");
    let obs = Observer::start_env(
        &[
            "--socket".into(),
            sock.display().to_string(),
            "--prom-addr".into(),
            "127.0.0.1:0".into(),
            "--prom-token-file".into(),
            token.display().to_string(),
            "--tracker-capacity".into(),
            "2".into(),
            "--udp-port".into(),
            "0".into(),
            "--allow-plaintext-udp".into(),
        ],
        &[("VARTA_TEST_BLOCK_FILE", &block)],
    );
    let scrape = || {
        std::thread::sleep(Duration::from_millis(100));
        let (code, body) = obs.get("/metrics", Some(TOKEN));
        assert_eq!(code, 200, "{body}");
        body
    };
    let mut scrapes = Vec::new();
    // 0 s .. 45 s: healthy and quiet.
    for _ in 0..4 {
        scrapes.push(scrape());
    }
    // Then: a third unproven agent at a full table, a malformed datagram, a spoofed pid on
    // the Unix socket, a scrape without the token.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for pid in 2001..=2003 {
        udp.send_to(&beat(pid), obs.udp.expect("udp address"))
            .unwrap();
    }
    let c = UnixDatagram::unbound().unwrap();
    c.send_to(&[0xAB; 32], &sock).unwrap();
    c.send_to(&beat(4242), &sock).unwrap();
    assert_eq!(obs.get("/metrics", None).0, 401);
    wait_until("the anomalies counted", || {
        let b = obs.get("/metrics", Some(TOKEN)).1;
        (sample(&b, "varta_tracker_capacity_exceeded_total") == Some(1.0)
            && sample(&b, "varta_frame_auth_failures_total") == Some(1.0))
        .then_some(())
    });
    // 60 s .. 105 s: after the anomalies.
    for _ in 0..4 {
        scrapes.push(scrape());
    }
    // 120 s .. 210 s: the loop held (as a wedged loop is); scrapes are answered from its last
    // snapshot. A datagram wakes it so that it reaches the hold.
    std::fs::write(&block, b"").unwrap();
    c.send_to(&beat(std::process::id()), &sock).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..7 {
        scrapes.push(scrape());
    }
    std::fs::remove_file(&block).unwrap();
    let last = &scrapes[scrapes.len() - 1];
    assert_eq!(
        sample(&scrapes[scrapes.len() - 2], "varta_watch_uptime_seconds"),
        sample(last, "varta_watch_uptime_seconds"),
        "a held loop's uptime does not advance"
    );
    let kinds: Vec<String> = samples(last)
        .into_iter()
        .filter(|(s, v)| s.starts_with("varta_decode_errors_total{kind=") && v != "0")
        .map(|(s, _)| s.split('"').nth(1).unwrap().to_string())
        .collect();
    assert!(
        !kinds.is_empty(),
        "the malformed datagram has a kind\n{last}"
    );

    let job = ("job", "varta-watch");
    let mut alerts = String::new();
    // Quiet and healthy at 45 s: nothing fires.
    for name in [
        "VartaObserverWedged",
        "VartaTrackerCapacityExceeded",
        "VartaBeatsRateLimited",
        "VartaDecodeAnomalies",
        "VartaFrameAuthFailures",
        "VartaScrapeAuthFailures",
    ] {
        alerts.push_str(&alert(45, name, &[]));
    }
    // After the anomalies (105 s), each rule fires with its labels.
    alerts.push_str(&alert(
        105,
        "VartaTrackerCapacityExceeded",
        &[job, ("severity", "warning")],
    ));
    alerts.push_str(&alert(
        105,
        "VartaFrameAuthFailures",
        &[job, ("severity", "critical")],
    ));
    alerts.push_str(&alert(
        105,
        "VartaScrapeAuthFailures",
        &[job, ("severity", "warning")],
    ));
    alerts.push_str(&format!(
        "      - eval_time: 105s\n        alertname: VartaDecodeAnomalies\n        exp_alerts:\n{}",
        kinds
            .iter()
            .map(|k| format!(
                "          - exp_labels:\n              kind: \"{k}\"\n              severity: \"warning\"\n            exp_annotations:\n              summary: \"{}\"\n",
                summary("VartaDecodeAnomalies", k)
            ))
            .collect::<String>()
    ));
    // No beat rate limit is configured: the per_pid and global series stay at zero.
    alerts.push_str(&alert(105, "VartaBeatsRateLimited", &[]));
    alerts.push_str(&alert(105, "VartaObserverWedged", &[]));
    // Held from 120 s: rate 0 over 30 s from 150 s, firing after `for: 30s`.
    alerts.push_str(&alert(
        195,
        "VartaObserverWedged",
        &[job, ("severity", "critical")],
    ));

    let rules = repo_root().join("deploy/prometheus/upstream.rules.yml");
    let test = dir.join("upstream.rules.test.yml");
    std::fs::write(&test, promtool_test(&rules, &scrapes, &alerts)).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&test)
        .output()
        .expect("promtool (Debian package `prometheus`) is needed");
    assert!(
        out.status.success(),
        "promtool test rules {}:\n{}{}",
        test.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
