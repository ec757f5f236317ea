//! The sending loop shared by the firmware binaries: poll smoltcp, hand it one datagram per
//! interval from a [`Source`], and finish when every datagram has left the NIC.

use smoltcp::iface::{Interface, SocketSet, SocketStorage};
use smoltcp::phy::Device;
use smoltcp::socket::udp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpEndpoint;

/// Largest datagram a [`Source`] may produce (a master-key VLP datagram is 64 bytes).
pub const MAX_DATAGRAM: usize = 64;

/// What to send, where, and how fast.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Destination (10.0.2.2:PORT reaches the host's 127.0.0.1:PORT under QEMU).
    pub remote: IpEndpoint,
    /// Local UDP port.
    pub local_port: u16,
    /// Datagrams to send.
    pub count: u32,
    /// Time between datagrams.
    pub interval: Duration,
    /// Give up when the datagrams have not all left by this long after the start.
    pub deadline: Duration,
}

/// Time allowed on top of `count * interval` before a run is declared failed: ARP, boot and
/// a slow host.
pub const DEADLINE_SLACK: Duration = Duration::from_secs(10);

impl Plan {
    /// A plan whose deadline is `count * interval` plus [`DEADLINE_SLACK`].
    pub fn new(remote: IpEndpoint, local_port: u16, count: u32, interval: Duration) -> Self {
        Self {
            remote,
            local_port,
            count,
            interval,
            deadline: interval * count + DEADLINE_SLACK,
        }
    }
}

/// Produces the datagrams of a run.
pub trait Source {
    /// Writes datagram `seq` (1-based) for time `now` into `buf` and returns its length
    /// (at most [`MAX_DATAGRAM`]).
    ///
    /// # Errors
    ///
    /// A short reason when no datagram can be made; the run stops with [`RunError::Source`].
    fn prepare(
        &mut self,
        seq: u32,
        now: Instant,
        buf: &mut [u8; MAX_DATAGRAM],
    ) -> Result<usize, &'static str>;
    /// The datagram last prepared was queued by the socket (a refused one is not reported, so
    /// a sender can leave its nonce unconsumed).
    fn accepted(&mut self);
}

/// How a run ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Datagrams handed to the NIC.
    pub sent: u32,
    /// From the start to the last datagram leaving.
    pub elapsed: Duration,
}

/// How a run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunError {
    /// The local port could not be bound.
    Bind(udp::BindError),
    /// The [`Source`] could not make datagram `seq`.
    Source {
        /// 1-based datagram number.
        seq: u32,
        /// The source's reason.
        reason: &'static str,
    },
    /// The socket refused datagram `seq`.
    Send {
        /// 1-based datagram number.
        seq: u32,
        /// smoltcp's reason.
        error: udp::SendError,
    },
    /// The deadline passed with `queued` datagrams accepted and `pending` bytes not yet sent.
    Deadline {
        /// Datagrams the socket accepted.
        queued: u32,
        /// Bytes still in the socket's transmit buffer.
        pending: usize,
    },
}

impl core::fmt::Display for RunError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Bind(e) => write!(f, "bind: {e}"),
            Self::Source { seq, reason } => write!(f, "datagram {seq}: {reason}"),
            Self::Send { seq, error } => write!(f, "send of datagram {seq}: {error}"),
            Self::Deadline { queued, pending } => write!(
                f,
                "deadline passed: {queued} datagrams queued, {pending} bytes not sent"
            ),
        }
    }
}

/// Keeps the interface polled for `duration` without sending: the device stays reachable
/// (answers ARP) but says nothing, as a hung application on a live network would.
pub fn linger<D: Device + ?Sized>(
    device: &mut D,
    iface: &mut Interface,
    mut now: impl FnMut(&mut D) -> Instant,
    duration: Duration,
) {
    let mut storage: [SocketStorage<'_>; 0] = [];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let start = now(device);
    loop {
        let t = now(device);
        if t - start >= duration {
            return;
        }
        iface.poll(t, device, &mut sockets);
    }
}

/// Sends `plan.count` datagrams from `source` through `iface` over `device`, reading the time
/// with `now` before every poll.
///
/// # Errors
///
/// See [`RunError`].
pub fn send_all<D: Device + ?Sized>(
    device: &mut D,
    iface: &mut Interface,
    mut now: impl FnMut(&mut D) -> Instant,
    plan: &Plan,
    source: &mut impl Source,
) -> Result<Report, RunError> {
    let mut rx_meta = [udp::PacketMetadata::EMPTY; 1];
    let mut rx_data = [0u8; MAX_DATAGRAM];
    let mut tx_meta = [udp::PacketMetadata::EMPTY; 4];
    let mut tx_data = [0u8; 4 * MAX_DATAGRAM];
    let mut storage = [SocketStorage::EMPTY; 1];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let handle = sockets.add(udp::Socket::new(
        udp::PacketBuffer::new(&mut rx_meta[..], &mut rx_data[..]),
        udp::PacketBuffer::new(&mut tx_meta[..], &mut tx_data[..]),
    ));
    sockets
        .get_mut::<udp::Socket>(handle)
        .bind(plan.local_port)
        .map_err(RunError::Bind)?;

    let start = now(device);
    let mut next_send = start;
    let mut queued = 0u32;
    let mut buf = [0u8; MAX_DATAGRAM];
    loop {
        let t = now(device);
        iface.poll(t, device, &mut sockets);
        let socket = sockets.get_mut::<udp::Socket>(handle);
        if queued < plan.count && t >= next_send && socket.can_send() {
            let seq = queued + 1;
            let len = source
                .prepare(seq, t, &mut buf)
                .map_err(|reason| RunError::Source { seq, reason })?
                .min(MAX_DATAGRAM);
            socket
                .send_slice(&buf[..len], plan.remote)
                .map_err(|error| RunError::Send { seq, error })?;
            source.accepted();
            queued = seq;
            next_send = t + plan.interval;
        }
        // Dequeued from the socket means written into the NIC's TX FIFO.
        if queued == plan.count && socket.send_queue() == 0 {
            return Ok(Report {
                sent: queued,
                elapsed: t - start,
            });
        }
        if t - start > plan.deadline {
            return Err(RunError::Deadline {
                queued,
                pending: socket.send_queue(),
            });
        }
    }
}
