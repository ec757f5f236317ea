//! The state file against the real daemon: saved at SIGTERM and restored, refused when unsafe,
//! set aside when damaged, carried across a reboot by its rule, and its audit anchor usable by
//! `audit verify`.

mod state_support;

use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
use state_support::{metric_in, start, tmpdir, Agents, BIN};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run_bin(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// SIGTERM writes the table; the next start restores it (same pids, no `new` events).
fn saved_state(dir: &Path, agents: &mut Agents, n: usize) -> Vec<u32> {
    let sock = dir.join("s.sock");
    let state = dir.join("state");
    let mut obs = start(&["--socket", s(&sock), "--state-file", s(&state)]);
    let pids: Vec<u32> = (0..n)
        .map(|_| agents.spawn(&sock, &["--interval-ms", "50"]))
        .collect();
    for p in &pids {
        obs.wait_for(
            &["\"kind\":\"new\"", &format!("\"pid\":{p},")],
            Duration::from_secs(10),
        );
    }
    let status = obs.terminate();
    let err = obs.stderr();
    assert!(status.success(), "{err}");
    assert!(
        err.contains(&format!("state saved to {} ({n} agents", state.display())),
        "{err}"
    );
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the state file is private");
    pids
}

#[test]
fn sigterm_saves_the_table_and_the_next_start_restores_it() {
    let dir = tmpdir("roundtrip");
    let mut agents = Agents(Vec::new());
    let pids = saved_state(&dir, &mut agents, 3);
    let sock = dir.join("s.sock");
    let state = dir.join("state");
    let obs = start(&["--socket", s(&sock), "--state-file", s(&state)]);
    obs.wait_stderr(
        &[&format!(
            "state restored from {}: 3 agents",
            state.display()
        )],
        Duration::from_secs(5),
    );
    obs.wait_for(
        &["\"kind\":\"info\"", "state restored"],
        Duration::from_secs(5),
    );
    let body = obs.scrape();
    assert_eq!(metric_in(&body, "varta_watch_pids_tracked"), 3.0, "{body}");
    for p in &pids {
        assert!(
            body.contains(&format!("pid=\"{p}\"")),
            "pid {p} restored: {body}"
        );
    }
    // They go on beating: known, never `new` again.
    obs.wait_metric_at_least("varta_state_snapshots_total", 2.0, Duration::from_secs(10));
    for p in &pids {
        assert_eq!(
            obs.count(&["\"kind\":\"new\"", &format!("\"pid\":{p},")]),
            0
        );
    }
    assert_eq!(obs.metric("varta_state_restore_failures_total"), 0.0);
    assert!(obs.metric("varta_state_snapshot_bytes") > 0.0);
}

#[test]
fn an_unsafe_state_file_is_refused_in_one_line_with_exit_2() {
    let dir = tmpdir("unsafe");
    let mut agents = Agents(Vec::new());
    saved_state(&dir, &mut agents, 1);
    drop(agents);
    let state = dir.join("state");
    let sock = dir.join("s.sock");
    let run = |path: &Path| {
        run_bin(&[
            "run",
            "--socket",
            s(&sock),
            "--state-file",
            s(path),
            "--prom-addr",
            "127.0.0.1:0",
        ])
    };
    let check = |path: &Path, rule: &str| {
        let out = run(path);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{rule}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.contains("listening")).collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(
            lines[0].contains("--state-file") && lines[0].contains(rule),
            "{err}"
        );
    };

    let link = dir.join("link");
    symlink(&state, &link).unwrap();
    check(&link, "symbolic link");

    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o640)).unwrap();
    check(&state, "group/others");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Another owner (the tests run as root in CI; as another user chown is refused).
    if std::os::unix::fs::chown(&state, Some(65534), None).is_ok() {
        check(&state, "owned by uid 65534");
    }
    check(&dir.join("no-such-dir").join("state"), "directory");
    // Nothing was set aside: refusing is not repairing.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("corrupt")), "{names:?}");
}

#[test]
fn a_damaged_or_foreign_state_file_is_set_aside_and_the_observer_starts_empty() {
    let dir = tmpdir("damaged");
    let mut agents = Agents(Vec::new());
    saved_state(&dir, &mut agents, 2);
    drop(agents);
    let state = dir.join("state");
    let good = std::fs::read(&state).unwrap();
    let sock = dir.join("s.sock");
    let mut foreign = good.clone();
    foreign[8] = 7;
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("truncated", good[..good.len() - 10].to_vec(), "checksum"),
        ("flipped", flipped, "checksum"),
        ("foreign", foreign, "version 7"),
        ("garbage", b"hello, world".to_vec(), "truncated"),
    ];
    for (name, bytes, why) in cases {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.to_string_lossy().contains(".corrupt-") {
                std::fs::remove_file(p).unwrap();
            }
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&state)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
            .unwrap();
        let mut obs = start(&["--socket", s(&sock), "--state-file", s(&state)]);
        let line = obs.wait_stderr(&["not restored"], Duration::from_secs(5));
        assert!(line.contains(why), "{name}: {line}");
        assert!(line.contains("starting empty"), "{name}: {line}");
        obs.wait_for(
            &["\"kind\":\"info\"", "not restored"],
            Duration::from_secs(5),
        );
        let body = obs.scrape();
        assert_eq!(metric_in(&body, "varta_state_restore_failures_total"), 1.0);
        assert_eq!(metric_in(&body, "varta_watch_pids_tracked"), 0.0);
        let aside: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("state.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{name}: set aside once");
        assert_eq!(
            std::fs::read(&aside[0]).unwrap(),
            bytes,
            "{name}: kept as it was"
        );
        // The next snapshot replaces it with a good one.
        obs.wait_metric_at_least("varta_state_snapshots_total", 1.0, Duration::from_secs(10));
        let status = obs.terminate();
        let err = obs.stderr();
        assert!(status.success(), "{name}: {err}");
        assert_eq!(&std::fs::read(&state).unwrap()[..8], b"VARTAWST");
    }
}

/// Rewrites the clock section of a state file (boot id, boottime, wall clock) as another
/// boot's, with its checksum.
fn as_if_written_before_a_reboot(state: &Path, wall_back_ns: u64) {
    let mut b = std::fs::read(state).unwrap();
    // Header (12), section head (8), boot id (36), boottime (8), wall (8).
    assert_eq!(u16::from_le_bytes([b[12], b[13]]), 1, "clock section first");
    b[20..56].copy_from_slice(b"00000000-0000-4000-8000-000000000000");
    let wall = u64::from_le_bytes(b[64..72].try_into().unwrap());
    b[64..72].copy_from_slice(&(wall - wall_back_ns).to_le_bytes());
    let n = b.len() - 32;
    let sum = Sha256::digest(&b[..n]);
    b[n..].copy_from_slice(&sum);
    std::fs::write(state, b).unwrap();
}

#[test]
fn after_a_reboot_identities_are_kept_and_every_agent_counts_as_silent() {
    let dir = tmpdir("reboot");
    let mut agents = Agents(Vec::new());
    let pids = saved_state(&dir, &mut agents, 2);
    // Their processes are gone, as after a reboot.
    drop(agents);
    let state = dir.join("state");
    let sock = dir.join("s.sock");
    as_if_written_before_a_reboot(&state, 120_000_000_000);
    let obs = start(&[
        "--socket",
        s(&sock),
        "--state-file",
        s(&state),
        "--threshold-ms",
        "60000",
    ]);
    let line = obs.wait_stderr(&["state restored"], Duration::from_secs(5));
    assert!(
        line.contains("2 agents") && line.contains("reboot"),
        "{line}"
    );
    // Silent for the 2 minutes between the snapshot and now by the wall clock, past the minute of
    // the threshold: stalled at once, long before a minute passes after the start.
    for p in &pids {
        let l = obs.wait_for(
            &["\"kind\":\"stall\"", &format!("\"pid\":{p},")],
            Duration::from_secs(20),
        );
        println!("after reboot: {l}");
    }
}

#[test]
fn the_audit_anchor_in_the_state_file_catches_a_cut_audit_tail() {
    let dir = tmpdir("anchor");
    let sock = dir.join("s.sock");
    let state = dir.join("state");
    let audit = dir.join("audit.log");
    let mut obs = start(&[
        "--socket",
        s(&sock),
        "--state-file",
        s(&state),
        "--recovery-exec",
        "/bin/true",
        "--recovery-audit-file",
        s(&audit),
        "--threshold-ms",
        "300",
    ]);
    let mut agents = Agents(Vec::new());
    for _ in 0..2 {
        let p = agents.spawn(&sock, &["--interval-ms", "50", "--crash-after", "3"]);
        obs.wait_for(
            &[
                "\"kind\":\"recovery\"",
                &format!("\"pid\":{p},"),
                "exited 0",
            ],
            Duration::from_secs(10),
        );
    }
    let status = obs.terminate();
    let err = obs.stderr();
    assert!(status.success(), "{err}");
    let out = run_bin(&["state", "anchor", s(&state)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let anchor = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (seq, hash) = anchor.split_once(':').unwrap();
    assert!(seq.parse::<u64>().unwrap() >= 4, "{anchor}");
    assert_eq!(hash.len(), 64);
    let verify = |files: &[&str]| {
        let mut args = vec!["audit", "verify", "--anchor", &anchor];
        args.extend_from_slice(files);
        run_bin(&args)
    };
    assert_eq!(verify(&[s(&audit)]).status.code(), Some(0));
    // Cut the last record: the chain alone is intact, the anchor says it is not.
    let text = std::fs::read_to_string(&audit).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    let cut = dir.join("cut.log");
    std::fs::write(&cut, lines.join("\n") + "\n").unwrap();
    assert_eq!(
        run_bin(&["audit", "verify", s(&cut)]).status.code(),
        Some(0)
    );
    let out = verify(&[s(&cut)]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // The observer itself checks the anchor when it starts on the cut file: an alarm and a
    // counter, and it runs on (the audit trail goes on from the file's last record).
    std::fs::write(&audit, lines.join("\n") + "\n").unwrap();
    let obs = start(&[
        "--socket",
        s(&sock),
        "--state-file",
        s(&state),
        "--recovery-exec",
        "/bin/true",
        "--recovery-audit-file",
        s(&audit),
    ]);
    obs.wait_stderr(
        &["ALARM: --recovery-audit-file", "records were cut"],
        Duration::from_secs(10),
    );
    obs.wait_metric(
        "varta_recovery_audit_anchor_mismatches_total",
        1.0,
        Duration::from_secs(10),
    );
    drop(obs);
    // A state file without an anchor, or none at all.
    let plain = dir.join("plain");
    let mut obs = start(&["--socket", s(&sock), "--state-file", s(&plain)]);
    obs.terminate();
    assert_eq!(
        run_bin(&["state", "anchor", s(&plain)]).status.code(),
        Some(1)
    );
    assert_eq!(
        run_bin(&["state", "anchor", s(&dir.join("none"))])
            .status
            .code(),
        Some(2)
    );
}
