//! Real agent processes (`varta agent`, sending through `varta-client`) against the observer:
//! crashes, goodbyes, the recovery program, and the Unix socket's uid check.
//!
//! The observer is `varta observe`, the `varta-watch` daemon linked into this binary, so these
//! tests need no other build; each starts its own observer on its own socket and metrics port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "../../watch/tests/common/observer.rs"]
mod observer;

use observer::{num, tmpdir, Observer, BIN};

/// The bound of a wait for a metric (the loop handles datagrams asynchronously).
const METRIC_WAIT: Duration = Duration::from_secs(5);

fn agent(obs: &Observer, args: &[&str]) -> Child {
    Command::new(BIN)
        .arg("agent")
        .arg("--socket")
        .arg(obs.socket())
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn real_agents_crash_goodbye_and_recovery_command() {
    let dir = tmpdir("agents");
    let mark = dir.join("recovered.txt");
    let cmd = format!(
        "/bin/sh -c 'echo {{pid}} >> {}; echo noise-{{pid}}'",
        mark.display()
    );
    let export = dir.join("events.tsv");
    let mut obs = Observer::start(
        &dir,
        &[
            "--threshold-ms",
            "400",
            "--recovery-cmd",
            &cmd,
            "--export-file",
            export.to_str().unwrap(),
            "--export-format",
            "varta",
        ],
    );
    let mut crasher = agent(&obs, &["--interval-ms", "20", "--crash-after", "3"]);
    let mut polite = agent(&obs, &["--interval-ms", "20", "--count", "3", "--goodbye"]);
    let (cpid, ppid) = (crasher.id(), polite.id());
    assert_eq!(crasher.wait().unwrap().code(), Some(101));
    assert!(polite.wait().unwrap().success());
    let (_, crash) = obs.wait_for_timed(
        &["\"kind\":\"crash\"", &format!("\"pid\":{cpid}")],
        Duration::from_secs(3),
    );
    let (_, bye) = obs.wait_for_timed(
        &["\"kind\":\"goodbye\"", &format!("\"pid\":{ppid}")],
        Duration::from_secs(3),
    );
    // The agent's crash payload (0xDEAD, `varta agent --crash-after`) and the goodbye payload, as numbers.
    assert_eq!(num(&crash, "payload"), Some(0xDEAD), "{crash}");
    assert_eq!(
        num(&bye, "payload"),
        Some(u64::from(vlp_core::GOODBYE_PAYLOAD)),
        "{bye}"
    );
    obs.wait_for_timed(
        &["\"kind\":\"recovery\"", "exited 0 (reaped_zero)"],
        Duration::from_secs(5),
    );
    assert_eq!(
        std::fs::read_to_string(&mark).unwrap().trim(),
        cpid.to_string()
    );
    obs.wait_metric(
        "varta_recovery_outcomes_total{outcome=\"reaped_zero\"}",
        1.0,
        METRIC_WAIT,
    );
    // Neither a crash nor a clean exit is followed by a stall.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(obs.count(&["\"kind\":\"stall\""]), 0);
    // What the recovery program prints never mixes with the event stream on stdout.
    assert_eq!(obs.count(&["noise-"]), 0);
    let beats = format!("varta_beats_total{{pid=\"{cpid}\",listener=\"unix\"}}");
    // Terminal frames are events, not beats.
    assert_eq!(
        obs.metric(&beats),
        3.0,
        "3 beats; the terminal frame is not a beat"
    );
    let polite_beats = format!("varta_beats_total{{pid=\"{ppid}\",listener=\"unix\"}}");
    assert_eq!(
        obs.metric(&polite_beats),
        3.0,
        "3 beats; the goodbye is not a beat"
    );
    assert_eq!(obs.metric("varta_events_total{kind=\"crash\"}"), 1.0);
    assert_eq!(obs.metric("varta_events_total{kind=\"goodbye\"}"), 1.0);
    assert_eq!(
        obs.metric("varta_frames_accepted_total"),
        3.0 + 1.0 + 3.0 + 1.0
    );
    assert!(obs.terminate().success());
    let tsv = std::fs::read_to_string(&export).unwrap();
    let crash_row = tsv
        .lines()
        .find(|l| l.split('\t').nth(1) == Some("crash"))
        .expect("crash row");
    let cols: Vec<&str> = crash_row.split('\t').collect();
    assert_eq!(cols.len(), 6);
    assert_eq!(cols[2], cpid.to_string());
    assert_eq!(cols[4], "critical");
}

#[test]
fn other_uid_refused_unless_allowed() {
    use std::os::unix::process::CommandExt;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run an agent as another uid");
        return;
    }
    let nobody = 65534;
    for allow in [false, true] {
        let dir = tmpdir(if allow { "uid-allowed" } else { "uid-refused" });
        // The directory must be reachable by the other uid.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut args = vec!["--socket-mode", "0666"];
        if allow {
            args.extend(["--allow-uid", "65534"]);
        }
        let obs = Observer::start(&dir, &args);
        let status = Command::new(BIN)
            .args(["agent", "--socket"])
            .arg(obs.socket())
            .args(["--interval-ms", "10", "--count", "2"])
            .uid(nobody)
            .gid(nobody)
            .status()
            .unwrap();
        assert!(status.success());
        if allow {
            obs.wait_metric("varta_frames_accepted_total", 2.0, METRIC_WAIT);
        } else {
            obs.wait_metric(
                "varta_rejections_total{reason=\"uid_refused\"}",
                2.0,
                METRIC_WAIT,
            );
            assert_eq!(obs.metric("varta_frames_accepted_total"), 0.0);
        }
    }
}
