//! Listener hygiene against the real `varta-watch` binary over real sockets: descriptors
//! passed over the Unix socket (`SCM_RIGHTS`) are closed at once and counted, and a plaintext
//! UDP frame for a known pid from another source address is refused (`origin_conflict`)
//! until that agent has been silent past its threshold.

use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vlp_core::{Frame, Status};

const BIN: &str = env!("CARGO_BIN_EXE_varta-watch");

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("varta-ingest-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Observer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    prom: SocketAddr,
    udp: Option<SocketAddr>,
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
        let prom = addr_after("http://").expect("metrics address");
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
        let end = Instant::now() + Duration::from_secs(10);
        while self.count(needles) == 0 {
            assert!(
                Instant::now() < end,
                "no line with {needles:?}; got {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The value of `series`, 0 when the series is absent (a labelled series appears with
    /// its first count).
    fn metric(&self, series: &str) -> f64 {
        let mut s = TcpStream::connect(self.prom).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    fn wait_metric(&self, series: &str, want: f64) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.metric(series);
            if v == want {
                return;
            }
            assert!(Instant::now() < end, "{series} = {v}, want {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn frame(pid: u32, nonce: u64) -> [u8; 32] {
    Frame::new(Status::Ok, pid, nonce * 1_000, nonce, 0)
        .unwrap()
        .emit()
}

/// Sends `data` on `tx` with `fds` attached (`SCM_RIGHTS`). Blocks while the observer's
/// queue is full (a connected Unix datagram socket waits for room).
fn send_with_fds(tx: &UnixDatagram, data: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    assert!(anc.push(SendAncillaryMessage::ScmRights(fds)));
    rustix::net::sendmsg(tx, &[IoSlice::new(data)], &mut anc, SendFlags::empty()).unwrap();
}

#[test]
fn passed_descriptors_are_closed_at_once_and_counted() {
    const SENT: u64 = 10_000;
    let dir = tmpdir("fds");
    let obs = Observer::start(&dir, &["--threshold-ms", "60000"]);
    let tx = UnixDatagram::unbound().unwrap();
    tx.connect(&obs.socket).unwrap();
    let pid = std::process::id();
    // Settle: one beat in, one scrape served (the HTTP side's descriptors exist), then count.
    tx.send(&frame(pid, 1)).unwrap();
    obs.wait_for(&["\"kind\":\"new\"", &format!("\"pid\":{pid}")]);
    obs.wait_metric("varta_frames_accepted_total", 1.0);
    let before = obs.open_fds();

    let file = std::fs::File::open("/dev/null").unwrap();
    for nonce in 2..2 + SENT {
        send_with_fds(&tx, &frame(pid, nonce), &[file.as_fd()]);
    }
    obs.wait_metric("varta_passed_fds_closed_total", SENT as f64);
    // The frames themselves were read and taken as beats as usual.
    obs.wait_metric("varta_frames_accepted_total", (SENT + 1) as f64);
    // A scrape's connection may still be open on the HTTP side for a moment: wait (bounded)
    // for the count to come back; a leak would leave 10,000 more.
    let end = Instant::now() + Duration::from_secs(5);
    let mut after = obs.open_fds();
    while after > before && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        after = obs.open_fds();
    }
    eprintln!("observer descriptors: {before} before, {after} after {SENT} fd-carrying datagrams");
    assert!(
        after <= before,
        "descriptors grew from {before} to {after} after {SENT} fd-carrying datagrams"
    );
}

#[test]
fn a_plain_frame_from_another_source_port_is_refused_until_the_agent_was_silent() {
    let dir = tmpdir("origin");
    let obs = Observer::start(
        &dir,
        &[
            "--udp-port",
            "0",
            "--allow-plaintext-udp",
            "--threshold-ms",
            "400",
        ],
    );
    let udp = obs.udp.expect("udp address");
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let pid = 4242;
    let conflicts = "varta_rejections_total{reason=\"origin_conflict\"}";
    a.send_to(&frame(pid, 1), udp).unwrap();
    obs.wait_for(&["\"kind\":\"new\"", "\"pid\":4242"]);
    // Another source port speaking for a live agent: refused and counted, every time.
    b.send_to(&frame(pid, 2), udp).unwrap();
    b.send_to(&frame(pid, 3), udp).unwrap();
    obs.wait_metric(conflicts, 2.0);
    // The agent's own address is still heard.
    a.send_to(&frame(pid, 4), udp).unwrap();
    obs.wait_metric("varta_frames_accepted_total", 2.0);
    // Silent past its threshold (the stall is reported), the other address may take over.
    obs.wait_for(&["\"kind\":\"stall\"", "\"pid\":4242"]);
    b.send_to(&frame(pid, 5), udp).unwrap();
    obs.wait_metric("varta_frames_accepted_total", 3.0);
    assert_eq!(obs.metric(conflicts), 2.0);
    // ... and now the old address is the stranger.
    a.send_to(&frame(pid, 6), udp).unwrap();
    obs.wait_metric(conflicts, 3.0);
}

/// Beats on the Unix socket are taken at the kernel's receive time, not when the observer
/// gets round to reading them: an observer held (SIGSTOP) past an agent's threshold while the
/// agent keeps beating reports no stall once it runs again, and a real silence is still a stall.
#[test]
fn beats_read_late_keep_their_kernel_receive_time() {
    let dir = tmpdir("stamps");
    let obs = Observer::start(&dir, &["--threshold-ms", "300"]);
    let tx = UnixDatagram::unbound().unwrap();
    tx.connect(&obs.socket).unwrap();
    let pid = std::process::id();
    let me = format!("\"pid\":{pid}");
    tx.send(&frame(pid, 1)).unwrap();
    obs.wait_for(&["\"kind\":\"new\"", &me]);
    let observer = rustix::process::Pid::from_raw(obs.child.id() as i32).unwrap();
    rustix::process::kill_process(observer, rustix::process::Signal::STOP).unwrap();
    // Held for about 1 s, more than three thresholds, while the agent beats every 120 ms
    // (8 beats: within the smallest queue the kernel allows by default, 10).
    for nonce in 2..10 {
        std::thread::sleep(Duration::from_millis(120));
        tx.send(&frame(pid, nonce)).unwrap();
    }
    rustix::process::kill_process(observer, rustix::process::Signal::CONT).unwrap();
    obs.wait_metric("varta_frames_accepted_total", 9.0);
    assert_eq!(
        obs.count(&["\"kind\":\"stall\"", &me]),
        0,
        "a stall for beats that arrived in time: {:?}",
        obs.lines.lock().unwrap()
    );
    // Silence now is a stall.
    obs.wait_for(&["\"kind\":\"stall\"", &me]);
}
