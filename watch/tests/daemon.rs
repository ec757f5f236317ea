//! Integration tests: the real `varta-watch` binary, real sockets. (Tests with real agent
//! processes live beside the agent, in `tools/tests/agents.rs`.)
//!
//! Each test starts its own observer on its own socket (and, where needed, its own UDP port and
//! metrics port, all chosen by the kernel), talks to it, reads its JSON event lines, and scrapes
//! its metrics over HTTP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vlp_core::{Frame, Key, Session, Status};

#[path = "common/observer.rs"]
mod observer;

use observer::{metric_in, mono_ns, num, run_bin, tmpdir, write_key, Observer, Stdout, BIN};

/// The bound of a wait for a metric (the loop handles datagrams asynchronously).
const METRIC_WAIT: Duration = Duration::from_secs(5);

/// Starts `cmd` (a `varta-watch run ...` command, or a wrapper that execs one) with
/// `--format json --prom-addr 127.0.0.1:0` added; `socket` is the Unix socket it serves.
fn spawn(mut cmd: Command, socket: &Path) -> Observer {
    cmd.args(observer::JSON_PROM);
    Observer::spawn(cmd, Stdout::Read, Some(socket.to_path_buf()))
}

/// A plaintext `Ok` frame stamped now.
fn frame(pid: u32, nonce: u64) -> [u8; 32] {
    observer::frame(Status::Ok, pid, nonce)
}

#[test]
fn beats_counted_stall_within_bounds_then_recovered() {
    let dir = tmpdir("stall");
    let cfg = dir.join("watch.toml");
    std::fs::write(&cfg, "threshold-ms = 300\n").unwrap();
    let mut obs = Observer::start(&dir, &["--config", cfg.to_str().unwrap()]);
    let me = std::process::id();
    let c = obs.client();
    // Taken just before each send: the kernel stamps the beat after it, so the stall cannot
    // be due before `last` + threshold.
    let mut last = Instant::now();
    for n in 1..=5 {
        std::thread::sleep(Duration::from_millis(20));
        last = Instant::now();
        c.send(&frame(me, n)).unwrap();
    }
    obs.wait_for_timed(
        &["\"kind\":\"new\"", &format!("\"pid\":{me}")],
        Duration::from_secs(2),
    );
    let (t, line) = obs.wait_for_timed(&["\"kind\":\"stall\""], Duration::from_secs(3));
    let late = t.duration_since(last);
    // Exactly one threshold of silence, never early, and reported (a generous functional
    // bound: a shared CI machine; lateness is measured by `varta bench stall`, not here).
    assert!(line.contains("silent for 300.0ms"), "{line}");
    assert!(late >= Duration::from_millis(299), "stall after {late:?}");
    assert!(late < Duration::from_secs(2), "stall after {late:?}");
    // The same in numbers, on the watch's own clock: the event is the exact deadline, and the
    // line was written after it (and soon: generous bound again).
    let (at, last_beat, emitted) = (
        num(&line, "at_ns").unwrap(),
        num(&line, "last_beat_ns").unwrap(),
        num(&line, "emitted_ns").unwrap(),
    );
    assert_eq!(at, last_beat + 300_000_000, "{line}");
    assert!(emitted >= at && emitted - at < 150_000_000, "{line}");
    let series = format!("{{pid=\"{me}\",listener=\"unix\"}}");
    let stalls = format!("varta_stalls_total{series}");
    // varta_status carries the agent's name (from /proc) once the observer has read it.
    let status_prefix = format!("varta_status{{pid=\"{me}\",listener=\"unix\"");
    let status_of = |page: &str| -> Option<f64> {
        page.lines()
            .find(|l| l.starts_with(&status_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    obs.wait_scrape("varta_status = 3", METRIC_WAIT, |p| {
        status_of(p) == Some(3.0)
    });
    assert_eq!(obs.metric(&stalls), 1.0);
    c.send(&frame(me, 6)).unwrap();
    let (_, rec) = obs.wait_for_timed(&["\"kind\":\"recovered\""], Duration::from_secs(2));
    let silent = num(&rec, "silent_for_ns").unwrap();
    assert_eq!(silent, num(&rec, "at_ns").unwrap() - last_beat, "{rec}");
    assert!(num(&rec, "emitted_ns").unwrap() >= num(&rec, "at_ns").unwrap());
    obs.wait_metric(&format!("varta_beats_total{series}"), 6.0, METRIC_WAIT);
    assert_eq!(status_of(&obs.scrape()), Some(0.0));
    assert_eq!(obs.metric("varta_frames_accepted_total"), 6.0);
    assert_eq!(obs.metric("varta_watch_pids_tracked"), 1.0);
    // One silence run, one stall event.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(obs.count(&["\"kind\":\"stall\""]), 1);
    assert!(obs.terminate().success());
}

#[test]
fn spoofed_pid_and_decode_errors_counted_by_kind() {
    let dir = tmpdir("reject");
    let obs = Observer::start(&dir, &[]);
    let me = std::process::id();
    let c = obs.client();
    // A valid frame claiming someone else's pid: the kernel says it is ours.
    c.send(&frame(me + 1, 1)).unwrap();
    let good = frame(me, 1);
    let recrc = |mut b: [u8; 32]| {
        let crc = vlp_core::crc::crc32c(&b[..28]);
        b[28..].copy_from_slice(&crc.to_le_bytes());
        b
    };
    let with = |at: usize, bytes: &[u8]| {
        let mut b = good;
        b[at..at + bytes.len()].copy_from_slice(bytes);
        recrc(b)
    };
    let mut bad_crc = good;
    bad_crc[28] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad_length", good[..31].to_vec()),
        ("bad_magic", with(0, b"XX").to_vec()),
        ("bad_version", with(2, &[1]).to_vec()),
        ("bad_crc", bad_crc.to_vec()),
        ("bad_status", with(3, &[4]).to_vec()),
        ("stall_on_wire", with(3, &[3]).to_vec()),
        ("bad_pid", with(4, &1u32.to_le_bytes()).to_vec()),
        ("bad_timestamp", with(8, &u64::MAX.to_le_bytes()).to_vec()),
        ("bad_nonce", with(16, &u64::MAX.to_le_bytes()).to_vec()),
    ];
    for (_, bytes) in &cases {
        c.send(bytes).unwrap();
    }
    // Longer than any VLP datagram: cut by the kernel, still refused by length.
    c.send(&[0u8; 300]).unwrap();
    obs.wait_metric("varta_frame_auth_failures_total", 1.0, METRIC_WAIT);
    obs.wait_metric(
        "varta_decode_errors_total{kind=\"bad_length\"}",
        2.0,
        METRIC_WAIT,
    );
    let body = obs.scrape();
    for (kind, _) in &cases[1..] {
        assert_eq!(
            metric_in(
                &body,
                &format!("varta_decode_errors_total{{kind=\"{kind}\"}}")
            ),
            1.0,
            "{kind}"
        );
    }
    assert_eq!(metric_in(&body, "varta_frames_accepted_total"), 0.0);
    assert_eq!(metric_in(&body, "varta_watch_pids_tracked"), 0.0);
    assert_eq!(
        metric_in(&body, "varta_rejections_total{reason=\"pid_mismatch\"}"),
        1.0
    );
    // The loop goes on: a good frame after all that is accepted.
    c.send(&good).unwrap();
    obs.wait_metric("varta_frames_accepted_total", 1.0, METRIC_WAIT);
}

#[test]
fn secure_udp_every_key_kind_replay_refused_reorder_accepted() {
    let dir = tmpdir("secure");
    let k1 = "11".repeat(32);
    let k2 = "22".repeat(32);
    let km = "33".repeat(32);
    for (name, hex) in [("k1", &k1), ("k2", &k2), ("km", &km)] {
        write_key(&dir.join(name), hex);
    }
    let p = |n: &str| dir.join(n).display().to_string();
    let obs = Observer::start(
        &dir,
        &[
            "--udp-port",
            "0",
            "--key-file",
            &p("k1"),
            "--accepted-key-file",
            &p("k2"),
            "--master-key-file",
            &p("km"),
            "--threshold-ms",
            "5000",
        ],
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(obs.udp.expect("udp address")).unwrap();
    let key = |h: &str| Key::from_hex(h).unwrap();
    let beat = |s: &mut Session| {
        let b = s.beat(Status::Ok, 0, mono_ns()).unwrap();
        s.commit(&b).unwrap();
        b
    };
    // Shared key, rotation key, master key: one agent each.
    let mut a = Session::secure(5001, [1; 16]);
    udp.send(&beat(&mut a).seal_shared(&key(&k1)).unwrap().0)
        .unwrap();
    let mut b = Session::secure(5002, [2; 16]);
    udp.send(&beat(&mut b).seal_shared(&key(&k2)).unwrap().0)
        .unwrap();
    let mut m = Session::secure(5003, [3; 16]);
    let agent_key = vlp_core::kdf::derive_agent_key(&key(&km), 5003);
    udp.send(&beat(&mut m).seal_master(&agent_key).unwrap().0)
        .unwrap();
    for pid in [5001, 5002, 5003] {
        obs.wait_for_timed(
            &["\"kind\":\"new\"", &format!("\"pid\":{pid}")],
            Duration::from_secs(3),
        );
    }
    // Wrong key: decrypt failure. Plaintext on a secure listener: refused.
    let mut w = Session::secure(5004, [4; 16]);
    udp.send(&beat(&mut w).seal_shared(&key(&"44".repeat(32))).unwrap().0)
        .unwrap();
    udp.send(&frame(5005, 1)).unwrap();
    // Replay: the same datagram twice.
    let d = beat(&mut a).seal_shared(&key(&k1)).unwrap();
    udp.send(&d.0).unwrap();
    udp.send(&d.0).unwrap();
    // Reorder: 2nd, 4th, then 3rd.
    let d2 = beat(&mut b).seal_shared(&key(&k2)).unwrap();
    let d3 = beat(&mut b).seal_shared(&key(&k2)).unwrap();
    let d4 = beat(&mut b).seal_shared(&key(&k2)).unwrap();
    for d in [&d2, &d4, &d3] {
        udp.send(&d.0).unwrap();
    }
    obs.wait_metric("varta_frames_accepted_total", 7.0, METRIC_WAIT);
    let body = obs.scrape();
    assert_eq!(metric_in(&body, "varta_frame_decrypt_failures_total"), 1.0);
    assert_eq!(metric_in(&body, "varta_replays_refused_total"), 1.0);
    assert_eq!(metric_in(&body, "varta_frames_reordered_total"), 1.0);
    assert_eq!(
        metric_in(
            &body,
            "varta_rejections_total{reason=\"plaintext_refused\"}"
        ),
        1.0
    );
    assert_eq!(
        metric_in(&body, "varta_beats_total{pid=\"5002\",listener=\"udp0\"}"),
        4.0
    );
    assert_eq!(metric_in(&body, "varta_watch_pids_tracked"), 3.0);
}

#[test]
fn recovery_child_past_its_timeout_is_killed() {
    let dir = tmpdir("rectimeout");
    let mut obs = Observer::start(
        &dir,
        &[
            "--recovery-cmd",
            "/bin/sleep 30 {pid}",
            "--recovery-timeout-ms",
            "300",
        ],
    );
    let me = std::process::id();
    let c = obs.client();
    c.send(&frame(me, 1)).unwrap();
    c.send(&Frame::terminal(me, mono_ns(), 1).unwrap().emit())
        .unwrap();
    let (_, started) = obs.wait_for_timed(
        &["\"kind\":\"recovery\"", "spawned child"],
        Duration::from_secs(3),
    );
    let (_, killed) =
        obs.wait_for_timed(&["\"kind\":\"recovery\"", "killed"], Duration::from_secs(3));
    // Killed at its deadline (the loop woke for it: nothing else was pending but eviction).
    let waited = num(&killed, "at_ns").unwrap() - num(&started, "at_ns").unwrap();
    assert!(
        (300_000_000..1_000_000_000).contains(&waited),
        "killed {waited} ns after the start"
    );
    obs.wait_for_timed(
        &["\"kind\":\"recovery\"", "after its timeout"],
        Duration::from_secs(3),
    );
    obs.wait_metric(
        "varta_recovery_outcomes_total{outcome=\"timed_out\"}",
        1.0,
        METRIC_WAIT,
    );
    assert_eq!(
        obs.metric("varta_recovery_outcomes_total{outcome=\"reaped_nonzero\"}"),
        0.0
    );
    assert!(obs.terminate().success());
}

#[test]
fn unattested_udp_agents_get_no_recovery() {
    let dir = tmpdir("udprec");
    let obs = Observer::start(
        &dir,
        &[
            "--udp-port",
            "0",
            "--allow-plaintext-udp",
            "--threshold-ms",
            "150",
            "--recovery-cmd",
            "/bin/true {pid}",
        ],
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(obs.udp.unwrap()).unwrap();
    udp.send(&frame(6001, 1)).unwrap();
    obs.wait_for_timed(
        &["\"kind\":\"stall\"", "\"pid\":6001"],
        Duration::from_secs(3),
    );
    obs.wait_for_timed(
        &[
            "\"kind\":\"recovery\"",
            "refused (unauthenticated_transport)",
        ],
        Duration::from_secs(3),
    );
    obs.wait_metric(
        "varta_recovery_refused_total{reason=\"unauthenticated_transport\"}",
        1.0,
        METRIC_WAIT,
    );
}

#[test]
fn stale_socket_replaced_live_refused_removed_only_if_ours() {
    let dir = tmpdir("sock");
    let path = dir.join("s.sock");
    // A stale socket file: bound once, nobody listening now.
    drop(UnixDatagram::bind(&path).unwrap());
    assert!(path.exists());
    let mut obs = Observer::start(&dir, &[]);
    let mode = std::fs::metadata(&path).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // A second observer on the same path is refused with a clear one-line error.
    let out = run_bin(&["run", "--socket", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by a running observer"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Removed on SIGTERM.
    assert!(obs.terminate().success());
    assert!(!path.exists());

    // Not removed if someone else's socket replaced ours meanwhile.
    let mut obs = Observer::start(&dir, &["--socket-mode", "0660"]);
    let mode = std::fs::metadata(&path).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o660
    );
    std::fs::remove_file(&path).unwrap();
    let _other = UnixDatagram::bind(&path).unwrap();
    assert!(obs.terminate().success());
    assert!(path.exists());

    // A path that is not a socket is never deleted.
    let file = dir.join("plain");
    std::fs::write(&file, "x").unwrap();
    let out = run_bin(&["run", "--socket", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn bad_flags_and_files_exit_2_with_one_line() {
    let dir = tmpdir("flags");
    let open_key = dir.join("open.key");
    std::fs::write(&open_key, "11".repeat(32)).unwrap();
    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "threshold-ms = 100\nno-such-key = 1\n").unwrap();
    let sock = dir.join("s.sock").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--bogus"], "--bogus"),
        (vec!["--threshold-ms", "abc"], "--threshold-ms"),
        (vec!["--threshold-ms", "0"], "--threshold-ms"),
        (vec!["--socket-mode", "999"], "--socket-mode"),
        (vec!["--udp-port", "9999"], "--allow-plaintext-udp"),
        (
            vec!["--udp-port", "0", "--key-file", "/nonexistent/key"],
            "--key-file /nonexistent/key",
        ),
        (
            vec!["--udp-port", "0", "--key-file", open_key.to_str().unwrap()],
            "chmod 600",
        ),
        (vec!["--config", bad_toml.to_str().unwrap()], "no-such-key"),
        (vec!["--config", "/nonexistent.toml"], "/nonexistent.toml"),
        (vec!["--recovery-cmd", "a 'b"], "unclosed quote"),
        (vec!["--recovery-timeout-ms", "0"], "--recovery-timeout-ms"),
        (
            vec![
                "--udp-port",
                "0",
                "--allow-plaintext-udp",
                "--udp-rcvbuf-bytes",
                "5",
            ],
            "--udp-rcvbuf-bytes",
        ),
        (vec!["--prom-addr", "nonsense"], "--prom-addr"),
        (vec!["--rt-priority", "0"], "--rt-priority"),
    ];
    for (args, needle) in cases {
        let mut full = vec!["run", "--socket", &sock];
        full.extend(&args);
        let out = run_bin(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("varta-watch: "), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn idle_observer_never_wakes() {
    let dir = tmpdir("idle");
    let obs = Observer::start(&dir, &["--threshold-ms", "50"]);
    let pid = obs.child.id();
    let switches = || {
        let s = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/status")).unwrap();
        s.lines()
            .find(|l| l.starts_with("voluntary_ctxt_switches"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
    };
    std::thread::sleep(Duration::from_millis(200));
    let before = switches();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(switches(), before, "the loop woke up with nothing to do");
    // With one agent that then says goodbye, nothing is pending either.
    let c = obs.client();
    c.send(&frame(std::process::id(), 1)).unwrap();
    c.send(
        &Frame::goodbye(std::process::id(), mono_ns())
            .unwrap()
            .emit(),
    )
    .unwrap();
    obs.wait_for_timed(&["\"kind\":\"goodbye\""], Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(100));
    let before = switches();
    std::thread::sleep(Duration::from_millis(500));
    let after = switches();
    // Eviction of the dead entry is minutes away: no wake-up now.
    assert_eq!(after, before);
}

#[test]
fn garbage_flood_does_not_hide_a_stall() {
    let dir = tmpdir("flood");
    let obs = Observer::start(
        &dir,
        &[
            "--udp-port",
            "0",
            "--allow-plaintext-udp",
            "--threshold-ms",
            "300",
        ],
    );
    let me = std::process::id();
    let c = obs.client();
    c.send(&frame(me, 1)).unwrap();
    let last = Instant::now();
    obs.wait_for_timed(&["\"kind\":\"new\""], Duration::from_secs(2));
    // Flood the UDP listener with bad-CRC frames until well past the deadline.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(obs.udp.unwrap()).unwrap();
    let mut junk = frame(4242, 1);
    junk[28] ^= 0xff;
    let mut sent = 0u64;
    while last.elapsed() < Duration::from_millis(600) {
        for _ in 0..64 {
            if udp.send(&junk).is_ok() {
                sent += 1;
            }
        }
    }
    let (t, line) = obs.wait_for_timed(&["\"kind\":\"stall\""], Duration::from_secs(2));
    assert!(line.contains("silent for 300.0ms"), "{line}");
    // Reported while the flood was still going on, not after it (generous bound).
    assert!(
        t.duration_since(last) < Duration::from_millis(550),
        "{:?}",
        t.duration_since(last)
    );
    let crc = obs.metric("varta_decode_errors_total{kind=\"bad_crc\"}");
    assert!(crc > 0.0 && crc <= sent as f64, "{crc} of {sent}");
}

#[test]
fn kernel_drops_on_a_full_udp_queue_are_reported() {
    let dir = tmpdir("drops");
    let obs = Observer::start(&dir, &["--udp-port", "0", "--allow-plaintext-udp"]);
    assert_eq!(
        obs.metric("varta_receive_queue_drops_total{listener=\"udp0\"}"),
        0.0
    );
    let pid = obs.child.id() as i32;
    // Freeze the observer and overfill its receive queue.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(obs.udp.unwrap()).unwrap();
    for n in 1..=200_000u64 {
        let _ = udp.send(&frame(7001, n));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let body = obs.scrape();
    let drops = metric_in(&body, "varta_receive_queue_drops_total{listener=\"udp0\"}");
    let got = metric_in(&body, "varta_datagrams_received_total{listener=\"udp0\"}");
    assert!(drops > 0.0, "{body}");
    assert!(drops + got <= 200_000.0, "{drops} + {got}");
}

/// Connections to the metrics port that never finish a request: `idle` send nothing,
/// `trickle` send one byte of a request line a second from a thread of their own.
struct SlowClients {
    idle: Vec<TcpStream>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    trickler: Option<std::thread::JoinHandle<usize>>,
}

impl SlowClients {
    fn open(addr: SocketAddr, idle: usize, trickle: usize) -> SlowClients {
        let idle = (0..idle)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let mut slow: Vec<TcpStream> = (0..trickle)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        let trickler = std::thread::spawn(move || {
            let line = b"GET /metrics HTTP/1.1\r\nHost: slow\r\n";
            let mut sent = 0;
            let mut at = 0;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                for c in &mut slow {
                    if c.write_all(&line[at % line.len()..][..1]).is_ok() {
                        sent += 1;
                    }
                }
                at += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            sent
        });
        SlowClients {
            idle,
            stop,
            trickler: Some(trickler),
        }
    }
}

impl Drop for SlowClients {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.trickler.take() {
            let _ = t.join();
        }
        self.idle.clear();
    }
}

/// A scrape that must be answered within `bound` (the socket's read timeout).
fn scrape_within(addr: SocketAddr, bound: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(bound)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body)
        .unwrap_or_else(|e| panic!("no answer within {bound:?}: {e}"));
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

#[test]
fn slow_http_clients_delay_neither_a_stall_nor_a_scrape() {
    let dir = tmpdir("slowhttp");
    let mut obs = Observer::start(&dir, &["--threshold-ms", "300"]);
    let prom = obs.prom.unwrap();
    let slow = SlowClients::open(prom, 100, 100);
    std::thread::sleep(Duration::from_millis(1500));
    let me = std::process::id();
    let c = obs.client();
    c.send(&frame(me, 1)).unwrap();
    obs.wait_for_timed(&["\"kind\":\"new\""], Duration::from_secs(3));
    let (_, line) = obs.wait_for_timed(&["\"kind\":\"stall\""], Duration::from_secs(3));
    let (at, last_beat, emitted) = (
        num(&line, "at_ns").unwrap(),
        num(&line, "last_beat_ns").unwrap(),
        num(&line, "emitted_ns").unwrap(),
    );
    // The stall is the exact deadline, written within threshold + 100 ms of the last beat on
    // the observer's own clock, with 200 slow connections held.
    assert_eq!(at, last_beat + 300_000_000, "{line}");
    assert!(emitted - last_beat < 400_000_000, "{line}");
    let body = scrape_within(prom, Duration::from_secs(2));
    assert_eq!(
        metric_in(
            &body,
            &format!("varta_stalls_total{{pid=\"{me}\",listener=\"unix\"}}")
        ),
        1.0
    );
    assert_eq!(
        metric_in(
            &body,
            "varta_prom_connections_dropped_total{reason=\"capacity\"}"
        ),
        0.0,
        "the 200 slow clients are held, not refused"
    );
    drop(slow);
    assert!(obs.terminate().success());
}

#[test]
fn http_limits_close_hostile_connections_and_count_them() {
    let dir = tmpdir("httplimits");
    let mut obs = Observer::start(
        &dir,
        &[
            "--http-max-connections",
            "4",
            // Long enough that the held connections outlast the extra ones' arrival on a
            // loaded machine; short enough for a quick test.
            "--http-header-timeout-ms",
            "1500",
            "--http-idle-timeout-ms",
            "1500",
        ],
    );
    let prom = obs.prom.unwrap();
    let closed_by_server = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(0) | Err(_))
            && !matches!(
                s.read(&mut buf),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut
            )
    };
    // Over the cap: closed at once.
    let mut held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(prom).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(prom).unwrap()).collect();
    for s in &mut extra {
        assert!(closed_by_server(s), "a connection over the cap is closed");
    }
    // Silent and half-sent requests: closed by the timeouts.
    held[0].write_all(b"GET /metr").unwrap();
    for s in &mut held {
        assert!(
            closed_by_server(s),
            "a silent or unfinished request is closed"
        );
    }
    drop(held);
    let body = scrape_within(prom, Duration::from_secs(2));
    assert_eq!(
        metric_in(
            &body,
            "varta_prom_connections_dropped_total{reason=\"capacity\"}"
        ),
        3.0
    );
    let timed_out = metric_in(
        &body,
        "varta_prom_connections_dropped_total{reason=\"header_timeout\"}",
    ) + metric_in(
        &body,
        "varta_prom_connections_dropped_total{reason=\"idle\"}",
    );
    assert_eq!(timed_out, 4.0, "{body}");
    // Other paths and methods get plain refusals.
    let mut s = TcpStream::connect(prom).unwrap();
    s.write_all(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let mut s = TcpStream::connect(prom).unwrap();
    s.write_all(b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    // An oversized request head is refused, and the observer goes on.
    let mut s = TcpStream::connect(prom).unwrap();
    let big = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = s.write_all(big.as_bytes());
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"));
    scrape_within(prom, Duration::from_secs(2));
    assert!(obs.terminate().success());
}

#[test]
fn every_descriptor_of_the_observer_is_close_on_exec() {
    let dir = tmpdir("cloexec");
    let cfg = dir.join("watch.toml");
    std::fs::write(&cfg, "threshold-ms = 300\n").unwrap();
    let export = dir.join("events.tsv");
    let obs = Observer::start(
        &dir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--udp-port",
            "0",
            "--allow-plaintext-udp",
            "--export-file",
            export.to_str().unwrap(),
        ],
    );
    // A scrape, so the HTTP side has opened what it opens.
    obs.scrape();
    // Descriptors without close-on-exec, by number: the observer's own, and ours (which the
    // observer inherited from this test's environment at the same numbers: not its doing).
    let open_on_exec = |pid: &str| -> Vec<(u32, String)> {
        let mut v = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
            let entry = entry.unwrap();
            let fd: u32 = entry.file_name().to_str().unwrap().parse().unwrap();
            let Ok(info) = std::fs::read_to_string(entry.path()) else {
                continue; // closed meanwhile
            };
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
                .unwrap();
            let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap_or_default();
            if fd > 2 && flags & 0o2_000_000 == 0 {
                v.push((fd, target.display().to_string()));
            }
        }
        v
    };
    let pid = obs.child.id().to_string();
    let ours = open_on_exec("self");
    let theirs: Vec<_> = open_on_exec(&pid)
        .into_iter()
        .filter(|x| !ours.contains(x))
        .collect();
    assert!(theirs.is_empty(), "inherited by children: {theirs:?}");
    let seen = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    // Sockets, signal pipe, eventfd, export file, the HTTP runtime's own descriptors.
    assert!(seen >= 9, "only {seen} descriptors");
}

/// A fake service manager's notification socket: collects what the observer sends.
struct FakeSystemd {
    msgs: Arc<Mutex<Vec<String>>>,
    path: PathBuf,
}

impl FakeSystemd {
    fn new(dir: &Path) -> FakeSystemd {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let m2 = Arc::clone(&msgs);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                m2.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        FakeSystemd { msgs, path }
    }

    fn count(&self, needle: &str) -> usize {
        self.msgs
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.lines().any(|l| l == needle))
            .count()
    }

    /// Waits until at least `n` messages hold the line `needle`.
    fn wait(&self, needle: &str, n: usize) {
        let end = Instant::now() + Duration::from_secs(5);
        while self.count(needle) < n {
            assert!(
                Instant::now() < end,
                "fewer than {n} {needle:?}: {:?}",
                self.msgs.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn last_status(&self) -> String {
        self.msgs
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|m| m.lines().find_map(|l| l.strip_prefix("STATUS=")))
            .unwrap_or_default()
            .to_string()
    }
}

/// `varta-watch run --socket SOCKET ARGS`, started through `sh` so that `VAR=$$` names the
/// observer's own pid (the shell execs it), as systemd's `WATCHDOG_PID` and `LISTEN_PID` do.
fn via_sh(pid_var: &str, socket: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("{pid_var}=$$ exec \"$0\" \"$@\""))
        .arg(BIN)
        .arg("run")
        .arg("--socket")
        .arg(socket)
        .args(args);
    cmd
}

#[test]
fn systemd_ready_watchdog_status_and_stopping_and_keepalives_stop_with_the_loop() {
    let dir = tmpdir("notify");
    let systemd = FakeSystemd::new(&dir);
    let block = dir.join("block");
    let socket = dir.join("s.sock");
    let mut cmd = via_sh("WATCHDOG_PID", &socket, &["--threshold-ms", "200"]);
    cmd.env("NOTIFY_SOCKET", &systemd.path)
        .env("WATCHDOG_USEC", "200000")
        .env("VARTA_TEST_BLOCK_FILE", &block);
    let mut obs = spawn(cmd, &socket);
    systemd.wait("READY=1", 1);
    // Idle, the loop still turns and keeps systemd informed.
    systemd.wait("WATCHDOG=1", 3);
    assert_eq!(systemd.last_status(), "0 agents tracked, 0 stalled");
    let c = obs.client();
    c.send(&frame(std::process::id(), 1)).unwrap();
    obs.wait_for_timed(&["\"kind\":\"stall\""], Duration::from_secs(3));
    let end = Instant::now() + Duration::from_secs(3);
    while systemd.last_status() != "1 agents tracked, 1 stalled" {
        assert!(Instant::now() < end, "status {}", systemd.last_status());
        std::thread::sleep(Duration::from_millis(20));
    }
    // A loop that does not turn sends no keep-alive.
    std::fs::write(&block, "").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let before = systemd.count("WATCHDOG=1");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(systemd.count("WATCHDOG=1"), before, "keep-alives went on");
    std::fs::remove_file(&block).unwrap();
    systemd.wait("WATCHDOG=1", before + 1);
    assert!(obs.terminate().success());
    systemd.wait("STOPPING=1", 1);
}

#[test]
fn self_watchdog_keeps_an_idle_loop_turning_and_aborts_a_stuck_one() {
    let dir = tmpdir("selfwatch");
    let block = dir.join("block");
    let socket = dir.join("s.sock");
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg("--socket")
        .arg(&socket)
        .args(["--self-watchdog-secs", "1"])
        .env("VARTA_TEST_BLOCK_FILE", &block);
    let hard = rustix::process::getrlimit(rustix::process::Resource::Core).maximum;
    // SAFETY: one setrlimit system call in the forked child (async-signal-safe): the abort
    // this test provokes leaves no core file behind.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            let none = rustix::process::Rlimit {
                current: Some(0),
                maximum: hard,
            };
            rustix::process::setrlimit(rustix::process::Resource::Core, none)
                .map_err(std::io::Error::from)
        });
    }
    let mut obs = spawn(cmd, &socket);
    // Idle for twice the limit: the loop turns on its own, so no abort.
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        obs.child.try_wait().unwrap().is_none(),
        "aborted while idle"
    );
    std::fs::write(&block, "").unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = obs.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "a stuck loop was not aborted");
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    std::thread::sleep(Duration::from_millis(100));
    let err = obs.stderr();
    assert!(err.contains("has not turned"), "{err}");
}

#[test]
fn socket_activation_reads_beats_queued_before_the_start() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = tmpdir("activation");
    let socket = dir.join("act.sock");
    let unix = UnixDatagram::bind(&socket).unwrap();
    // What systemd's PassCredentials=yes does: the kernel attests senders from the first
    // queued datagram on.
    rustix::net::sockopt::set_socket_passcred(&unix, true).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp.local_addr().unwrap();
    // Beats sent while no observer runs wait in the sockets' queues.
    let me = std::process::id();
    let c = UnixDatagram::unbound().unwrap();
    c.send_to(&frame(me, 1), &socket).unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.send_to(&frame(6101, 1), udp_addr).unwrap();

    let mut cmd = via_sh(
        "LISTEN_PID",
        &socket,
        &["--udp-port", "0", "--allow-plaintext-udp"],
    );
    cmd.env("LISTEN_FDS", "2").env("LISTEN_FDNAMES", "unix:udp");
    let (ufd, dfd) = (unix.as_raw_fd(), udp.as_raw_fd());
    // SAFETY: only async-signal-safe calls (fcntl, dup2) in the forked child, on descriptors
    // this process owns: first above the low numbers, then to 3 and 4 (without close-on-exec,
    // as systemd passes them).
    unsafe {
        cmd.pre_exec(move || {
            let a = libc::fcntl(ufd, libc::F_DUPFD, 100);
            let b = libc::fcntl(dfd, libc::F_DUPFD, 100);
            if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut obs = spawn(cmd, &socket);
    assert_eq!(obs.udp, Some(udp_addr), "the passed UDP socket is used");
    obs.wait_for_timed(
        &[
            "\"kind\":\"new\"",
            &format!("\"pid\":{me}"),
            "\"listener\":\"unix\"",
        ],
        Duration::from_secs(3),
    );
    obs.wait_for_timed(
        &["\"kind\":\"new\"", "\"pid\":6101", "\"listener\":\"udp0\""],
        Duration::from_secs(3),
    );
    assert!(obs.terminate().success());
    // The socket file belongs to the service manager: left in place.
    assert!(socket.exists());
}
