//! The core's security rules reproduced against the real `varta-watch` binary over real
//! sockets: captured datagrams of older sessions do not end a stall, a shared-key holder
//! cannot speak for a per-agent-key agent, and spoofed plaintext pids cannot lock kernel-
//! attested agents out of the table.

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use vlp_core::{Frame, Key, Session, Status};

#[path = "common/observer.rs"]
mod observer;

use observer::{tmpdir, write_key};

/// The bound of every wait here.
const WAIT: Duration = Duration::from_secs(5);

/// [`observer::Observer::start`] with a UDP listener on a port the kernel picks.
fn start(dir: &Path, args: &[&str]) -> observer::Observer {
    let mut all = vec!["--udp-port", "0"];
    all.extend_from_slice(args);
    observer::Observer::start(dir, &all)
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
    let obs = start(
        &dir,
        &[
            "--key-file",
            dir.join("k").to_str().unwrap(),
            "--threshold-ms",
            "300",
        ],
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(obs.udp.unwrap()).unwrap();
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
    obs.wait_for(&["\"kind\":\"stall\"", "\"pid\":6001"], WAIT);
    for d in &captured {
        udp.send(d).unwrap();
    }
    obs.wait_metric(
        "varta_rejections_total{reason=\"retired_stream\"}",
        captured.len() as f64,
        WAIT,
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
    let obs = start(
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
    udp.connect(obs.udp.unwrap()).unwrap();
    let agent_key = vlp_core::kdf::derive_agent_key(&Key::from_hex(&master).unwrap(), 6002);
    let mut own = Session::secure(6002, [5; 16]);
    udp.send(
        &beat(&mut own, Status::Ok)
            .seal_master(&agent_key)
            .unwrap()
            .0,
    )
    .unwrap();
    obs.wait_for(&["\"kind\":\"stall\"", "\"pid\":6002"], WAIT);
    // The shared key's holder beats "for" pid 6002: another identity, no recovery.
    let mut forger = Session::secure(6002, [6; 16]);
    let k = Key::from_hex(&shared).unwrap();
    for _ in 0..3 {
        udp.send(&beat(&mut forger, Status::Ok).seal_shared(&k).unwrap().0)
            .unwrap();
    }
    obs.wait_metric("varta_frames_accepted_total", 4.0, WAIT);
    assert_eq!(obs.count(&["\"kind\":\"recovered\""]), 0);
    assert_eq!(obs.count(&["\"kind\":\"new\"", "\"pid\":6002"]), 2);
    obs.wait_metric("varta_watch_pids_tracked", 2.0, WAIT);
}

#[test]
fn spoofed_plaintext_pids_cannot_lock_attested_agents_out() {
    let dir = tmpdir("capacity");
    let obs = start(&dir, &["--allow-plaintext-udp", "--tracker-capacity", "8"]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(obs.udp.unwrap()).unwrap();
    // 200 invented pids: at most 6 of 8 slots (a quarter is reserved).
    for pid in 10_000..10_200u32 {
        let f = Frame::new(Status::Ok, pid, 1, 1, 0).unwrap().emit();
        udp.send(&f).unwrap();
    }
    obs.wait_metric(
        "varta_rejections_total{reason=\"unproven_capacity\"}",
        194.0,
        WAIT,
    );
    // A real, kernel-attested agent still gets in.
    let c = obs.client();
    let pid = std::process::id();
    c.send(&Frame::new(Status::Ok, pid, 1, 1, 0).unwrap().emit())
        .unwrap();
    obs.wait_for(&["\"kind\":\"new\"", &format!("\"pid\":{pid}")], WAIT);
    obs.wait_metric("varta_watch_pids_tracked", 7.0, WAIT);
}
