//! A process's UDP receive queues as the kernel lists them in `/proc/net/udp` and
//! `/proc/net/udp6`: one line per socket, its local port and receive-queue bytes in hex, its
//! inode and its drop count in decimal. With `SO_REUSEPORT` one port has one line per
//! socket, so the observer's N receive sockets are found by port and by the socket inodes in
//! its `/proc/PID/fd`.
//!
//! Reading is cheap enough to poll every few hundred microseconds: the files are kept open
//! and re-read from offset 0.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// One socket's line: receive-queue bytes and datagrams the kernel dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    /// Bytes waiting in the receive queue (`rx_queue`).
    pub rx_bytes: u64,
    /// Datagrams dropped (`drops`).
    pub drops: u64,
}

/// The lines of `text` (a `/proc/net/udp` or `udp6` listing) of sockets bound to `port`
/// whose inode is in `inodes`.
#[must_use]
pub fn parse(text: &str, port: u16, inodes: &HashSet<u64>) -> Vec<Queue> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            if local_port != port || !inodes.contains(&inode) {
                return None;
            }
            let rx_bytes = u64::from_str_radix(f.get(4)?.split_once(':')?.1, 16).ok()?;
            let drops = f.get(12)?.parse().ok()?;
            Some(Queue { rx_bytes, drops })
        })
        .collect()
}

/// The inodes of process `pid`'s sockets (`/proc/PID/fd/*` links to `socket:[INODE]`).
#[must_use]
pub fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Reads a `/proc` file kept open, from offset 0 each time (a seq file starts afresh).
pub struct Reread {
    file: File,
    buf: Vec<u8>,
}

impl Reread {
    /// Opens `path`.
    ///
    /// # Errors
    /// It cannot be opened.
    pub fn open(path: &str) -> Result<Reread, String> {
        let file = File::open(path).map_err(|e| format!("{path}: {e}"))?;
        Ok(Reread {
            file,
            buf: vec![0; 1 << 16],
        })
    }

    /// The whole file now (invalid UTF-8 replaced; `/proc` text is ASCII).
    ///
    /// # Errors
    /// A read failed.
    pub fn read(&mut self) -> Result<String, String> {
        let mut len = 0;
        loop {
            if len == self.buf.len() {
                self.buf.resize(len * 2, 0);
            }
            let k = self
                .file
                .read_at(&mut self.buf[len..], len as u64)
                .map_err(|e| e.to_string())?;
            if k == 0 {
                break;
            }
            len += k;
        }
        Ok(String::from_utf8_lossy(&self.buf[..len]).into_owned())
    }
}

/// The receive queues of one process's sockets on one UDP port, polled.
pub struct PortQueues {
    files: Vec<Reread>,
    port: u16,
    inodes: HashSet<u64>,
}

impl PortQueues {
    /// The sockets of process `pid` bound to UDP `port`, IPv4 or IPv6; expects `sockets` of
    /// them (one per receive worker).
    ///
    /// # Errors
    /// A listing cannot be read, or it holds another number of the process's sockets on
    /// that port.
    pub fn find(pid: u32, port: u16, sockets: usize) -> Result<PortQueues, String> {
        let inodes = socket_inodes(pid);
        let mut files = Vec::new();
        let mut found = 0;
        for path in ["/proc/net/udp", "/proc/net/udp6"] {
            let Ok(mut f) = Reread::open(path) else {
                continue;
            };
            let k = parse(&f.read()?, port, &inodes).len();
            if k > 0 {
                found += k;
                files.push(f);
            }
        }
        if found != sockets {
            return Err(format!(
                "found {found} of the observer's sockets on UDP port {port} in /proc/net/udp{{,6}}, expected {sockets}"
            ));
        }
        Ok(PortQueues {
            files,
            port,
            inodes,
        })
    }

    /// Every socket's queue now.
    ///
    /// # Errors
    /// A listing cannot be read.
    pub fn read(&mut self) -> Result<Vec<Queue>, String> {
        let mut v = Vec::new();
        for f in &mut self.files {
            v.extend(parse(&f.read()?, self.port, &self.inodes));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    const LISTING: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  120: 0100007F:A1B2 00000000:0000 07 00000000:00000C00 00:00000000 00000000  1000        0 4242 2 0000000000000000 0
  121: 0100007F:A1B2 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 4243 2 0000000000000000 17
  122: 0100007F:A1B2 00000000:0000 07 00000000:000000FF 00:00000000 00000000  1000        0 9999 2 0000000000000000 0
  123: 0100007F:0035 00000000:0000 07 00000000:00000010 00:00000000 00000000  1000        0 4244 2 0000000000000000 0
";

    #[test]
    fn lines_of_the_port_and_the_process_inodes_only() {
        let inodes: HashSet<u64> = [4242, 4243, 4244].into();
        assert_eq!(
            parse(LISTING, 0xA1B2, &inodes),
            [
                Queue {
                    rx_bytes: 0xC00,
                    drops: 0
                },
                Queue {
                    rx_bytes: 0,
                    drops: 17
                }
            ]
        );
        assert_eq!(parse(LISTING, 0x35, &inodes).len(), 1);
        assert!(parse(LISTING, 0x36, &inodes).is_empty());
        assert!(parse("garbage\nmore garbage\n", 0xA1B2, &inodes).is_empty());
    }

    #[test]
    fn a_queued_datagram_shows_in_the_receive_queue_of_this_process() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rx.local_addr().unwrap().port();
        let mut q = PortQueues::find(std::process::id(), port, 1).unwrap();
        assert_eq!(q.read().unwrap()[0].rx_bytes, 0);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[7; 32], ("127.0.0.1", port)).unwrap();
        // Loopback delivery is synchronous: the datagram is queued when send_to returns.
        assert!(q.read().unwrap()[0].rx_bytes > 0);
        let mut buf = [0; 64];
        assert_eq!(rx.recv(&mut buf).unwrap(), 32);
        assert_eq!(q.read().unwrap()[0].rx_bytes, 0);
        assert!(PortQueues::find(std::process::id(), port, 2).is_err());
    }
}
