//! Real agent processes (`varta agent`, sending through `varta-client`) against the observer:
//! crashes, goodbyes, the recovery program, and the Unix socket's uid check.
//!
//! The observer is `varta observe`, the `varta-watch` daemon linked into this binary, so these
//! tests need no other build; each starts its own observer on its own socket and metrics port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_varta");

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("varta-tools-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Observer {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    prom: Option<SocketAddr>,
    socket: PathBuf,
}

impl Observer {
    /// Starts `varta observe --socket DIR/s.sock --format json --prom-addr 127.0.0.1:0 ARGS`:
    /// the observer daemon linked into `varta` (the same library code as `varta-watch`).
    fn start(dir: &Path, args: &[&str]) -> Observer {
        let socket = dir.join("s.sock");
        let mut child = Command::new(BIN)
            .arg("observe")
            .arg("--socket")
            .arg(&socket)
            .args(["--format", "json", "--prom-addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(first.contains("listening"), "observer failed: {first}");
        std::thread::spawn(move || for _ in err.lines() {});
        let addr_after = |tag: &str| -> Option<SocketAddr> {
            first
                .split(tag)
                .nth(1)
                .and_then(|s| s.split([',', ';', '/']).next())
                .and_then(|s| s.trim().parse().ok())
        };
        let prom = addr_after("http://");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l2.lock().unwrap().push((Instant::now(), line));
            }
        });
        Observer {
            child,
            lines,
            prom,
            socket,
        }
    }

    /// Waits for an event line containing every needle; returns it with its arrival time.
    fn wait_for(&self, needles: &[&str], timeout: Duration) -> (Instant, String) {
        let end = Instant::now() + timeout;
        loop {
            if let Some(x) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|(_, l)| needles.iter().all(|n| l.contains(n)))
            {
                return x.clone();
            }
            assert!(
                Instant::now() < end,
                "no line with {needles:?}; got {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn count(&self, needles: &[&str]) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    fn scrape(&self) -> String {
        let mut s = TcpStream::connect(self.prom.expect("metrics address")).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        body
    }

    /// The value of the sample whose line starts with `series` (name plus labels as printed).
    fn metric(&self, series: &str) -> f64 {
        let body = self.scrape();
        metric_in(&body, series)
    }

    /// Polls the metric until it equals `want` (the loop handles datagrams asynchronously).
    fn wait_metric(&self, series: &str, want: f64) {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.metric(series);
            if v == want {
                return;
            }
            assert!(
                Instant::now() < end,
                "{series} = {v}, want {want}\n{}",
                self.scrape()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The integer field `key` of a JSON event line.
fn num(line: &str, key: &str) -> Option<u64> {
    let rest = line.split(&format!("\"{key}\":")).nth(1)?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn metric_in(body: &str, series: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{body}"))
}

fn agent(obs: &Observer, args: &[&str]) -> Child {
    Command::new(BIN)
        .arg("agent")
        .arg("--socket")
        .arg(&obs.socket)
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
    let obs = Observer::start(
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
    let (_, crash) = obs.wait_for(
        &["\"kind\":\"crash\"", &format!("\"pid\":{cpid}")],
        Duration::from_secs(3),
    );
    let (_, bye) = obs.wait_for(
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
    obs.wait_for(
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
            .arg(&obs.socket)
            .args(["--interval-ms", "10", "--count", "2"])
            .uid(nobody)
            .gid(nobody)
            .status()
            .unwrap();
        assert!(status.success());
        if allow {
            obs.wait_metric("varta_frames_accepted_total", 2.0);
        } else {
            obs.wait_metric("varta_rejections_total{reason=\"uid_refused\"}", 2.0);
            assert_eq!(obs.metric("varta_frames_accepted_total"), 0.0);
        }
    }
}
