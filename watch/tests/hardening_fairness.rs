//! Fairness: a same-uid process sending flat out on the Unix socket beside 50 agents beating
//! at 10 Hz. With `net.unix.max_dgram_qlen` raised to 512 (by the test, restored after) and a
//! per-pid rate limit, none of the 50 sees a false stall; the flooder's excess is refused and
//! counted as `varta_rate_limited_total{reason="per_pid"}`. The false-stall figure without the
//! limit is printed beside it (run with `--nocapture` to see both).
//!
//! Needs root (the sysctl) and the `varta` tool beside the observer (`cargo build -p
//! varta-tools`), whose `agent` subcommand is the real agent process.

mod hardening_support;
#[path = "common/varta_tool.rs"]
mod varta_tool;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hardening_support::{frame, tmpdir, Observer, Stdout, BIN};
use vlp_core::Status;

const QLEN: &str = "/proc/sys/net/unix/max_dgram_qlen";
const AGENTS: usize = 50;
const FLOOD: Duration = Duration::from_secs(5);

/// Sets the sysctl for the test and puts the old value back on drop.
struct Qlen(String);

impl Qlen {
    fn raise(to: &str) -> Option<Qlen> {
        let old = std::fs::read_to_string(QLEN).ok()?;
        std::fs::write(QLEN, to).ok()?;
        Some(Qlen(old.trim().to_string()))
    }
}

impl Drop for Qlen {
    fn drop(&mut self) {
        let _ = std::fs::write(QLEN, &self.0);
    }
}

struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Run {
    false_stalls: usize,
    flood_sent: u64,
    per_pid_limited: f64,
    global_limited: f64,
}

fn run(dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["--format", "json", "--threshold-ms", "1000"];
    args.extend_from_slice(extra);
    let obs = Observer::start(dir, Stdout::Read, &args);
    let varta = varta_tool::beside(Path::new(BIN));
    let agents = Agents(
        (0..AGENTS)
            .map(|_| {
                Command::new(&varta)
                    .args(["agent", "--interval-ms", "100", "--socket"])
                    .arg(&obs.socket)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let pids: Vec<String> = agents
        .0
        .iter()
        .map(|c| format!("\"pid\":{},", c.id()))
        .collect();
    let end = Instant::now() + Duration::from_secs(20);
    while pids
        .iter()
        .any(|p| obs.count(&["\"kind\":\"new\"", p]) == 0)
    {
        assert!(Instant::now() < end, "not every agent was seen");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The flooder: this test process, same uid, valid frames of its own pid, flat out.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = {
        let sock = UnixDatagram::unbound().unwrap();
        sock.connect(&obs.socket).unwrap();
        sock.set_nonblocking(true).unwrap();
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || {
            let me = std::process::id();
            let mut nonce = 0u64;
            while !stop.load(Ordering::Relaxed) {
                nonce += 1;
                if sock.send(&frame(Status::Ok, me, nonce)).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    std::thread::sleep(FLOOD);
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    // A silence during the flood would be reported within a threshold after it.
    std::thread::sleep(Duration::from_millis(1500));
    let false_stalls = pids
        .iter()
        .map(|p| obs.count(&["\"kind\":\"stall\"", p]))
        .sum();
    let body = obs.scrape();
    let r = Run {
        false_stalls,
        flood_sent: sent.load(Ordering::Relaxed),
        per_pid_limited: hardening_support::metric_in(
            &body,
            r#"varta_rate_limited_total{reason="per_pid"}"#,
        ),
        global_limited: hardening_support::metric_in(
            &body,
            r#"varta_rate_limited_total{reason="global"}"#,
        ),
    };
    drop(agents);
    assert!(obs.terminate().success());
    r
}

#[test]
fn a_flooding_neighbour_causes_no_false_stall_under_a_per_pid_limit() {
    let Some(_qlen) = Qlen::raise("512") else {
        eprintln!("skipped: cannot set {QLEN} (needs root)");
        return;
    };
    let dir = tmpdir("fair-off");
    let off = run(&dir, &[]);
    let dir2 = tmpdir("fair-on");
    let on = run(&dir2, &["--max-beat-rate", "50"]);
    println!(
        "noisy neighbour ({AGENTS} agents at 10 Hz, threshold 1000 ms, one flooder for {FLOOD:?}, max_dgram_qlen 512):"
    );
    for (name, r) in [("no limit", &off), ("--max-beat-rate 50", &on)] {
        println!(
            "  {name:<20} false stalls {:>3}; flooder sent {:>9}; refused per_pid {:>9}, global {}",
            r.false_stalls, r.flood_sent, r.per_pid_limited, r.global_limited
        );
    }
    assert_eq!(off.per_pid_limited, 0.0, "off by default");
    assert!(
        on.per_pid_limited > 0.0,
        "the flooder's excess is refused and counted"
    );
    assert_eq!(on.global_limited, 0.0);
    assert_eq!(on.false_stalls, 0, "no false stall under the per-pid limit");
    for d in [dir, dir2] {
        std::fs::remove_dir_all(&d).unwrap();
    }
}
