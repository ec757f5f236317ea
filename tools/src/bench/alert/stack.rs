//! The operations stack on loopback, for `varta bench alert` and the daemon's operations tests
//! (`watch/tests/ops_support` includes this file): a webhook receiver, a real Alertmanager and a
//! real Prometheus (Debian's `prometheus-alertmanager` and `prometheus`), the real observer
//! with its JSON event lines, and real agents that can be frozen (SIGSTOP) and thawed.
//!
//! Everything listens on 127.0.0.1 and is stopped on drop. Waits are bounded
//! ([`wait`] panics with what it waited for).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const AM_BIN: &str = "prometheus-alertmanager";
const PROM_BIN: &str = "prometheus";

/// A fresh temporary directory for one run.
pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("varta-ops-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    d
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// `GET path` on `addr`: status and body, or `None` if nobody answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
///
/// # Panics
/// At `limit`, naming `what`.
pub fn wait<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every notification body a [`Webhook`] received, with its arrival time.
pub type Notes = Arc<Mutex<Vec<(Instant, Value)>>>;

/// A webhook receiver: every POSTed JSON body, with its arrival time.
pub struct Webhook {
    /// Its URL (any path is accepted).
    pub url: String,
    /// Every notification body, with its arrival time.
    pub got: Notes,
}

impl Webhook {
    /// Listens on a free loopback port.
    pub fn start() -> Webhook {
        let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("webhook: {e}"));
        let url = match l.local_addr() {
            Ok(a) => format!("http://{a}/varta"),
            Err(e) => panic!("webhook: {e}"),
        };
        let got: Notes = Arc::default();
        let g = Arc::clone(&got);
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let g = Arc::clone(&g);
                std::thread::spawn(move || serve_webhook(conn, &g));
            }
        });
        Webhook { url, got }
    }

    /// Notifications so far whose alerts include one with `alertname` and `agent`.
    pub fn about(&self, alertname: &str, agent: &str) -> Vec<(Instant, Value)> {
        self.got
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, n)| {
                n["alerts"].as_array().is_some_and(|a| {
                    a.iter().any(|x| {
                        x["labels"]["alertname"] == alertname && x["labels"]["agent"] == agent
                    })
                })
            })
            .cloned()
            .collect()
    }

    /// Waits for a notification about `alertname`/`agent` with `status` (`firing`/`resolved`).
    pub fn wait_for(&self, alertname: &str, agent: &str, status: &str, limit: Duration) -> Value {
        wait(
            limit,
            &format!("a {status} notification for {agent}"),
            || {
                self.about(alertname, agent)
                    .into_iter()
                    .find(|(_, n)| n["status"] == status)
                    .map(|(_, n)| n)
            },
        )
    }
}

/// Reads HTTP/1.1 requests (keep-alive) and records their JSON bodies.
fn serve_webhook(conn: TcpStream, got: &Mutex<Vec<(Instant, Value)>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len.min(1 << 20)];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(v) = serde_json::from_slice(&body) {
            got.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((Instant::now(), v));
        }
        if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// The shipped routing (`deploy/alertmanager/alertmanager.yml` under `root`) with the
/// receiver's URL and a 1 s group interval, written into `dir`.
pub fn write_am_config(root: &Path, dir: &Path, webhook: &Webhook) -> PathBuf {
    let shipped_path = root.join("deploy/alertmanager/alertmanager.yml");
    let shipped = std::fs::read_to_string(&shipped_path)
        .unwrap_or_else(|e| panic!("{}: {e}", shipped_path.display()));
    assert!(
        shipped.contains("http://127.0.0.1:9099/varta") && shipped.contains("group_interval: 30s"),
        "{}: the webhook example or the group interval changed",
        shipped_path.display()
    );
    let cfg = shipped
        .replace("http://127.0.0.1:9099/varta", &webhook.url)
        .replace("group_interval: 30s", "group_interval: 1s");
    let path = dir.join("alertmanager.yml");
    std::fs::write(&path, cfg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// A real Alertmanager on loopback, killed on drop.
pub struct Alertmanager {
    child: Child,
    /// Its web address.
    pub web: SocketAddr,
    /// Its base URL (`--alertmanager-url`).
    pub url: String,
}

fn log_file(path: &Path) -> Stdio {
    std::fs::File::create(path).map_or_else(|_| Stdio::null(), Stdio::from)
}

impl Alertmanager {
    /// Starts one instance; `cluster`: its own gossip port and its peers' (`None`: no cluster).
    pub fn start(dir: &Path, config: &Path, cluster: Option<(u16, &[u16])>) -> Alertmanager {
        let port = free_port();
        let web = SocketAddr::from(([127, 0, 0, 1], port));
        let storage = dir.join(format!("am-{port}"));
        std::fs::create_dir_all(&storage).unwrap_or_else(|e| panic!("{}: {e}", storage.display()));
        let mut cmd = Command::new(AM_BIN);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&dir.join(format!("am-{port}.log"))));
        match cluster {
            None => {
                cmd.arg("--cluster.listen-address=");
            }
            Some((own, peers)) => {
                cmd.arg(format!("--cluster.listen-address=127.0.0.1:{own}"))
                    .arg(format!("--cluster.advertise-address=127.0.0.1:{own}"))
                    .args(["--cluster.settle-timeout=2s", "--cluster.peer-timeout=1s"])
                    .arg("--cluster.gossip-interval=50ms");
                for p in peers {
                    cmd.arg(format!("--cluster.peer=127.0.0.1:{p}"));
                }
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run {AM_BIN} ({e}): install Debian's prometheus-alertmanager")
        });
        let am = Alertmanager {
            child,
            web,
            url: format!("http://{web}"),
        };
        wait(Duration::from_secs(20), "Alertmanager /-/ready", || {
            http_get(web, "/-/ready").filter(|(s, _)| *s == 200)
        });
        am
    }

    /// Waits until the gossip cluster is ready with `n` members.
    pub fn wait_cluster(&self, n: usize) {
        wait(
            Duration::from_secs(30),
            "a ready Alertmanager cluster",
            || {
                let (_, body) = http_get(self.web, "/api/v2/status")?;
                let v: Value = serde_json::from_str(&body).ok()?;
                let c = &v["cluster"];
                (c["status"] == "ready" && c["peers"].as_array()?.len() == n).then_some(())
            },
        );
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Prometheus on loopback, scraping `targets` as job `varta-watch` every second with the
/// shipped rules (`deploy/prometheus/varta.rules.yml` under `root`), evaluating every second
/// and alerting to `alertmanagers`; killed on drop.
pub struct Prometheus {
    child: Child,
    /// Its web address.
    pub web: SocketAddr,
}

impl Prometheus {
    /// Starts it and waits until it is ready.
    pub fn start(
        root: &Path,
        dir: &Path,
        targets: &[SocketAddr],
        alertmanagers: &[&Alertmanager],
    ) -> Prometheus {
        let port = free_port();
        let web = SocketAddr::from(([127, 0, 0, 1], port));
        let rules = root.join("deploy/prometheus/varta.rules.yml");
        let quoted = |v: Vec<String>| {
            v.iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let cfg = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: ['{}']\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [{}]\n\
             scrape_configs:\n  - job_name: varta-watch\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            quoted(alertmanagers.iter().map(|a| a.web.to_string()).collect()),
            quoted(targets.iter().map(ToString::to_string).collect()),
        );
        let path = dir.join(format!("prometheus-{port}.yml"));
        std::fs::write(&path, cfg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let storage = dir.join(format!("tsdb-{port}"));
        let child = Command::new(PROM_BIN)
            .arg(format!("--config.file={}", path.display()))
            .arg(format!("--storage.tsdb.path={}", storage.display()))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&dir.join(format!("prometheus-{port}.log"))))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {PROM_BIN} ({e}): install Debian's prometheus"));
        let p = Prometheus { child, web };
        wait(Duration::from_secs(30), "Prometheus /-/ready", || {
            http_get(web, "/-/ready").filter(|(s, _)| *s == 200)
        });
        p
    }

    /// Waits until `n` scrape targets are up.
    pub fn wait_targets_up(&self, n: usize) {
        wait(Duration::from_secs(20), "Prometheus targets up", || {
            let (_, body) = http_get(
                self.web,
                "/api/v1/query?query=sum(up%7Bjob%3D%22varta-watch%22%7D)",
            )?;
            let v: Value = serde_json::from_str(&body).ok()?;
            let up: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
            #[allow(
                clippy::cast_precision_loss,
                reason = "a handful of targets, exact in an f64"
            )]
            let n = n as f64;
            (up >= n).then_some(())
        });
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start the observer and the agents: the programs and the arguments before their own.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The observer: `varta-watch` (with `run`) or `varta` (with `observe`).
    pub observer: (PathBuf, Vec<String>),
    /// The `varta` tool (its `agent` subcommand is a real agent process).
    pub varta: PathBuf,
}

/// The real observer (`--format json --prom-addr 127.0.0.1:0 --socket DIR/s.sock …`) with its
/// JSON event lines; killed on drop.
pub struct Observer {
    child: Child,
    varta: PathBuf,
    /// Its Unix socket.
    pub socket: PathBuf,
    /// Its metrics address.
    pub prom: SocketAddr,
    /// Its UDP listener, when it has one.
    pub udp: Option<SocketAddr>,
    /// Its event lines, with their arrival time.
    pub lines: Receiver<(Instant, String)>,
}

impl Observer {
    /// Starts the observer with `args` and the environment `env`; waits for its "listening"
    /// line.
    ///
    /// # Panics
    /// When it does not start.
    pub fn start(progs: &Programs, dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Observer {
        let socket = dir.join("s.sock");
        let (program, prefix) = &progs.observer;
        let mut child = Command::new(program)
            .envs(env.iter().copied())
            .args(prefix)
            .arg("--socket")
            .arg(&socket)
            .args(["--format", "json", "--prom-addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        let (Some(stderr), Some(stdout)) = (child.stderr.take(), child.stdout.take()) else {
            panic!("observer without pipes");
        };
        let mut err = BufReader::new(stderr);
        let mut first = String::new();
        let _ = err.read_line(&mut first);
        assert!(first.contains("listening"), "observer failed: {first}");
        std::thread::spawn(move || for _ in err.lines() {});
        let prom = first
            .split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no metrics address in {first}"));
        let udp = first
            .split("udp ")
            .nth(1)
            .and_then(|s| s.split([',', ';']).next())
            .and_then(|s| s.trim().parse().ok());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Observer {
            child,
            varta: progs.varta.clone(),
            socket,
            prom,
            udp,
            lines,
        }
    }

    /// Waits for an event line containing every needle; returns its arrival time and text.
    ///
    /// # Panics
    /// After `limit`.
    pub fn wait_line(&self, needles: &[&str], limit: Duration) -> (Instant, String) {
        let t0 = Instant::now();
        loop {
            let left = limit.checked_sub(t0.elapsed()).unwrap_or_else(|| {
                panic!("timed out after {limit:?} waiting for an event line with {needles:?}")
            });
            if let Ok((at, l)) = self.lines.recv_timeout(left) {
                if needles.iter().all(|n| l.contains(n)) {
                    return (at, l);
                }
            }
        }
    }

    /// The value of the series `series` (labels exactly as the exposition writes them, e.g.
    /// `varta_alerts_sent_total{outcome="sent"}`) in a fresh scrape.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = http_get(self.prom, "/metrics")?;
        body.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// SIGTERM, then waits for the exit (a clean shutdown), at most `limit`.
    ///
    /// # Panics
    /// When the signal cannot be sent, or the observer is still running after `limit`.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .unwrap_or_else(|e| panic!("SIGTERM to the observer: {e}"));
        let child = &mut self.child;
        wait(limit, "the observer's exit after SIGTERM", || {
            child.try_wait().ok().flatten()
        })
    }

    /// SIGKILL, then waits for the exit (a death without shutdown).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a real agent (`varta agent`, which sends through `varta-client`) beating every
    /// `interval_ms` and waits until the observer saw it.
    pub fn agent(&self, interval_ms: u32) -> Agent {
        self.agent_with(interval_ms, &[])
    }

    /// [`Observer::agent`] with further `varta agent` flags (e.g. `--crash-after N`). Each
    /// agent runs under a name of its own (a symlink `agent-N` to `varta`, so its `comm`
    /// differs): the observer names Unix agents from /proc, and alerts group by that name.
    pub fn agent_with(&self, interval_ms: u32, extra: &[&str]) -> Agent {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.socket.parent().unwrap_or_else(|| Path::new("."));
        let exe = dir.join(format!("agent-{n}"));
        let _ = std::fs::remove_file(&exe);
        std::os::unix::fs::symlink(&self.varta, &exe)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", exe.display()));
        let child = Command::new(&exe)
            .arg("agent")
            .arg("--socket")
            .arg(&self.socket)
            .args(["--interval-ms", &interval_ms.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.varta.display()));
        let mut a = Agent {
            child,
            listener: "unix",
            name: None,
        };
        let pid = format!("\"pid\":{}", a.pid());
        self.wait_line(&[&pid], Duration::from_secs(10));
        a.name = Some(self.name_of(a.pid()));
        a
    }

    /// The name the observer learned for Unix agent `pid` (read once from /proc, off its
    /// loop), as `/api/agents` shows it.
    fn name_of(&self, pid: u32) -> String {
        wait(
            Duration::from_secs(10),
            "the agent's name in /api/agents",
            || {
                let (status, body) = http_get(self.prom, "/api/agents")?;
                let v: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
                v["agents"]
                    .as_array()?
                    .iter()
                    .find(|a| a["pid"] == pid && a["listener"] == "unix")?["name"]
                    .as_str()
                    .map(str::to_string)
            },
        )
    }

    /// Starts a real agent beating every `interval_ms` over UDP to `to`, sealed with the shared
    /// key in `key_file` (the observer's listener is `udp0`, so its alerts name it `udp0:PID`).
    pub fn udp_agent(&self, to: SocketAddr, key_file: &Path, interval_ms: u32) -> Agent {
        let child = Command::new(&self.varta)
            .arg("agent")
            .arg("--udp")
            .arg(to.to_string())
            .arg("--key-file")
            .arg(key_file)
            .args(["--interval-ms", &interval_ms.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.varta.display()));
        // UDP agents are named only by `[[name]]` sections; none here.
        Agent {
            child,
            listener: "udp0",
            name: None,
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real agent process; killed on drop.
pub struct Agent {
    child: Child,
    /// The observer's listener it reaches.
    listener: &'static str,
    /// The name the observer gave it (from /proc for a Unix agent), once known.
    name: Option<String>,
}

impl Agent {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `agent` label the observer's alerts give it: its name, else `listener:pid`.
    pub fn alert_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}:{}", self.listener, self.pid()))
    }

    fn signal(&self, sig: rustix::process::Signal) {
        // Our own child, not yet reaped: the pid is still its.
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, sig).unwrap_or_else(|e| panic!("kill({sig:?}): {e}"));
    }

    /// SIGSTOP: the agent hangs.
    pub fn freeze(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// SIGCONT: it beats again.
    pub fn thaw(&self) {
        self.signal(rustix::process::Signal::CONT);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
