//! Test support for the policy, control and status-page tests: a stand-in observer loop that
//! wires the real pieces the way the daemon will (a real Unix datagram socket with kernel
//! credentials, the real tracker, the policy `Directory` with its identity worker, the control
//! socket server and the snapshot hub), and real agent processes (this test binary re-run as a
//! child that beats over the socket).

#![allow(
    dead_code,
    reason = "each test file uses a different part of this module"
)]

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use varta_watch::control::server::{ControlLink, ControlServer};
use varta_watch::control::snapshot::{SnapshotBuilder, SnapshotHub, StatusSnapshot};
use varta_watch::control::{client::Client, control_path};
use varta_watch::http_assets::EventRing;
use varta_watch::output::Row;
use varta_watch::policy::class::{ClassConfig, ClassSet, Defaults};
use varta_watch::policy::directory::Directory;
use varta_watch::policy::identity::{IdentityWorker, UdpNames};
use varta_watch::policy::silence::SilenceSet;
use varta_watch::tracker::{Origin, Tracker, TrackerConfig};
use vlp_core::{Frame, Status};

/// The environment variable that makes this test binary act as an agent.
pub const AGENT_ENV: &str = "VARTA_TEST_AGENT_SOCKET";

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "varta-{tag}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn wall_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// The stand-in observer.
pub struct Observer {
    pub dir: TempDir,
    /// The agent socket (`--socket`); the control socket is this plus `.ctl`.
    pub socket: PathBuf,
    pub hub: Arc<SnapshotHub>,
    pub events: Arc<Mutex<EventRing>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    server: Option<ControlServer>,
}

impl Observer {
    /// Starts it with a stall threshold and `[[class]]` sections (TOML).
    pub fn start(threshold_ms: u64, classes_toml: &str) -> Observer {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            class: Vec<ClassConfig>,
        }
        let file: File = toml::from_str(classes_toml).unwrap();
        let threshold = threshold_ms * 1_000_000;
        let classes = ClassSet::new(
            &Defaults {
                threshold_ns: threshold,
                recovery: None,
                recovery_debounce_ns: 0,
            },
            file.class,
        )
        .unwrap();
        let dir = TempDir::new("observer");
        let socket = dir.0.join("varta.sock");
        let sock = UnixDatagram::bind(&socket).unwrap();
        rustix::net::sockopt::set_socket_passcred(&sock, true).unwrap();
        sock.set_nonblocking(true).unwrap();

        let link = ControlLink::new().unwrap();
        let hub = Arc::clone(link.hub());
        let server =
            ControlServer::start(&control_path(&socket), Arc::clone(&hub), link.commander())
                .unwrap();
        let events = Arc::new(Mutex::new(EventRing::new(256)));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = IdentityWorker::spawn(PathBuf::from("/proc"), 64).unwrap();
        let directory = Directory::new(
            classes,
            UdpNames::default(),
            SilenceSet::new(),
            Some(worker),
            1024,
        );
        let tracker = Tracker::new(TrackerConfig {
            threshold,
            capacity: 1024,
            allowed_uids: vec![rustix::process::getuid().as_raw()],
            ..TrackerConfig::default()
        });
        let (stop2, events2) = (Arc::clone(&stop), Arc::clone(&events));
        let thread = std::thread::spawn(move || {
            run_loop(&sock, tracker, directory, &link, &events2, &stop2);
        });
        Observer {
            dir,
            socket,
            hub,
            events,
            stop,
            thread: Some(thread),
            server: Some(server),
        }
    }

    /// The control socket's path.
    pub fn control(&self) -> PathBuf {
        control_path(&self.socket)
    }

    /// Polls the control socket until `pred` holds for a snapshot (bound: 10 s).
    pub fn wait_for(&self, what: &str, pred: impl Fn(&StatusSnapshot) -> bool) -> StatusSnapshot {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut client = Client::connect(Some(&self.socket)).unwrap();
        loop {
            let snap = client.status().unwrap();
            if pred(&snap) {
                return snap;
            }
            assert!(
                Instant::now() < deadline,
                "not within 10 s: {what}; last snapshot: {snap:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.hub.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.server = None;
    }
}

fn run_loop(
    sock: &UnixDatagram,
    mut tracker: Tracker,
    mut directory: Directory,
    link: &ControlLink,
    events: &Mutex<EventRing>,
    stop: &AtomicBool,
) {
    let start = Instant::now();
    let now = || u64::try_from(start.elapsed().as_nanos()).unwrap();
    let mut builder = SnapshotBuilder::new(10_000);
    let mut buf = [0u8; 128];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
    while !stop.load(Ordering::Acquire) {
        // Sleep until the tracker's next deadline, a datagram or a control wake-up (and at
        // most 50 ms, to notice `stop`).
        let wait = tracker
            .poll_timeout()
            .map_or(50_000_000, |d| d.saturating_sub(now()).min(50_000_000));
        let ts = Timespec {
            tv_sec: 0,
            tv_nsec: i64::try_from(wait).unwrap(),
        };
        let hub_fd = link.hub().wake_fd();
        let mut fds = [
            PollFd::new(sock, PollFlags::IN),
            PollFd::new(&hub_fd, PollFlags::IN),
        ];
        let _ = poll(&mut fds, Some(&ts));
        loop {
            let mut cmsg = RecvAncillaryBuffer::new(&mut space);
            let Ok(r) = rustix::net::recvmsg(
                sock,
                &mut [IoSliceMut::new(&mut buf)],
                &mut cmsg,
                RecvFlags::DONTWAIT,
            ) else {
                break;
            };
            let creds = cmsg.drain().find_map(|m| match m {
                RecvAncillaryMessage::ScmCredentials(c) => Some(c),
                _ => None,
            });
            let Some(c) = creds else { continue };
            let origin = Origin::Unix {
                pid: u32::try_from(c.pid.as_raw_nonzero().get()).unwrap(),
                uid: c.uid.as_raw(),
            };
            let _ = tracker.handle_datagram(now(), &origin, &buf[..r.bytes]);
        }
        let t = now();
        tracker.handle_timeout(t);
        while let Some(ev) = tracker.poll_event() {
            directory.on_event(&ev);
            events.lock().unwrap().push(Row::from_event(&ev).json(t));
        }
        directory.poll_identities();
        let wanted = link.hub().take_wanted();
        link.apply_silence_commands(directory.silences_mut(), wall_ms(), 64);
        if wanted {
            let snap = directory.snapshot(&mut builder, tracker.agents(), now(), wall_ms());
            link.hub().publish(snap);
        }
    }
}

/// A real agent process: this test binary re-run as a child that beats every 50 ms.
pub struct Agent {
    pub child: Child,
}

impl Agent {
    pub fn spawn(socket: &Path) -> Agent {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "agent_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(AGENT_ENV, socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes it (SIGSTOP): it stops beating without exiting.
    pub fn freeze(&self) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.pid()).unwrap()).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's body: beat on the socket named by [`AGENT_ENV`] every 50 ms for at most a
/// minute. Returns without doing anything when the variable is absent.
pub fn agent_child_body() {
    let Some(path) = std::env::var_os(AGENT_ENV) else {
        return;
    };
    let sock = UnixDatagram::unbound().unwrap();
    let pid = std::process::id();
    let start = Instant::now();
    let mut nonce = 0u64;
    while start.elapsed() < Duration::from_secs(60) {
        nonce += 1;
        let ts = u64::try_from(start.elapsed().as_micros()).unwrap() + 1;
        let frame = Frame::new(Status::Ok, pid, ts, nonce, 7).unwrap();
        let _ = sock.send_to(&frame.emit(), &path);
        std::thread::sleep(Duration::from_millis(50));
    }
}
