//! The fault suite: the real observer with real agent processes, killed, stopped and starved
//! of disk, checking that nothing it accepted is lost. (Recovery children that hang, ignore
//! SIGTERM or spawn grandchildren are covered by `recovery_daemon.rs`, which checks that none
//! survives shutdown.)
//!
//! Every wait is bounded in seconds; figures (restart to first beat handled, how late a hang
//! was reported) are printed, never asserted.

mod state_support;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use state_support::{all_running, num, signal, tmpdir, Agents, Observer, BIN};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const STEADY: usize = 24;
const THRESHOLD_MS: u64 = 3000;

/// Starts `STEADY` agents beating every 20 ms and one that hangs after 5 beats; waits until
/// `obs` knows them all and has written two snapshots since. Returns (steady pids, hung pid).
fn load(obs: &Observer, sock: &Path, agents: &mut Agents) -> (Vec<u32>, u32) {
    let steady: Vec<u32> = (0..STEADY)
        .map(|_| agents.spawn(sock, &["--interval-ms", "20"]))
        .collect();
    let hung = agents.spawn(sock, &["--interval-ms", "20", "--hang-after", "5"]);
    for p in steady.iter().chain([&hung]) {
        obs.wait_for(&["\"kind\":\"new\"", &format!("\"pid\":{p},")], 20);
    }
    let n = obs.metric("varta_state_snapshots_total");
    obs.wait_metric_at_least("varta_state_snapshots_total", n + 2.0, 10);
    (steady, hung)
}

/// After a restart: every agent known (no `new` event for any), the hang reported, no stall
/// for an agent that kept beating.
fn check_after_restart(
    before: &Observer,
    after: &Observer,
    steady: &[u32],
    hung: u32,
    killed_at: Instant,
    agents: &mut Agents,
) {
    // Restart to the first beat handled (a figure, polled every 2 ms).
    let end = Instant::now() + Duration::from_secs(10);
    while state_support::metric_in(&after.scrape(), "varta_frames_accepted_total") < 1.0 {
        assert!(Instant::now() < end, "no beat handled after the restart");
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "restart to first beat handled: {} ms after spawning the observer, {} ms after the kill",
        after.started.elapsed().as_millis(),
        killed_at.elapsed().as_millis()
    );
    let restored = after.wait_stderr("state restored", 5);
    assert!(
        restored.contains(&format!("{} agents", STEADY + 1)),
        "{restored}"
    );
    // Hung before the kill, reported after it, by the new observer.
    assert_eq!(
        before.count(&["\"kind\":\"stall\"", &format!("\"pid\":{hung},")]),
        0,
        "the hang was reported before the kill: the machine is too slow for this test's timing"
    );
    let stall = after.wait_for(&["\"kind\":\"stall\"", &format!("\"pid\":{hung},")], 20);
    println!(
        "hang reported {} ms after the kill; the stall line: {stall}",
        killed_at.elapsed().as_millis()
    );
    let (at, last) = (
        num(&stall, "at_ns").unwrap(),
        num(&stall, "last_beat_ns").unwrap(),
    );
    assert!(
        at - last >= THRESHOLD_MS * 1_000_000,
        "silence carried across the restart is at least the threshold: {stall}"
    );
    // The steady agents beat again into the restarted observer for longer than the threshold after the restart: none stalls, none is new.
    std::thread::sleep(
        Duration::from_millis(THRESHOLD_MS + 1000).saturating_sub(after.started.elapsed()),
    );
    for p in steady {
        for obs in [before, after] {
            assert_eq!(
                obs.count(&["\"kind\":\"stall\"", &format!("\"pid\":{p},")]),
                0,
                "false stall of {p}"
            );
        }
        assert_eq!(
            after.count(&["\"kind\":\"new\"", &format!("\"pid\":{p},")]),
            0,
            "{p} is known after the restart"
        );
    }
    assert_eq!(
        after.count(&["\"kind\":\"new\""]),
        0,
        "no agent was learned anew"
    );
    assert!(all_running(agents), "every agent process still runs");
}

#[test]
fn sigkill_under_load_then_restart_loses_no_agent_and_no_hang() {
    let dir = tmpdir("sigkill");
    let sock = dir.join("s.sock");
    let state = dir.join("state");
    let threshold = THRESHOLD_MS.to_string();
    let args = [
        "--socket",
        s(&sock),
        "--threshold-ms",
        &threshold,
        "--state-file",
        s(&state),
        "--state-interval-ms",
        "100",
    ];
    let before = Observer::start(&args);
    let mut agents = Agents(Vec::new());
    let (steady, hung) = load(&before, &sock, &mut agents);
    let lines_before = before.lines();
    let killed_at = Instant::now();
    signal(before.child.id(), libc::SIGKILL);
    // The agents go on beating into no observer (refused; varta-client reconnects).
    std::thread::sleep(Duration::from_millis(500));
    let after = Observer::start(&args);
    check_after_restart(&before, &after, &steady, hung, killed_at, &mut agents);
    assert!(!lines_before.is_empty());
}

/// `varta-watch run ARGS` with `sock` passed as systemd does (descriptor 3, `LISTEN_PID`
/// naming the observer through `sh`'s exec).
fn activated(sock: &UnixDatagram, args: &[&str]) -> Observer {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(BIN)
        .arg("run")
        .args(args)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "unix");
    let fd = sock.as_raw_fd();
    // SAFETY: only async-signal-safe calls (fcntl, dup2) in the forked child, on a descriptor
    // this process owns: first above the low numbers, then to 3 (without close-on-exec, as
    // systemd passes it).
    unsafe {
        cmd.pre_exec(move || {
            let a = libc::fcntl(fd, libc::F_DUPFD, 100);
            if a < 0 || libc::dup2(a, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Observer::spawn(cmd)
}

#[test]
fn sigkill_under_load_with_socket_activation_reads_the_queued_beats() {
    let dir = tmpdir("sigkill-activated");
    let sock_path = dir.join("act.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    // PassCredentials=yes: senders are attested from the first queued datagram on.
    rustix::net::sockopt::set_socket_passcred(&sock, true).unwrap();
    let state = dir.join("state");
    let threshold = THRESHOLD_MS.to_string();
    let args = [
        "--socket",
        s(&sock_path),
        "--threshold-ms",
        &threshold,
        "--state-file",
        s(&state),
        "--state-interval-ms",
        "100",
    ];
    let before = activated(&sock, &args);
    let mut agents = Agents(Vec::new());
    let (steady, hung) = load(&before, &sock_path, &mut agents);
    let killed_at = Instant::now();
    signal(before.child.id(), libc::SIGKILL);
    // The socket lives on in this process: beats queue in the kernel meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    let after = activated(&sock, &args);
    check_after_restart(&before, &after, &steady, hung, killed_at, &mut agents);
    // The queued beats were read: the new observer's first frames predate its start.
    assert!(after.metric("varta_frames_accepted_total") > 0.0);
}

/// Lines of the TSV export.
fn tsv_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn sigterm_under_load_export_and_audit_hold_every_accepted_event() {
    let dir = tmpdir("sigterm");
    let sock = dir.join("s.sock");
    let export = dir.join("events.tsv");
    let audit = dir.join("audit.log");
    let state = dir.join("state");
    let obs = Observer::start(&[
        "--socket",
        s(&sock),
        "--threshold-ms",
        "200",
        "--export-file",
        s(&export),
        // Our richer lines (every event, recoveries too), so stdout and the file compare.
        "--export-format",
        "varta",
        "--recovery-exec",
        "/bin/sleep 0.05",
        "--recovery-debounce-ms",
        "1",
        "--recovery-audit-file",
        s(&audit),
        "--state-file",
        s(&state),
    ]);
    let mut agents = Agents(Vec::new());
    // Steady beaters plus agents that hang for 300 ms every few beats: a stream of
    // new/stall/recovered/recovery events right up to the signal.
    for _ in 0..8 {
        agents.spawn(&sock, &["--interval-ms", "10"]);
    }
    let mut flappers = Vec::new();
    for _ in 0..6 {
        flappers.push(agents.spawn(
            &sock,
            &[
                "--interval-ms",
                "10",
                "--hang-after",
                "3",
                "--hang-ms",
                "300",
            ],
        ));
    }
    obs.wait_metric_at_least(
        "varta_recovery_outcomes_total{outcome=\"reaped_zero\"}",
        3.0,
        20,
    );
    let (status, lines, err) = obs.terminate();
    assert!(status.success(), "{err}");
    // Every event line the loop emitted is in the export file, in the same order.
    let kinds = |l: &str| -> Option<String> {
        l.split("\"kind\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(str::to_string)
    };
    let events: Vec<&String> = lines
        .iter()
        .filter(|l| kinds(l).as_deref() != Some("info"))
        .collect();
    let tsv = tsv_lines(&export);
    assert_eq!(
        tsv.len(),
        events.len(),
        "stdout events {} vs export {}",
        events.len(),
        tsv.len()
    );
    for (e, t) in events.iter().zip(&tsv) {
        let at = num(e, "at_ns").unwrap().to_string();
        let kind = kinds(e).unwrap();
        assert!(
            t.starts_with(&format!("{at}\t{kind}\t")),
            "export out of step: {t} vs {e}"
        );
    }
    // Every recovery decision reported is a record of the audit chain, which is intact.
    let decisions = lines
        .iter()
        .filter(|l| l.contains("\"kind\":\"recovery\""))
        .count();
    let records = tsv_lines(&audit).len();
    assert!(decisions >= 6, "{decisions} recovery events");
    assert_eq!(records, decisions, "one audit record per recovery decision");
    let out = Command::new(BIN)
        .args(["state", "anchor", s(&state)])
        .output()
        .unwrap();
    let anchor = String::from_utf8(out.stdout).unwrap();
    let out = Command::new(BIN)
        .args(["audit", "verify", "--anchor", anchor.trim(), s(&audit)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    println!(
        "SIGTERM under load: {} events exported, {records} audit records, {} flappers",
        tsv.len(),
        flappers.len()
    );
}

/// A tmpfs of `size` mounted on `dir`, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                s(dir),
            ])
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `path` (a file that grows until ENOSPC).
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn disk_full_for_export_audit_and_state_stalls_still_detected_and_writes_resume() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let dir = tmpdir("diskfull");
    let Some(fs) = Tmpfs::mount(&dir.join("small"), "512k") else {
        println!("skipped: mount -t tmpfs refused here");
        return;
    };
    let small = fs.0.clone();
    let sock = dir.join("s.sock");
    let (export, audit, state) = (
        small.join("events.tsv"),
        small.join("audit.log"),
        small.join("state"),
    );
    let obs = Observer::start(&[
        "--socket",
        s(&sock),
        "--threshold-ms",
        "300",
        "--export-file",
        s(&export),
        // Our richer lines (every event, recoveries too), so stdout and the file compare.
        "--export-format",
        "varta",
        "--recovery-exec",
        "/bin/true",
        "--recovery-debounce-ms",
        "1",
        "--recovery-audit-file",
        s(&audit),
        "--state-file",
        s(&state),
        "--state-interval-ms",
        "50",
    ]);
    let mut agents = Agents(Vec::new());
    for _ in 0..4 {
        agents.spawn(&sock, &["--interval-ms", "20"]);
    }
    obs.wait_metric_at_least("varta_state_snapshots_total", 2.0, 10);
    let filler = small.join("filler");
    fill(&filler);
    // The disk is full: snapshots fail and say so; stalls go on being detected.
    obs.wait_metric_at_least("varta_state_write_errors_total", 2.0, 10);
    obs.wait_stderr("cannot write state file", 5);
    let stalls_before = obs.count(&["\"kind\":\"stall\""]);
    let mut hung = Vec::new();
    for _ in 0..3 {
        hung.push(agents.spawn(&sock, &["--interval-ms", "20", "--hang-after", "3"]));
    }
    for p in &hung {
        obs.wait_for(&["\"kind\":\"stall\"", &format!("\"pid\":{p},")], 10);
    }
    assert!(obs.count(&["\"kind\":\"stall\""]) >= stalls_before + hung.len());
    // Enough events to need more disk than the export file's last page holds.
    for _ in 0..40 {
        agents.spawn(&sock, &["--interval-ms", "1", "--count", "1", "--goodbye"]);
    }
    obs.wait_metric_at_least("varta_output_write_errors_total", 1.0, 20);
    let body = obs.scrape();
    println!(
        "disk full: state write errors {}, output write errors {}, audit unaudited {}",
        state_support::metric_in(&body, "varta_state_write_errors_total"),
        state_support::metric_in(&body, "varta_output_write_errors_total"),
        state_support::metric_in(&body, "varta_recovery_audit_dropped_total"),
    );
    assert!(
        state_support::metric_in(&body, "varta_recovery_audit_dropped_total") > 0.0,
        "recovery decisions taken on a full disk are counted unaudited: {body}"
    );
    // Space returns: snapshots are written again, and the file restores.
    std::fs::remove_file(&filler).unwrap();
    obs.wait_stderr("written again", 10);
    let n = obs.metric("varta_state_snapshots_total");
    obs.wait_metric_at_least("varta_state_snapshots_total", n + 1.0, 10);
    // The export and the audit trail take new events again.
    let late = agents.spawn(&sock, &["--interval-ms", "20", "--hang-after", "3"]);
    obs.wait_for(
        &[
            "\"kind\":\"recovery\"",
            &format!("\"pid\":{late},"),
            "exited 0",
        ],
        10,
    );
    let (status, _, err) = obs.terminate();
    assert!(status.success(), "{err}");
    assert!(err.contains("state saved"), "{err}");
    let exported = std::fs::read_to_string(&export).unwrap();
    assert!(
        exported.contains(&format!("\tstall\t{late}\t")),
        "export resumed: {exported}"
    );
    let audited = std::fs::read_to_string(&audit).unwrap();
    assert!(
        audited.contains(&format!("unix:{late}\t")),
        "audit resumed: {audited}"
    );
    let after = Observer::start(&["--socket", s(&sock), "--state-file", s(&state)]);
    after.wait_stderr("state restored", 5);
    drop(after);
    drop(agents);
}
