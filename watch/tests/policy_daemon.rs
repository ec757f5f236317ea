//! Classes, names, silences, reload and the status page against the REAL `varta-watch` daemon
//! with real agent processes (`varta agent`, started through symbolic links so each has its
//! own `comm`, which classes match on). Needs `cargo build -p varta-tools` first; the page test
//! needs `chromium` on `PATH`.

#[path = "common/page.rs"]
mod page;
#[path = "policy_support/mod.rs"]
mod policy_support;

use page::{agent_rows, attr, chromium, screenshot};
use policy_support::Agent;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(20);

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("varta-policy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn watch_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_varta-watch"))
}

/// The real daemon; stdout (JSON event lines) and stderr collected by threads.
struct Daemon {
    child: Child,
    socket: PathBuf,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

fn collect(r: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
}

impl Daemon {
    fn start(dir: &Dir, args: &[&str]) -> Daemon {
        let socket = dir.0.join("w.sock");
        let mut child = Command::new(watch_bin())
            .arg("--socket")
            .arg(&socket)
            .args(["--format", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (out, err) = (Arc::default(), Arc::default());
        collect(child.stdout.take().unwrap(), Arc::clone(&out));
        collect(child.stderr.take().unwrap(), Arc::clone(&err));
        let d = Daemon {
            child,
            socket,
            out,
            err,
        };
        d.wait_err("listening on");
        d
    }

    fn wait_err(&self, needle: &str) -> String {
        let end = Instant::now() + BOUND;
        loop {
            if let Some(l) = self.err.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(
                Instant::now() < end,
                "no stderr line with {needle:?}: {:?}",
                self.err.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The event lines (JSON) so far.
    fn events(&self) -> Vec<serde_json::Value> {
        self.out
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for an event line for which `pred` holds.
    fn wait_event(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let end = Instant::now() + BOUND;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(
                Instant::now() < end,
                "no event: {what}; events: {:?}",
                self.out.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(watch_bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap()
    }

    fn status(&self) -> serde_json::Value {
        let o = self.cli(&["status", "--json"]);
        assert!(o.status.success(), "{o:?}");
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Waits until the status shows `pred` for the agent `pid`.
    fn wait_agent(&self, pid: u32, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        let end = Instant::now() + BOUND;
        loop {
            let s = self.status();
            if s["agents"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["pid"] == pid && pred(a))
            {
                return;
            }
            assert!(Instant::now() < end, "agent {pid}: not {what}: {s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn prom_addr(&self) -> SocketAddr {
        let l = self.wait_err("metrics http://");
        let start = l.find("http://").unwrap() + 7;
        let end = start + l[start..].find('/').unwrap();
        l[start..end].parse().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real agent process whose `comm` is `name` (a symbolic link to `varta`).
fn stall_of(d: &Daemon, pid: u32) -> serde_json::Value {
    d.wait_event("stall", |e| e["kind"] == "stall" && e["pid"] == pid)
}

fn silent_ns(e: &serde_json::Value) -> u64 {
    e["at_ns"].as_u64().unwrap() - e["last_beat_ns"].as_u64().unwrap()
}

fn scrape(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    std::io::Write::write_all(
        &mut s,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn two_classes_each_agent_stalls_at_its_own_threshold_named_from_proc() {
    let dir = Dir::new("classes");
    let d = Daemon::start(
        &dir,
        &[
            "--threshold-ms",
            "1500",
            "--class",
            "fast:comm=fastpoke,threshold-ms=300,label.team=pumps",
            "--prom-addr",
            "127.0.0.1:0",
        ],
    );
    let fast = Agent::spawn(&dir.0, "fastpoke", &d.socket);
    let slow = Agent::spawn(&dir.0, "slowpoke", &d.socket);
    d.wait_agent(fast.pid(), "in class fast", |a| a["class"] == "fast");
    d.wait_agent(slow.pid(), "named", |a| a["name"] == "slowpoke");
    fast.freeze();
    slow.freeze();
    let f = stall_of(&d, fast.pid());
    let s = stall_of(&d, slow.pid());
    assert_eq!(silent_ns(&f), 300_000_000, "{f}");
    assert_eq!(silent_ns(&s), 1_500_000_000, "{s}");
    assert_eq!(
        (f["name"].as_str(), f["class"].as_str()),
        (Some("fastpoke"), Some("fast"))
    );
    assert_eq!(
        (s["name"].as_str(), s["class"].as_str()),
        (Some("slowpoke"), Some("default"))
    );

    let metrics = scrape(d.prom_addr(), "/metrics");
    let info = format!(
        "varta_agent_info{{pid=\"{}\",listener=\"unix\",name=\"fastpoke\",class=\"fast\"}} 1",
        fast.pid()
    );
    assert!(metrics.contains(&info), "{info} not in\n{metrics}");
    // The page and its API beside /metrics.
    let agents = scrape(d.prom_addr(), "/api/agents");
    assert!(agents.contains("\"class\":\"fast\""), "{agents}");
    let events = scrape(d.prom_addr(), "/api/events?since=0");
    assert!(events.contains("\"seq\":1,"), "{events}");
    assert!(events.contains("\"kind\":\"stall\""), "{events}");
    assert!(scrape(d.prom_addr(), "/api/events?since=x").starts_with("HTTP/1.1 400"));
    assert!(scrape(d.prom_addr(), "/").contains("<!doctype html>"));
}

#[test]
fn a_silenced_stall_is_shown_but_runs_no_recovery_and_the_cli_manages_silences() {
    let dir = Dir::new("silence");
    let marks = dir.0.join("marks");
    std::fs::create_dir(&marks).unwrap();
    let cmd = format!("/usr/bin/touch {}/recovered-{{pid}}", marks.display());
    let d = Daemon::start(&dir, &["--threshold-ms", "300", "--recovery-exec", &cmd]);
    let quiet = Agent::spawn(&dir.0, "quietpoke", &d.socket);
    let loud = Agent::spawn(&dir.0, "loudpoke", &d.socket);
    d.wait_agent(quiet.pid(), "named", |a| a["name"] == "quietpoke");
    d.wait_agent(loud.pid(), "named", |a| a["name"] == "loudpoke");

    let o = d.cli(&[
        "silence",
        "add",
        "--match",
        "comm=quietpoke",
        "--for",
        "2h",
        "--comment",
        "disk swap",
    ]);
    assert!(o.status.success(), "{o:?}");
    let list = d.cli(&["silence", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("comm=quietpoke") && text.contains("disk swap"),
        "{text}"
    );
    d.wait_agent(quiet.pid(), "silenced", |a| a["silenced"] == true);

    quiet.freeze();
    loud.freeze();
    stall_of(&d, quiet.pid());
    stall_of(&d, loud.pid());
    let skipped = d.wait_event("silenced recovery line", |e| {
        e["kind"] == "recovery" && e["pid"] == quiet.pid()
    });
    assert!(
        skipped["detail"]
            .as_str()
            .unwrap()
            .contains("silenced by silence"),
        "{skipped}"
    );
    let ran = marks.join(format!("recovered-{}", loud.pid()));
    let end = Instant::now() + BOUND;
    while !ran.exists() {
        assert!(
            Instant::now() < end,
            "the unsilenced agent was not recovered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !marks.join(format!("recovered-{}", quiet.pid())).exists(),
        "a silenced agent was recovered"
    );
    // Shown as stalled and silenced.
    d.wait_agent(quiet.pid(), "stalled and silenced", |a| {
        a["state"] == "stalled" && a["silenced"] == true
    });
    let table = String::from_utf8_lossy(&d.cli(&["status"]).stdout).to_string();
    assert!(
        table.contains("quietpoke") && table.contains("stalled"),
        "{table}"
    );

    let id = d.status()["silences"][0]["id"].as_u64().unwrap();
    let o = d.cli(&["silence", "expire", &id.to_string()]);
    assert!(o.status.success(), "{o:?}");
    let s = d.status();
    assert!(s["silences"].as_array().unwrap().is_empty(), "{s}");
    let o = d.cli(&["silence", "expire", "999"]);
    assert!(!o.status.success(), "expiring an unknown silence must fail");
}

#[test]
fn sighup_reloads_class_thresholds_keeps_agents_and_refuses_a_bad_file() {
    let dir = Dir::new("reload");
    let cfg = |thr: u64| {
        format!(
            "threshold-ms = 5000\n[[class]]\nname = \"fast\"\nmatch = {{ comm = \"fastpoke\" }}\nthreshold-ms = {thr}\n"
        )
    };
    let file = dir.write("w.toml", &cfg(4000));
    let d = Daemon::start(&dir, &["--config", file.to_str().unwrap()]);
    let fast = Agent::spawn(&dir.0, "fastpoke", &d.socket);
    let other = Agent::spawn(&dir.0, "otherpoke", &d.socket);
    d.wait_agent(fast.pid(), "in class fast", |a| a["class"] == "fast");
    d.wait_agent(other.pid(), "named", |a| a["name"] == "otherpoke");
    let new_before = d.events().iter().filter(|e| e["kind"] == "new").count();

    // A changed threshold, through SIGHUP.
    dir.write("w.toml", &cfg(250));
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&d.child),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    d.wait_err("configuration reloaded");
    fast.freeze();
    let f = stall_of(&d, fast.pid());
    assert_eq!(silent_ns(&f), 250_000_000, "the new class threshold: {f}");
    let s = d.status();
    assert_eq!(s["total_agents"], 2, "agents kept: {s}");
    assert_eq!(
        d.events().iter().filter(|e| e["kind"] == "new").count(),
        new_before,
        "no agent was forgotten and re-learnt"
    );

    // A bad file, through `varta-watch reload`: refused with one line, the old one stays.
    dir.write(
        "w.toml",
        "threshold-ms = 5000\n[[class]]\nname = \"fast\"\nthreshold-ms = 0\n",
    );
    let o = d.cli(&["reload"]);
    assert!(o.status.success(), "{o:?}");
    let line = d.wait_err("reload refused");
    assert!(line.contains("threshold-ms must be at least 1"), "{line}");
    let s = d.status();
    assert_eq!(s["classes"], serde_json::json!(["default", "fast"]), "{s}");
    assert_eq!(s["total_agents"], 2);
    d.wait_agent(other.pid(), "still ok", |a| a["state"] == "ok");
}

#[test]
fn the_real_daemons_page_shows_a_frozen_agent_as_stalled_in_chromium() {
    let dir = Dir::new("page");
    let d = Daemon::start(
        &dir,
        &[
            "--threshold-ms",
            "500",
            "--class",
            "pumps:comm=pump*,threshold-ms=400,severity=warning",
            "--prom-addr",
            "127.0.0.1:0",
        ],
    );
    let agents = [
        Agent::spawn(&dir.0, "pump-north", &d.socket),
        Agent::spawn(&dir.0, "pump-south", &d.socket),
        Agent::spawn(&dir.0, "backup-sync", &d.socket),
        Agent::spawn(&dir.0, "ingest", &d.socket),
    ];
    for a in &agents {
        d.wait_agent(a.pid(), "named", |r| r["name"].is_string());
    }
    let o = d.cli(&[
        "silence",
        "add",
        "--match",
        "comm=backup-sync",
        "--for",
        "2h",
        "--comment",
        "disk swap",
    ]);
    assert!(o.status.success(), "{o:?}");
    let frozen = agents[1].pid();
    agents[1].freeze();
    // The page must show it stalled within a generous bound once the daemon says so.
    let url = format!("http://{}/", d.prom_addr());
    let end = Instant::now() + BOUND;
    let rows = loop {
        let dom = chromium(&["--dump-dom"], &url);
        let rows = agent_rows(&dom);
        if rows.first().and_then(|r| attr(r, "data-state")) == Some("stalled") {
            break rows;
        }
        assert!(
            Instant::now() < end,
            "page never showed a stalled agent: {rows:?}\n{dom}"
        );
    };
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(
        attr(&rows[0], "data-pid"),
        Some(frozen.to_string().as_str()),
        "the frozen agent first: {rows:?}"
    );
    for r in &rows[1..] {
        assert_eq!(attr(r, "data-state"), Some("ok"), "{rows:?}");
    }

    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/status-page-daemon.png");
    screenshot(&url, &shot);
}

#[test]
fn silences_survive_a_restart_through_the_state_file() {
    let dir = Dir::new("restart");
    let state = dir.0.join("state");
    let args = ["--state-file", state.to_str().unwrap()];
    let mut d = Daemon::start(&dir, &args);
    let o = d.cli(&[
        "silence",
        "add",
        "--match",
        "unit=backup.service",
        "--for",
        "2h",
        "--comment",
        "disk swap",
    ]);
    assert!(o.status.success(), "{o:?}");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&d.child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let st = d.child.wait().unwrap();
    assert!(st.success(), "{st:?}");
    drop(d);

    let d = Daemon::start(&dir, &args);
    let s = d.status();
    let silences = s["silences"].as_array().unwrap();
    assert_eq!(silences.len(), 1, "{s}");
    assert_eq!(silences[0]["comment"], "disk swap");
    let ends = silences[0]["ends_at_ms"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(ends > now + 3_500_000 && ends <= now + 7_200_000, "{s}");
    // New silences get new ids.
    let o = d.cli(&["silence", "add", "--for", "1m"]);
    assert!(o.status.success(), "{o:?}");
    let s = d.status();
    let ids: Vec<u64> = s["silences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "{s}");
}
