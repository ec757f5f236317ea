//! The core's security rules reproduced against the real `varta-watch` binary over real
//! sockets: captured datagrams of older sessions do not end a stall, a shared-key holder
//! cannot speak for a per-agent-key agent, and spoofed plaintext pids cannot lock kernel-
//! attested agents out of the table.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vlp_core::{Frame, Key, Session, Status};

const BIN: &str = env!("CARGO_BIN_EXE_varta-watch");

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("varta-sec-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_key(path: &Path, hex: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "{hex}").unwrap();
}

struct Observer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    prom: SocketAddr,
    udp: SocketAddr,
    socket: PathBuf,
}

impl Observer {
    fn start(dir: &Path, args: &[&str]) -> Observer {
        let socket = dir.join("s.sock");
        let mut child = Command::new(BIN)
            .arg("run")
            .arg("--socket")
            .arg(&socket)
            .args(["--format", "json", "--prom-addr", "127.0.0.1:0"])
            .args(["--udp-port", "0"])
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
        let addr_after = |tag: &str| -> SocketAddr {
            first
                .split(tag)
                .nth(1)
                .and_then(|s| s.split([',', ';', '/']).next())
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {tag} address in {first}"))
        };
        let prom = addr_after("http://");
        let udp = addr_after("udp ");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l2.lock().unwrap().push(line);
            }
        });
        Observer {
            child,
            lines,
            prom,
            udp,
            socket,
        }
    }

    fn count(&self, needles: &[&str]) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    fn wait_for(&self, needles: &[&str]) {
        let end = Instant::now() + Duration::from_secs(5);
        while self.count(needles) == 0 {
            assert!(
                Instant::now() < end,
                "no line with {needles:?}; got {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn metric(&self, series: &str) -> f64 {
        let mut s = TcpStream::connect(self.prom).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in\n{body}"))
    }

    fn wait_metric(&self, series: &str, want: f64) {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.metric(series);
            if v == want {
                return;
            }
            assert!(Instant::now() < end, "{series} = {v}, want {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn beat(s: &mut Session, status: Status) -> vlp_core::session::Beat {
    let b = s.beat(status, 0, 1).unwrap();
    s.commit(&b).unwrap();
    b
}

#[test]
fn replayed_older_sessions_do_not_end_a_stall() {
    let dir = tmpdir("replay");
    let hex = "11".repeat(32);
    write_key(&dir.join("k"), &hex);
    let k = Key::from_hex(&hex).unwrap();
    let obs = Observer::start(
        &dir,
        &[
            "--key-file",
            dir.join("k").to_str().unwrap(),
            "--threshold-ms",
            "300",
        ],
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(obs.udp).unwrap();
    // Three sessions of pid 6001 (restarts), every datagram captured; the third hangs.
    let mut captured = Vec::new();
    for salt in [1u8, 2, 3] {
        let mut s = Session::secure(6001, [salt; 16]);
        for _ in 0..3 {
            let d = beat(&mut s, Status::Ok).seal_shared(&k).unwrap().0;
            udp.send(&d).unwrap();
            if salt < 3 {
                captured.push(d);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    obs.wait_for(&["\"kind\":\"stall\"", "\"pid\":6001"]);
    for d in &captured {
        udp.send(d).unwrap();
    }
    obs.wait_metric(
        "varta_rejections_total{reason=\"retired_stream\"}",
        captured.len() as f64,
    );
    assert_eq!(obs.count(&["\"kind\":\"recovered\""]), 0);
    assert_eq!(obs.count(&["\"kind\":\"goodbye\""]), 0);
}

#[test]
fn a_shared_key_holder_cannot_speak_for_a_per_agent_key_agent() {
    let dir = tmpdir("keyclass");
    let (shared, master) = ("22".repeat(32), "33".repeat(32));
    write_key(&dir.join("k"), &shared);
    write_key(&dir.join("m"), &master);
    let obs = Observer::start(
        &dir,
        &[
            "--key-file",
            dir.join("k").to_str().unwrap(),
            "--master-key-file",
            dir.join("m").to_str().unwrap(),
            "--threshold-ms",
            "300",
        ],
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(obs.udp).unwrap();
    let agent_key = vlp_core::kdf::derive_agent_key(&Key::from_hex(&master).unwrap(), 6002);
    let mut own = Session::secure(6002, [5; 16]);
    udp.send(
        &beat(&mut own, Status::Ok)
            .seal_master(&agent_key)
            .unwrap()
            .0,
    )
    .unwrap();
    obs.wait_for(&["\"kind\":\"stall\"", "\"pid\":6002"]);
    // The shared key's holder beats "for" pid 6002: another identity, no recovery.
    let mut forger = Session::secure(6002, [6; 16]);
    let k = Key::from_hex(&shared).unwrap();
    for _ in 0..3 {
        udp.send(&beat(&mut forger, Status::Ok).seal_shared(&k).unwrap().0)
            .unwrap();
    }
    obs.wait_metric("varta_frames_accepted_total", 4.0);
    assert_eq!(obs.count(&["\"kind\":\"recovered\""]), 0);
    assert_eq!(obs.count(&["\"kind\":\"new\"", "\"pid\":6002"]), 2);
    obs.wait_metric("varta_watch_pids_tracked", 2.0);
}

#[test]
fn spoofed_plaintext_pids_cannot_lock_attested_agents_out() {
    let dir = tmpdir("capacity");
    let obs = Observer::start(&dir, &["--allow-plaintext-udp", "--tracker-capacity", "8"]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(obs.udp).unwrap();
    // 200 invented pids: at most 6 of 8 slots (a quarter is reserved).
    for pid in 10_000..10_200u32 {
        let f = Frame::new(Status::Ok, pid, 1, 1, 0).unwrap().emit();
        udp.send(&f).unwrap();
    }
    obs.wait_metric(
        "varta_rejections_total{reason=\"unproven_capacity\"}",
        194.0,
    );
    // A real, kernel-attested agent still gets in.
    let c = UnixDatagram::unbound().unwrap();
    c.connect(&obs.socket).unwrap();
    let pid = std::process::id();
    c.send(&Frame::new(Status::Ok, pid, 1, 1, 0).unwrap().emit())
        .unwrap();
    obs.wait_for(&["\"kind\":\"new\"", &format!("\"pid\":{pid}")]);
    obs.wait_metric("varta_watch_pids_tracked", 7.0);
}
