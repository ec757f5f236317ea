//! Receive workers (`--workers 2`) against the real `varta-watch` binary over real sockets:
//! the kernel spreads shared-key datagrams over the `SO_REUSEPORT` sockets by source address,
//! so a captured one replayed from another source port may reach the other worker; it is
//! still refused, because every identity's replay window lives in the one table. Master-key
//! datagrams are routed by their clear-text pid: every copy reaches the same worker. Keys
//! replaced by a reload are the only keys from then on, whichever worker reads a datagram.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use vlp_core::kdf::derive_agent_key;
use vlp_core::{Frame, Iv, Key, MasterDatagram, SharedDatagram, Status};

#[path = "common/observer.rs"]
mod observer;

use observer::{tmpdir, write_key, Observer};

/// The bound of a wait for a metric.
const WAIT: Duration = Duration::from_secs(20);
/// Fresh source sockets tried before concluding the kernel never spreads (2⁻⁶⁴ by chance).
const TRIES: usize = 64;

const MASTER: [u8; 32] = [0x5a; 32];
const SHARED: [u8; 32] = [0x3c; 32];
const SHARED_NEW: [u8; 32] = [0x7e; 32];

fn hex(k: &[u8; 32]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

fn worker(obs: &Observer, k: usize) -> f64 {
    obs.try_metric(&format!(
        "varta_receive_worker_datagrams_total{{worker=\"{k}\"}}"
    ))
    .unwrap_or(0.0)
}

/// Sends `bytes` from a fresh source socket; returns which worker read it.
fn send_fresh(obs: &Observer, to: SocketAddr, bytes: &[u8]) -> usize {
    let before = [worker(obs, 0), worker(obs, 1)];
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(bytes, to).unwrap();
    obs.wait_metric(
        "varta_datagrams_received_total{listener=\"udp0\"}",
        before[0] + before[1] + 1.0,
        WAIT,
    );
    let after = [worker(obs, 0), worker(obs, 1)];
    assert_eq!(after[0] + after[1], before[0] + before[1] + 1.0);
    usize::from(after[1] > before[1])
}

fn start(dir: &Path, shared: &[u8; 32]) -> (Observer, SocketAddr) {
    let mk = dir.join("master.key");
    let sk = dir.join("shared.key");
    write_key(&mk, &hex(&MASTER));
    write_key(&sk, &hex(shared));
    let (mk, sk) = (mk.display().to_string(), sk.display().to_string());
    let obs = Observer::start(
        dir,
        &[
            "--udp-port",
            "0",
            "--master-key-file",
            &mk,
            "--key-file",
            &sk,
            "--workers",
            "2",
            "--threshold-ms",
            "60000",
        ],
    );
    // One series per receive worker, from the start.
    for k in 0..2 {
        let series = format!("varta_receive_worker_datagrams_total{{worker=\"{k}\"}}");
        assert_eq!(obs.try_metric(&series), Some(0.0), "{series}");
    }
    let udp = obs.udp.expect("udp address");
    (obs, udp)
}

fn beat(pid: u32, nonce: u64) -> Frame {
    Frame::new(Status::Ok, pid, nonce * 1_000, nonce, 0).unwrap()
}

fn iv(stream: u8, counter: u32) -> Iv {
    Iv {
        random: [stream; 8],
        counter,
    }
}

#[test]
fn a_datagram_replayed_to_the_other_worker_is_refused() {
    let dir = tmpdir("workers-replay");
    let (obs, udp) = start(&dir, &SHARED);
    // A shared-key datagram: its pid is sealed, so the kernel's hash of the addresses picks
    // the worker. Copies from other source ports until one reaches the other worker; each is
    // refused by the agent's replay window, wherever it was read.
    let shared = SharedDatagram::seal(&Key::from_bytes(SHARED), &iv(2, 1), &beat(7002, 1));
    let first = send_fresh(&obs, udp, &shared.0);
    obs.wait_metric("varta_frames_accepted_total", 1.0, WAIT);
    let mut replays = 0.0;
    let mut crossed = false;
    for _ in 0..TRIES {
        let w = send_fresh(&obs, udp, &shared.0);
        replays += 1.0;
        obs.wait_metric("varta_rejections_total{reason=\"replayed\"}", replays, WAIT);
        if w != first {
            crossed = true;
            break;
        }
    }
    assert!(
        crossed,
        "no copy reached the other worker in {TRIES} source ports"
    );
    assert_eq!(obs.metric("varta_frames_accepted_total"), 1.0);

    // A master-key datagram: routed by its clear-text pid, every copy from every source port
    // reaches worker pid mod 2, the one that keeps that agent's key, and is refused there.
    let agent_key = derive_agent_key(&Key::from_bytes(MASTER), 7001);
    let master = MasterDatagram::seal(&agent_key, &iv(1, 1), &beat(7001, 1));
    assert_eq!(send_fresh(&obs, udp, &master.0), 1);
    obs.wait_metric("varta_frames_accepted_total", 2.0, WAIT);
    for _ in 0..8 {
        assert_eq!(send_fresh(&obs, udp, &master.0), 1, "routed by pid 7001");
        replays += 1.0;
        obs.wait_metric("varta_rejections_total{reason=\"replayed\"}", replays, WAIT);
    }
    let even = MasterDatagram::seal(
        &derive_agent_key(&Key::from_bytes(MASTER), 7000),
        &iv(4, 1),
        &beat(7000, 1),
    );
    assert_eq!(send_fresh(&obs, udp, &even.0), 0, "routed by pid 7000");
    obs.wait_metric("varta_frames_accepted_total", 3.0, WAIT);
    assert_eq!(obs.metric("varta_frames_accepted_total"), 3.0);

    // The agents' next beats are accepted.
    let next = [
        MasterDatagram::seal(&agent_key, &iv(1, 2), &beat(7001, 2))
            .0
            .to_vec(),
        SharedDatagram::seal(&Key::from_bytes(SHARED), &iv(2, 2), &beat(7002, 2))
            .0
            .to_vec(),
    ];
    for (k, bytes) in next.iter().enumerate() {
        send_fresh(&obs, udp, bytes);
        obs.wait_metric("varta_frames_accepted_total", 4.0 + k as f64, WAIT);
    }
    assert_eq!(obs.metric("varta_watch_pids_tracked"), 3.0);
}

#[test]
fn keys_replaced_by_a_reload_are_the_only_keys_on_every_worker() {
    let dir = tmpdir("workers-rekey");
    let (obs, udp) = start(&dir, &SHARED);
    let old = Key::from_bytes(SHARED);
    let new = Key::from_bytes(SHARED_NEW);
    // Both workers have opened a datagram under the old key.
    let mut seen = [false; 2];
    let mut counter = 0;
    let mut accepted = 0.0;
    while !(seen[0] && seen[1]) && counter < TRIES as u32 {
        counter += 1;
        let d = SharedDatagram::seal(&old, &iv(3, counter), &beat(7100, counter.into()));
        seen[send_fresh(&obs, udp, &d.0)] = true;
        accepted += 1.0;
        obs.wait_metric("varta_frames_accepted_total", accepted, WAIT);
    }
    assert!(seen[0] && seen[1], "the kernel never used both workers");
    // The key file now holds the new key; SIGHUP reloads it.
    write_key(&dir.join("shared.key"), &hex(&SHARED_NEW));
    obs.signal(rustix::process::Signal::HUP);
    obs.wait_stderr(&["configuration reloaded"], WAIT);
    // On both workers: the old key is refused, the new one accepted.
    let mut refused = [false; 2];
    let mut bad_tags = 0.0;
    while !(refused[0] && refused[1]) && counter < 4 * TRIES as u32 {
        counter += 1;
        let d = SharedDatagram::seal(&old, &iv(3, counter), &beat(7100, counter.into()));
        refused[send_fresh(&obs, udp, &d.0)] = true;
        bad_tags += 1.0;
        obs.wait_metric("varta_rejections_total{reason=\"bad_tag\"}", bad_tags, WAIT);
    }
    assert!(
        refused[0] && refused[1],
        "the kernel never used both workers"
    );
    assert_eq!(obs.metric("varta_frames_accepted_total"), accepted);
    counter += 1;
    let d = SharedDatagram::seal(&new, &iv(3, counter), &beat(7100, counter.into()));
    send_fresh(&obs, udp, &d.0);
    obs.wait_metric("varta_frames_accepted_total", accepted + 1.0, WAIT);
}
