//! The published-0.2-API programs (src/bin) against real sockets: each runs as its own
//! process, and the observer side here checks every datagram it sent.
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use varta_vlp::{Frame, Key, SharedDatagram, Status, NONCE_TERMINAL};

/// Generous: the programs beat every 20 ms; this only bounds a broken run.
const WAIT: Duration = Duration::from_secs(10);

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("varta-compat-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn uds_observer(tag: &str) -> (UnixDatagram, PathBuf) {
    let path = temp_dir(tag).join("observer.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    (sock, path)
}

fn udp_observer() -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock
}

/// Runs a program to its end (its datagrams queue in the observer's socket meanwhile).
fn run(exe: &str, args: &[&str]) -> (Output, u32) {
    let child = Command::new(exe)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (child.wait_with_output().unwrap(), pid)
}

fn recv_uds(sock: &UnixDatagram) -> Frame {
    let mut buf = [0u8; 128];
    let n = sock.recv(&mut buf).expect("a datagram within the wait");
    Frame::parse(&buf[..n]).expect("a valid 32-byte frame")
}

fn recv_udp(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 128];
    let n = sock.recv(&mut buf).expect("a datagram within the wait");
    buf[..n].to_vec()
}

#[test]
fn basic_beats_ok_over_the_unix_socket() {
    let (obs, path) = uds_observer("basic");
    let (out, pid) = run(env!("CARGO_BIN_EXE_basic"), &[path.to_str().unwrap(), "3"]);
    assert!(out.status.success(), "{out:?}");
    for n in 1..=3 {
        let f = recv_uds(&obs);
        assert_eq!((f.pid(), f.nonce(), f.status()), (pid, n, Status::Ok));
    }
}

#[test]
fn with_payload_carries_the_counter_and_degraded_status() {
    let (obs, path) = uds_observer("payload");
    let (out, pid) = run(
        env!("CARGO_BIN_EXE_with_payload"),
        &[path.to_str().unwrap(), "4"],
    );
    assert!(out.status.success(), "{out:?}");
    for n in 1..=4u32 {
        let f = recv_uds(&obs);
        let status = if n % 2 == 0 {
            Status::Degraded
        } else {
            Status::Ok
        };
        assert_eq!(
            (f.pid(), f.nonce(), f.status(), f.payload()),
            (pid, u64::from(n), status, n)
        );
    }
}

#[test]
fn udp_sends_plain_frames() {
    let obs = udp_observer();
    let addr = obs.local_addr().unwrap().to_string();
    let (out, pid) = run(env!("CARGO_BIN_EXE_udp"), &[&addr, "3"]);
    assert!(out.status.success(), "{out:?}");
    for n in 1..=3 {
        let f = Frame::parse(&recv_udp(&obs)).unwrap();
        assert_eq!((f.pid(), f.nonce()), (pid, n));
    }
}

#[test]
fn with_panic_handler_reports_the_panic_as_a_terminal_frame() {
    let (obs, path) = uds_observer("panic");
    let (out, pid) = run(
        env!("CARGO_BIN_EXE_with_panic_handler"),
        &[path.to_str().unwrap(), "2"],
    );
    assert!(!out.status.success(), "the program panics: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("simulated fatal error"));
    for n in 1..=2 {
        assert_eq!(recv_uds(&obs).nonce(), n);
    }
    let last = recv_uds(&obs);
    assert_eq!(
        (last.pid(), last.nonce(), last.status()),
        (pid, NONCE_TERMINAL, Status::Critical)
    );
}

#[test]
fn secure_udp_reads_the_key_file_and_seals_with_it() {
    let key_hex = "a1".repeat(32);
    let dir = temp_dir("secure");
    let key_path = dir.join("agent.key");
    std::fs::write(&key_path, format!("{key_hex}\n")).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let obs = udp_observer();
    let addr = obs.local_addr().unwrap().to_string();
    let (out, pid) = run(
        env!("CARGO_BIN_EXE_secure_udp"),
        &[&addr, key_path.to_str().unwrap(), "3"],
    );
    assert!(out.status.success(), "{out:?}");
    let key = Key::from_hex(&key_hex).unwrap();
    for n in 1..=3 {
        let bytes = recv_udp(&obs);
        assert_eq!(bytes.len(), 60);
        let (iv, f) = SharedDatagram::from_bytes(&bytes)
            .unwrap()
            .open(&key)
            .expect("sealed with the key from the file");
        assert_eq!((f.pid(), f.nonce(), iv.counter), (pid, n, n as u32));
    }

    // A key file others can read is refused, with the rule in the message and no beat sent.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (out, _) = run(
        env!("CARGO_BIN_EXE_secure_udp"),
        &[&addr, key_path.to_str().unwrap(), "1"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{out:?}"
    );
    obs.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 128];
    assert!(obs.recv(&mut buf).is_err(), "nothing was sent");
}
