//! The benchmarks' load generator (`varta bench-gen`) sends from `--sources` UDP sockets, so
//! an observer's `SO_REUSEPORT` receive sockets each get a share; every identity keeps one
//! source (as a real agent does) and its beats stay in order. Checked on a real socket.

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use vlp_core::kdf::derive_agent_key;
use vlp_core::{Frame, Key, MasterDatagram};

/// The generator's key (`bench::gen::KEY_HEX`).
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Runs the generator at a fresh socket; returns its `sent` count and every datagram received
/// with its source port.
fn generate(mode: &str, pids: u32, sources: u32, count: usize) -> (usize, Vec<(u16, Vec<u8>)>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Room for the whole run (the generator sends it in microseconds).
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(sock.as_fd(), 4 << 20);
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_varta"))
        .args(["bench-gen", "--udp", &addr.to_string(), "--mode", mode])
        .args([
            "--pids",
            &pids.to_string(),
            "--sources",
            &sources.to_string(),
        ])
        .args(["--count", &count.to_string(), "--ms", "10000"])
        .output()
        .expect("the generator runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: usize = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("generator said {text:?}"));
    let mut got = Vec::new();
    let mut buf = [0u8; 128];
    let t0 = Instant::now();
    while got.len() < sent && t0.elapsed() < Duration::from_secs(10) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            got.push((from.port(), buf[..n].to_vec()));
        }
    }
    (sent, got)
}

/// Per source port, the pids it carried; per pid, its nonces in arrival order.
fn by_source(got: &[(u16, u32, u64)]) -> (BTreeMap<u16, BTreeSet<u32>>, BTreeMap<u32, Vec<u64>>) {
    let mut ports: BTreeMap<u16, BTreeSet<u32>> = BTreeMap::new();
    let mut nonces: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (port, pid, nonce) in got {
        ports.entry(*port).or_default().insert(*pid);
        nonces.entry(*pid).or_default().push(*nonce);
    }
    (ports, nonces)
}

fn assert_spread(got: &[(u16, u32, u64)], pids: u32, sources: usize) {
    let (ports, nonces) = by_source(got);
    assert_eq!(ports.len(), sources, "one source port each: {ports:?}");
    let mut seen = BTreeSet::new();
    for set in ports.values() {
        assert_eq!(
            set.len(),
            pids as usize / sources,
            "identities per source: {ports:?}"
        );
        for pid in set {
            assert!(
                seen.insert(*pid),
                "pid {pid} sent from two sources: {ports:?}"
            );
        }
    }
    assert_eq!(seen.len(), pids as usize, "every identity sent");
    for (pid, n) in &nonces {
        assert!(
            n.windows(2).all(|w| w[0] < w[1]),
            "pid {pid}'s beats in order: {n:?}"
        );
    }
}

#[test]
fn plain_frames_spread_over_sources_one_source_per_identity() {
    let (sent, got) = generate("plain", 8, 4, 512);
    assert!(sent >= 512, "sent {sent}");
    assert_eq!(got.len(), sent, "every datagram arrived");
    let decoded: Vec<(u16, u32, u64)> = got
        .iter()
        .map(|(port, d)| {
            let f = Frame::parse(d).expect("a valid frame");
            (*port, f.pid(), f.nonce())
        })
        .collect();
    assert_spread(&decoded, 8, 4);
}

#[test]
fn master_key_datagrams_spread_over_sources_one_source_per_identity() {
    let master = Key::from_hex(KEY_HEX).unwrap();
    let (sent, got) = generate("master", 6, 3, 600);
    assert_eq!(sent, 600);
    assert_eq!(got.len(), sent, "every datagram arrived");
    let decoded: Vec<(u16, u32, u64)> = got
        .iter()
        .map(|(port, d)| {
            let m = MasterDatagram::from_bytes(d).expect("a master-key datagram");
            let (_, f) = m
                .open(&derive_agent_key(&master, m.pid()))
                .expect("opens under the pid's key");
            (*port, f.pid(), f.nonce())
        })
        .collect();
    assert_spread(&decoded, 6, 3);
}

#[test]
fn sources_are_capped_at_the_identities() {
    let (sent, got) = generate("plain", 2, 8, 256);
    assert_eq!(got.len(), sent);
    let ports: BTreeSet<u16> = got.iter().map(|(p, _)| *p).collect();
    assert_eq!(ports.len(), 2, "no source without an identity: {ports:?}");
}
