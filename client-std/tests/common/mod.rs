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

/// Asks the kernel to attach the sender's credentials to every datagram (`SO_PASSCRED`).
pub fn pass_credentials(socket: &UnixDatagram) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and a pointer to a c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_PASSCRED: {}", std::io::Error::last_os_error());
}

/// The next datagram and the pid the kernel attests for its sender (`SCM_CREDENTIALS`; the
/// socket must have [`pass_credentials`] on).
pub fn recv_attested(socket: &UnixDatagram) -> (Vec<u8>, u32) {
    use std::os::fd::AsRawFd;
    let mut data = [0u8; 256];
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid "no name, no buffers" value; filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at live buffers of the stated sizes for the duration of the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
    let mut pid = None;
    // SAFETY: walking the control messages the kernel wrote into `control`, with the libc
    // macros that bound every step by msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                pid = Some(cred.pid as u32);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    (
        data[..n as usize].to_vec(),
        pid.expect("SCM_CREDENTIALS attached"),
    )
}
