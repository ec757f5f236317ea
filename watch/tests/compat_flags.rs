//! Drop-in for `varta-watch` 0.2: every flag of its command line is accepted by the real
//! binary and has its documented effect, where the effect shows cheaply (a file, a status
//! code, a counter, an exit); where it does not, the row says where it is tested.
//!

mod compat_support;

use std::net::UdpSocket;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use compat_support::{run_to_exit, sample, tmpdir, wait_until, write_file, Observer};
use vlp_core::{Frame, Status};

/// Every flag of the original observer's `--help` (its 53 lines less `--help`).
const LIST: &[&str] = &[
    "socket",
    "threshold-ms",
    "socket-mode",
    "recovery-exec",
    "recovery-exec-file",
    "recovery-debounce-ms",
    "recovery-env",
    "recovery-inherit-env",
    "recovery-timeout-ms",
    "recovery-capture-stdio",
    "recovery-capture-bytes",
    "recovery-audit-file",
    "recovery-audit-max-bytes",
    "recovery-audit-sync-every",
    "audit-fsync-budget-ms",
    "audit-sync-interval-ms",
    "audit-rotation-budget-ms",
    "export-file",
    "export-file-max-bytes",
    "export-file-sync-every",
    "prom-addr",
    "prom-token-file",
    "prom-rate-limit-per-sec",
    "prom-rate-limit-burst",
    "shutdown-grace-ms",
    "read-timeout-ms",
    "tracker-capacity",
    "eviction-scan-window",
    "tracker-eviction-policy",
    "clock-source",
    "signal-handler-mode",
    "shutdown-after-secs",
    "udp-port",
    "udp-bind-addr",
    "key-file",
    "accepted-key-file",
    "master-key-file",
    "max-beat-rate",
    "global-beat-rate",
    "global-beat-burst",
    "uds-rcvbuf-bytes",
    "heartbeat-file",
    "self-watchdog-secs",
    "hw-watchdog",
    "i-accept-plaintext-udp",
    "i-accept-secure-udp-non-loopback",
    "secure-udp-i-accept-recovery-on-unauthenticated-transport",
    "plaintext-udp-i-accept-recovery-on-unauthenticated-transport",
    "allow-cross-namespace-agents",
    "strict-namespace-check",
    "iteration-budget-ms",
    "scrape-budget-ms",
];

const TOKEN: &str = "5c1f0b7e2a9d4c3b8e6f1a0d7c2b9e4f3a8d1c6b0e5f2a7d9c4b1e8f3a6d0c2b";

fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn beat(pid: u32, nonce: u64) -> [u8; 32] {
    Frame::new(Status::Ok, pid, mono_ns(), nonce, 0)
        .unwrap()
        .emit()
}

/// `--socket DIR/s.sock --prom-addr 127.0.0.1:0` and `args`.
fn argv(dir: &Path, args: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--socket".to_string(),
        dir.join("s.sock").display().to_string(),
        "--prom-addr".to_string(),
        "127.0.0.1:0".to_string(),
    ];
    v.extend(args.iter().map(|s| (*s).to_string()));
    v
}

fn start(dir: &Path, args: &[&str]) -> Observer {
    Observer::start(&argv(dir, args))
}

fn send_unix(dir: &Path, frame: &[u8]) {
    let c = UnixDatagram::unbound().unwrap();
    c.send_to(frame, dir.join("s.sock")).unwrap();
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Starts, and checks the metrics endpoint answers (the flag is accepted and harmless).
fn accepted(dir: &Path, args: &[&str]) -> Observer {
    let obs = start(dir, args);
    let (code, _) = obs.get("/metrics", None);
    assert_eq!(code, 200);
    obs
}

fn key(dir: &Path, name: &str, byte: &str) -> String {
    p(&write_file(dir, name, &byte.repeat(32), 0o600))
}

/// The same stall, recovered by `recovery` args; returns the observer after the first
/// recovery event line.
fn stall_with(dir: &Path, recovery: &[&str]) -> Observer {
    let mut args = vec!["--threshold-ms", "100"];
    args.extend_from_slice(recovery);
    let obs = start(dir, &args);
    send_unix(dir, &beat(std::process::id(), 1));
    obs.wait_line(&["\"kind\":\"stall\""]);
    obs.wait_line(&["\"kind\":\"recovery\""]);
    obs
}

/// Three plaintext UDP agents beat, go silent and stall; a fourth then arrives at a full
/// table (capacity 4, of which 3 for unproven identities). Returns the scrape after it.
fn fourth_at_full_table(dir: &Path, policy: &[&str]) -> String {
    let mut args = vec![
        "--threshold-ms",
        "100",
        "--tracker-capacity",
        "4",
        "--udp-port",
        "0",
        "--allow-plaintext-udp",
    ];
    args.extend_from_slice(policy);
    let obs = start(dir, &args);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = obs.udp.expect("udp address");
    for pid in 1001..=1003 {
        udp.send_to(&beat(pid, 1), to).unwrap();
    }
    wait_until("three stalls", || {
        (obs.count_lines(&["\"kind\":\"stall\""]) == 3).then_some(())
    });
    udp.send_to(&beat(1004, 1), to).unwrap();
    obs.wait_scrape(None, "the fourth beat handled", |b| {
        sample(b, "varta_frames_accepted_total").unwrap_or(0.0)
            + sample(b, "varta_tracker_capacity_exceeded_total").unwrap_or(0.0)
            >= 4.0
    })
}

type Check = Box<dyn Fn(&Path)>;

/// One row per accepted flag: the flag and the check of its effect.
fn cases() -> Vec<(&'static str, Check)> {
    let no_effect = |flag: &'static str, value: &'static str| -> Check {
        Box::new(move |d: &Path| {
            let obs = accepted(d, &[&format!("--{flag}"), value]);
            obs.wait_stderr(&format!("--{flag} is accepted for compatibility"));
        })
    };
    let covered = |args: &'static [&'static str]| -> Check {
        Box::new(move |d: &Path| {
            let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &p(d))).collect();
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            accepted(d, &refs);
        })
    };
    vec![
        // Built, and tested for their effect, elsewhere: hardening_output (export rotation and
        // sync), hardening_fairness (beat rate limits), ops_watchdog (hardware watchdog).
        (
            "export-file-max-bytes",
            covered(&[
                "--export-file",
                "{dir}/e.tsv",
                "--export-file-max-bytes",
                "65536",
            ]),
        ),
        (
            "export-file-sync-every",
            covered(&[
                "--export-file",
                "{dir}/e.tsv",
                "--export-file-sync-every",
                "1",
            ]),
        ),
        ("max-beat-rate", covered(&["--max-beat-rate", "100"])),
        ("global-beat-rate", covered(&["--global-beat-rate", "5000"])),
        (
            "global-beat-burst",
            covered(&["--global-beat-rate", "5000", "--global-beat-burst", "10000"]),
        ),
        ("hw-watchdog", covered(&["--hw-watchdog", "/dev/null"])),
        // The audit budgets' effects are unit-tested in recovery::audit_log.
        (
            "audit-sync-interval-ms",
            covered(&[
                "--recovery-exec",
                "/bin/true",
                "--recovery-audit-file",
                "{dir}/audit.log",
                "--audit-sync-interval-ms",
                "100",
            ]),
        ),
        (
            "audit-fsync-budget-ms",
            covered(&[
                "--recovery-exec",
                "/bin/true",
                "--recovery-audit-file",
                "{dir}/audit.log",
                "--audit-fsync-budget-ms",
                "50",
            ]),
        ),
        (
            "audit-rotation-budget-ms",
            covered(&[
                "--recovery-exec",
                "/bin/true",
                "--recovery-audit-file",
                "{dir}/audit.log",
                "--audit-rotation-budget-ms",
                "50",
            ]),
        ),
        (
            "socket",
            Box::new(|d: &Path| {
                let s = d.join("other.sock");
                let _obs = Observer::start(&[
                    "--socket".into(),
                    p(&s),
                    "--prom-addr".into(),
                    "127.0.0.1:0".into(),
                ]);
                assert!(std::fs::metadata(&s).unwrap().file_type().is_socket());
            }),
        ),
        (
            "threshold-ms",
            Box::new(|d: &Path| {
                let obs = start(d, &["--threshold-ms", "100"]);
                send_unix(d, &beat(std::process::id(), 1));
                let line = obs.wait_line(&["\"kind\":\"stall\""]);
                assert!(line.contains(&format!("\"pid\":{}", std::process::id())));
            }),
        ),
        (
            "socket-mode",
            Box::new(|d: &Path| {
                let _obs = start(d, &["--socket-mode", "0640"]);
                let mode = std::fs::metadata(d.join("s.sock"))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o640);
            }),
        ),
        (
            "recovery-exec",
            Box::new(|d: &Path| {
                let cmd = format!("/usr/bin/touch {}/ran-{{pid}}", p(d));
                let _obs = stall_with(d, &["--recovery-exec", &cmd]);
                let f = d.join(format!("ran-{}", std::process::id()));
                wait_until("the recovery command's file", || f.exists().then_some(()));
            }),
        ),
        (
            "recovery-exec-file",
            Box::new(|d: &Path| {
                let cmd = write_file(
                    d,
                    "cmd",
                    &format!("/usr/bin/touch {}/file-{{pid}}\n", p(d)),
                    0o600,
                );
                let _obs = stall_with(d, &["--recovery-exec-file", &p(&cmd)]);
                let f = d.join(format!("file-{}", std::process::id()));
                wait_until("the recovery command's file", || f.exists().then_some(()));
            }),
        ),
        (
            "recovery-debounce-ms",
            covered(&[
                "--recovery-exec",
                "/bin/true",
                "--recovery-debounce-ms",
                "500",
            ]),
        ),
        (
            "recovery-env",
            Box::new(|d: &Path| {
                // The command runs without a shell; `sh -c` is the program here.
                let out = d.join("env");
                let _obs = stall_with(
                    d,
                    &[
                        "--recovery-exec",
                        &format!("/bin/sh -c env>{}", p(&out)),
                        "--recovery-env",
                        "VARTA_T=seen",
                    ],
                );
                let text = wait_until("the child's environment", || {
                    std::fs::read_to_string(&out)
                        .ok()
                        .filter(|t| t.contains("VARTA_T"))
                });
                assert!(text.contains("VARTA_T=seen"), "{text}");
            }),
        ),
        (
            "recovery-inherit-env",
            covered(&["--recovery-exec", "/bin/true", "--recovery-inherit-env"]),
        ),
        (
            "recovery-timeout-ms",
            covered(&[
                "--recovery-exec",
                "/bin/true",
                "--recovery-timeout-ms",
                "100",
            ]),
        ),
        (
            "recovery-capture-stdio",
            covered(&["--recovery-exec", "/bin/true", "--recovery-capture-stdio"]),
        ),
        (
            "recovery-capture-bytes",
            covered(&[
                "--recovery-exec",
                "/bin/true",
                "--recovery-capture-stdio",
                "--recovery-capture-bytes",
                "512",
            ]),
        ),
        (
            "recovery-audit-file",
            Box::new(|d: &Path| {
                let audit = d.join("audit");
                let _obs = stall_with(
                    d,
                    &[
                        "--recovery-exec",
                        "/bin/true",
                        "--recovery-audit-file",
                        &p(&audit),
                    ],
                );
                wait_until("an audit record", || {
                    std::fs::metadata(&audit).ok().filter(|m| m.len() > 0)
                });
                assert_eq!(
                    std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777,
                    0o600
                );
            }),
        ),
        (
            "recovery-audit-max-bytes",
            covered(&[
                "--recovery-exec",
                "/bin/true",
                "--recovery-audit-file",
                "{dir}/a",
                "--recovery-audit-max-bytes",
                "65536",
            ]),
        ),
        (
            "recovery-audit-sync-every",
            covered(&[
                "--recovery-exec",
                "/bin/true",
                "--recovery-audit-file",
                "{dir}/a",
                "--recovery-audit-sync-every",
                "2",
            ]),
        ),
        (
            "export-file",
            Box::new(|d: &Path| {
                let f = d.join("events.tsv");
                let _obs = start(d, &["--export-file", &p(&f)]);
                send_unix(d, &beat(std::process::id(), 1));
                wait_until("an export line naming our pid", || {
                    std::fs::read_to_string(&f)
                        .ok()
                        .filter(|t| t.contains(&format!("\t{}\t", std::process::id())))
                });
            }),
        ),
        (
            "prom-addr",
            Box::new(|d: &Path| {
                let obs = start(d, &[]);
                assert!(obs.first.contains("http://127.0.0.1:"), "{}", obs.first);
                assert_eq!(obs.get("/metrics", None).0, 200);
            }),
        ),
        (
            "prom-token-file",
            Box::new(|d: &Path| {
                let t = write_file(d, "token", &format!("{TOKEN}\n"), 0o600);
                let obs = start(d, &["--prom-token-file", &p(&t)]);
                assert_eq!(obs.get("/metrics", None).0, 401);
                let wrong = TOKEN.replace('5', "6");
                assert_eq!(obs.get("/metrics", Some(&wrong)).0, 401);
                assert_eq!(obs.get("/other", None).0, 401, "every path needs the token");
                assert_eq!(obs.get("/metrics", Some(TOKEN)).0, 200);
                let body = obs.get("/metrics", Some(TOKEN)).1;
                assert_eq!(sample(&body, "varta_prom_auth_failures_total"), Some(3.0));
                // An unsafe token file is refused like a key file.
                let open = write_file(d, "open-token", TOKEN, 0o644);
                let (st, err) = run_to_exit(&argv(d, &["--prom-token-file", &p(&open)]));
                assert_eq!(st.code(), Some(2), "{err}");
                assert!(err.contains("--prom-token-file"), "{err}");
            }),
        ),
        (
            "prom-rate-limit-per-sec",
            Box::new(|d: &Path| {
                let obs = start(d, &["--prom-rate-limit-per-sec", "1"]);
                let codes: Vec<u16> = (0..10).map(|_| obs.get("/metrics", None).0).collect();
                assert!(codes.contains(&429), "{codes:?}");
                let body = obs.wait_scrape(None, "a scrape after the bucket refills", |_| true);
                assert!(sample(&body, "varta_prom_rate_limited_total").unwrap() >= 1.0);
            }),
        ),
        (
            "prom-rate-limit-burst",
            Box::new(|d: &Path| {
                let obs = start(
                    d,
                    &[
                        "--prom-rate-limit-per-sec",
                        "1",
                        "--prom-rate-limit-burst",
                        "5",
                    ],
                );
                let codes: Vec<u16> = (0..12).map(|_| obs.get("/metrics", None).0).collect();
                assert!(
                    codes.iter().filter(|c| **c == 200).count() >= 5,
                    "{codes:?}"
                );
                assert!(codes.contains(&429), "{codes:?}");
            }),
        ),
        (
            "shutdown-grace-ms",
            covered(&["--shutdown-grace-ms", "200"]),
        ),
        ("read-timeout-ms", no_effect("read-timeout-ms", "100")),
        (
            "tracker-capacity",
            Box::new(|d: &Path| {
                let obs = start(d, &["--tracker-capacity", "3"]);
                assert_eq!(
                    sample(&obs.get("/metrics", None).1, "varta_tracker_capacity"),
                    Some(3.0)
                );
            }),
        ),
        (
            "eviction-scan-window",
            no_effect("eviction-scan-window", "64"),
        ),
        (
            "tracker-eviction-policy",
            Box::new(|d: &Path| {
                let ours = fourth_at_full_table(d, &[]);
                assert_eq!(
                    sample(&ours, "varta_tracker_capacity_exceeded_total"),
                    Some(1.0),
                    "{ours}"
                );
                let strict = fourth_at_full_table(d, &["--tracker-eviction-policy", "strict"]);
                assert_eq!(
                    sample(&strict, "varta_tracker_capacity_exceeded_total"),
                    Some(0.0),
                    "{strict}"
                );
                assert_eq!(
                    sample(&strict, "varta_tracker_evicted_total"),
                    Some(1.0),
                    "{strict}"
                );
                assert_eq!(
                    sample(&strict, "varta_beats_total{pid=\"1004\",listener=\"udp0\"}"),
                    Some(1.0),
                    "{strict}"
                );
                let balanced = fourth_at_full_table(d, &["--tracker-eviction-policy", "balanced"]);
                assert_eq!(
                    sample(&balanced, "varta_tracker_evicted_total"),
                    Some(1.0),
                    "{balanced}"
                );
            }),
        ),
        (
            "clock-source",
            Box::new(|d: &Path| {
                // The difference (a suspend counts as silence) needs a suspend; here: the boot-time
                // clock drives stall detection.
                let obs = start(d, &["--clock-source", "boottime", "--threshold-ms", "100"]);
                send_unix(d, &beat(std::process::id(), 1));
                obs.wait_line(&["\"kind\":\"stall\""]);
                let (st, err) = run_to_exit(&argv(d, &["--clock-source", "realtime"]));
                assert_eq!(st.code(), Some(2), "{err}");
            }),
        ),
        (
            "signal-handler-mode",
            no_effect("signal-handler-mode", "libc"),
        ),
        (
            "shutdown-after-secs",
            Box::new(|d: &Path| {
                let mut obs = start(d, &["--shutdown-after-secs", "1"]);
                assert!(obs.wait_exit().success());
            }),
        ),
        (
            "udp-port",
            Box::new(|d: &Path| {
                let obs = start(d, &["--udp-port", "0", "--allow-plaintext-udp"]);
                let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
                udp.send_to(&beat(77, 1), obs.udp.expect("udp address"))
                    .unwrap();
                obs.wait_scrape(None, "the UDP beat", |b| {
                    sample(b, "varta_beats_total{pid=\"77\",listener=\"udp0\"}") == Some(1.0)
                });
            }),
        ),
        (
            "udp-bind-addr",
            Box::new(|d: &Path| {
                let obs = start(
                    d,
                    &[
                        "--udp-port",
                        "0",
                        "--allow-plaintext-udp",
                        "--udp-bind-addr",
                        "127.0.0.2",
                    ],
                );
                assert!(obs.first.contains("udp 127.0.0.2:"), "{}", obs.first);
            }),
        ),
        (
            "key-file",
            Box::new(|d: &Path| {
                let k = key(d, "k", "11");
                accepted(d, &["--udp-port", "0", "--key-file", &k]);
            }),
        ),
        (
            "accepted-key-file",
            Box::new(|d: &Path| {
                let k = key(d, "k2", "22");
                accepted(d, &["--udp-port", "0", "--accepted-key-file", &k]);
            }),
        ),
        (
            "master-key-file",
            Box::new(|d: &Path| {
                let k = key(d, "km", "33");
                accepted(d, &["--udp-port", "0", "--master-key-file", &k]);
            }),
        ),
        (
            "uds-rcvbuf-bytes",
            Box::new(|d: &Path| {
                let obs = start(d, &["--uds-rcvbuf-bytes", "65536"]);
                // Linux reports twice what was set (its bookkeeping overhead).
                assert_eq!(
                    sample(
                        &obs.get("/metrics", None).1,
                        "varta_observer_uds_rcvbuf_bytes"
                    ),
                    Some(131_072.0)
                );
            }),
        ),
        (
            "heartbeat-file",
            Box::new(|d: &Path| {
                let f = d.join("hb");
                let _obs = start(d, &["--heartbeat-file", &p(&f)]);
                let counter = || -> Option<u64> {
                    let t = std::fs::read_to_string(&f).ok()?;
                    let mut parts = t.trim_end().split(' ');
                    let n = parts.next()?.parse().ok()?;
                    let ts: f64 = parts.next()?.parse().ok()?;
                    assert!(ts > 1.0e9, "a Unix time: {t}");
                    assert_eq!(t.lines().count(), 1, "one line: {t:?}");
                    Some(n)
                };
                let first = wait_until("a heartbeat line", counter);
                // An idle observer still turns (at least once a second) while it keeps the file.
                wait_until("the counter to grow", || counter().filter(|n| *n > first));
            }),
        ),
        (
            "self-watchdog-secs",
            covered(&["--self-watchdog-secs", "5"]),
        ),
        (
            "i-accept-plaintext-udp",
            Box::new(|d: &Path| {
                let (st, err) = run_to_exit(&argv(d, &["--udp-port", "0"]));
                assert_eq!(st.code(), Some(2), "plain UDP needs the opt-in: {err}");
                let obs = start(d, &["--udp-port", "0", "--i-accept-plaintext-udp"]);
                let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
                udp.send_to(&beat(78, 1), obs.udp.expect("udp address"))
                    .unwrap();
                obs.wait_scrape(None, "the UDP beat", |b| {
                    sample(b, "varta_beats_total{pid=\"78\",listener=\"udp0\"}") == Some(1.0)
                });
            }),
        ),
        (
            "i-accept-secure-udp-non-loopback",
            Box::new(|d: &Path| {
                let k = key(d, "k", "11");
                let off = [
                    "--udp-port",
                    "0",
                    "--key-file",
                    &k,
                    "--udp-bind-addr",
                    "0.0.0.0",
                ];
                let (st, err) = run_to_exit(&argv(d, &off));
                assert_eq!(st.code(), Some(2), "{err}");
                assert!(err.contains("--i-accept-secure-udp-non-loopback"), "{err}");
                let mut with = off.to_vec();
                with.push("--i-accept-secure-udp-non-loopback");
                accepted(d, &with);
            }),
        ),
        (
            "secure-udp-i-accept-recovery-on-unauthenticated-transport",
            covered(&[
                "--recovery-exec",
                "/bin/true",
                "--secure-udp-i-accept-recovery-on-unauthenticated-transport",
            ]),
        ),
        (
            "plaintext-udp-i-accept-recovery-on-unauthenticated-transport",
            covered(&[
                "--recovery-exec",
                "/bin/true",
                "--plaintext-udp-i-accept-recovery-on-unauthenticated-transport",
            ]),
        ),
        (
            "allow-cross-namespace-agents",
            Box::new(|d: &Path| {
                let refused = namespaced_agent(d, &[], |b| {
                    sample(b, "varta_rejections_total{reason=\"cross_namespace\"}").unwrap_or(0.0)
                        >= 5.0
                });
                assert!(
                    sample(
                        &refused,
                        "varta_rejections_total{reason=\"cross_namespace\"}"
                    )
                    .unwrap()
                        >= 1.0,
                    "{refused}"
                );
                assert_eq!(sample(&refused, "varta_watch_pids_tracked"), Some(0.0));
                let allowed = namespaced_agent(
                    d,
                    &[
                        "--allow-cross-namespace-agents",
                        "--threshold-ms",
                        "300",
                        "--recovery-exec",
                        "/bin/true",
                    ],
                    |b| {
                        sample(
                            b,
                            "varta_recovery_refused_total{reason=\"cross_namespace_agent\"}",
                        )
                        .unwrap_or(0.0)
                            >= 1.0
                    },
                );
                // Tracked under the pid we see, and never recovered: its pid means another
                // process in its own namespace.
                assert!(
                    sample(
                        &allowed,
                        "varta_recovery_refused_total{reason=\"cross_namespace_agent\"}"
                    )
                    .unwrap()
                        >= 1.0,
                    "{allowed}"
                );
                assert_eq!(
                    sample(&allowed, "varta_watch_pids_tracked"),
                    Some(1.0),
                    "{allowed}"
                );
                assert_eq!(
                    sample(
                        &allowed,
                        "varta_rejections_total{reason=\"cross_namespace\"}"
                    ),
                    Some(0.0)
                );
            }),
        ),
        (
            "strict-namespace-check",
            Box::new(|d: &Path| {
                // An observer in a PID namespace of its own: our pid has no number there (the
                // kernel attests pid 0), so its namespace cannot be read.
                let lenient = observer_in_namespace(d, &[]);
                assert_eq!(
                    sample(
                        &lenient,
                        "varta_rejections_total{reason=\"namespace_unknown\"}"
                    ),
                    Some(0.0),
                    "{lenient}"
                );
                assert!(
                    sample(&lenient, "varta_frame_auth_failures_total").unwrap() >= 1.0,
                    "{lenient}"
                );
                let strict = observer_in_namespace(d, &["--strict-namespace-check"]);
                assert!(
                    sample(
                        &strict,
                        "varta_rejections_total{reason=\"namespace_unknown\"}"
                    )
                    .unwrap()
                        >= 1.0,
                    "{strict}"
                );
            }),
        ),
        (
            "iteration-budget-ms",
            Box::new(|d: &Path| {
                let obs = start(d, &["--iteration-budget-ms", "4"]);
                let body = obs.wait_scrape(None, "a loop turn recorded", |b| {
                    sample(b, "varta_observer_iteration_seconds_count").unwrap_or(0.0) >= 1.0
                });
                // Buckets are scaled to the budget: one ends at exactly 4 ms.
                assert!(
                    body.contains("varta_observer_iteration_seconds_bucket{le=\"0.004\"}"),
                    "{body}"
                );
            }),
        ),
        ("scrape-budget-ms", no_effect("scrape-budget-ms", "250")),
    ]
}

fn unshare_available() -> bool {
    Command::new("unshare")
        .args(["-Urpf", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A real agent (`varta agent`) in a PID namespace of its own beats 5 times, then hangs, to
/// an observer started with `args`; returns the first scrape where `done` holds.
fn namespaced_agent(d: &Path, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let obs = start(d, args);
    let varta = PathBuf::from(compat_support::BIN).with_file_name("varta");
    assert!(varta.exists(), "build it first: cargo build -p varta-tools");
    // Through `sh`, which is pid 1 there: pid 1 is not a valid agent pid (VLP).
    let script = format!(
        "{} agent --socket {} --interval-ms 20 --hang-after 5; exit 0",
        p(&varta),
        p(&d.join("s.sock"))
    );
    let mut agent = Command::new("unshare")
        .args(["-Urpf", "--kill-child", "--", "/bin/sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let body = obs.wait_scrape(None, "the namespaced agent's beats handled", done);
    let _ = agent.kill();
    let _ = agent.wait();
    body
}

/// An observer in a PID (and user) namespace of its own, with `args`; we beat to it from
/// outside; returns a scrape once the beat was handled.
fn observer_in_namespace(d: &Path, args: &[&str]) -> String {
    let sock = d.join("ns.sock");
    let _ = std::fs::remove_file(&sock);
    let mut child = Command::new("unshare")
        .args(["-Urpf", "--"])
        .arg(compat_support::BIN)
        .args([
            "--socket",
            &p(&sock),
            "--prom-addr",
            "127.0.0.1:0",
            "--format",
            "json",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first).unwrap();
    let prom: std::net::SocketAddr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("observer in a namespace: {first}"));
    let c = UnixDatagram::unbound().unwrap();
    c.send_to(&beat(std::process::id(), 1), &sock).unwrap();
    let body = wait_until("the beat handled", || {
        let (_, b) = compat_support::http_get(prom, "/metrics", None);
        let n: f64 = [
            "varta_frame_auth_failures_total",
            "varta_rejections_total{reason=\"namespace_unknown\"}",
        ]
        .iter()
        .filter_map(|s| sample(&b, s))
        .sum();
        (n >= 1.0).then_some(b)
    });
    let _ = child.kill();
    let _ = child.wait();
    body
}

#[test]
fn every_flag_of_the_list_is_accepted_and_has_its_effect() {
    assert!(
        unshare_available(),
        "these checks need unprivileged user and PID namespaces (`unshare -Urpf true`)"
    );
    let cases = cases();
    let mut seen: Vec<&str> = cases.iter().map(|(f, _)| *f).collect();
    seen.sort_unstable();
    let mut list = LIST.to_vec();
    list.sort_unstable();
    assert_eq!(seen, list, "every flag of the list is a row, once");
    for (flag, check) in &cases {
        let dir = tmpdir(flag);
        eprintln!("--{flag}");
        check(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
