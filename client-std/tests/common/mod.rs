//! Test observers: real sockets bound on a private path or on loopback.
#![allow(dead_code)] // reason: each test binary uses a different subset of these helpers.

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How long a test waits for a datagram that must arrive.
pub const ARRIVAL: Duration = Duration::from_secs(5);

/// A fresh private directory for one test's socket paths.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "varta-client-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An observer's Unix datagram socket.
pub struct UdsObserver {
    pub socket: UnixDatagram,
    pub path: PathBuf,
}

impl UdsObserver {
    pub fn bind(path: &Path) -> UdsObserver {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path).unwrap();
        socket.set_read_timeout(Some(ARRIVAL)).unwrap();
        UdsObserver {
            socket,
            path: path.to_path_buf(),
        }
    }

    /// The next datagram; panics (fails the test) if none arrives in time.
    pub fn recv(&self) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let n = self.socket.recv(&mut buf).expect("a datagram within 5 s");
        buf[..n].to_vec()
    }

    /// A datagram if one is queued right now.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 256];
        self.socket.set_nonblocking(true).unwrap();
        let r = self.socket.recv(&mut buf);
        self.socket.set_nonblocking(false).unwrap();
        r.ok().map(|n| buf[..n].to_vec())
    }

    /// Closes the socket and removes its path: the observer is gone.
    pub fn shut_down(self) {
        let path = self.path.clone();
        drop(self);
        let _ = std::fs::remove_file(path);
    }
}

/// An observer's UDP socket on 127.0.0.1.
pub struct UdpObserver {
    pub socket: UdpSocket,
}

impl UdpObserver {
    pub fn bind() -> UdpObserver {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(ARRIVAL)).unwrap();
        UdpObserver { socket }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.socket.local_addr().unwrap()
    }

    pub fn recv(&self) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let n = self.socket.recv(&mut buf).expect("a datagram within 5 s");
        buf[..n].to_vec()
    }
}

/// A loopback UDP port with nobody listening (bound, then closed).
pub fn closed_udp_port() -> std::net::SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}
