//! Prometheus metrics, served from a small second thread.
//!
//! The daemon loop owns every counter as a plain integer; it never shares them behind a lock.
//! On a scrape the HTTP thread raises a flag and wakes the loop through an eventfd; at the end
//! of its current turn the loop copies a [`Snapshot`] (bounded: at most
//! `--metrics-max-agents` per-agent series) and sends it over a channel. The HTTP thread
//! encodes it with `prometheus-client`. The loop never waits for the HTTP thread; a slow or
//! stuck scraper only delays its own answer.
//!
//! `varta_beats_total{pid,listener}` counts regular beats only. Terminal frames (a crash report,
//! an announced clean exit) are not heartbeats: each raises one event, counted in
//! `varta_events_total{kind="crash"}` or `{kind="goodbye"}`; `varta_frames_accepted_total`
//! counts every accepted frame, terminal ones included.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// One agent's series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRow {
    /// Pid.
    pub pid: u32,
    /// `unix` or `udpN`.
    pub listener: &'static str,
    /// Accepted regular beats (terminal and goodbye frames are events, not beats).
    pub beats: u64,
    /// Stall events.
    pub stalls: u64,
    /// 0 ok, 1 degraded, 2 critical, 3 stall.
    pub status: u8,
}

/// Everything a scrape shows, copied by the loop.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Per-agent rows (bounded).
    pub agents: Vec<AgentRow>,
    /// Agents left out of `agents` by the bound.
    pub agents_omitted: u64,
    /// Entries in the tracker.
    pub agents_tracked: u64,
    /// Tracker capacity.
    pub capacity: u64,
    /// Frames accepted.
    pub frames_accepted: u64,
    /// Of which secure datagrams reordered within the replay window.
    pub frames_reordered: u64,
    /// Events the tracker dropped because its queue was full.
    pub events_dropped: u64,
    /// recvmmsg errors other than EAGAIN.
    pub recv_errors: u64,
    /// Datagrams the kernel dropped on a full receive queue, by listener.
    pub kernel_drops: Vec<(&'static str, u64)>,
    /// Datagrams received, by listener label.
    pub datagrams: Vec<(&'static str, u64)>,
    /// Decode errors by kind (`DecodeError::KINDS`).
    pub decode_errors: Vec<(&'static str, u64)>,
    /// Rejections by reason.
    pub rejections: Vec<(&'static str, u64)>,
    /// Pid claimed differs from the attested pid (or no credentials).
    pub auth_failures: u64,
    /// AEAD tag failures.
    pub decrypt_failures: u64,
    /// Replay-window refusals.
    pub replays: u64,
    /// Capacity refusals.
    pub capacity_exceeded: u64,
    /// Events emitted, by kind.
    pub events: Vec<(&'static str, u64)>,
    /// Recovery outcomes by label.
    pub recovery: Vec<(&'static str, u64)>,
    /// Recovery refusals by reason (`varta_recovery_refused_total{reason}`).
    pub recovery_refused: Vec<(&'static str, u64)>,
    /// Recovery decisions that could not be written to the audit file.
    pub recovery_audit_dropped: u64,
    /// Run time of finished recovery children, ns, summed, and their number.
    pub recovery_duration: (u64, u64),
    /// Loop turns that hit the per-turn datagram bound (flood indicator).
    pub busy_turns: u64,
    /// Output write errors.
    pub output_errors: u64,
    /// Seconds since start.
    pub uptime_s: f64,
}

type Labels = Vec<(String, String)>;

fn lab(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

impl Snapshot {
    /// Encodes in the Prometheus text format.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut reg = Registry::default();
        let beats = Family::<Labels, Counter>::default();
        let stalls = Family::<Labels, Counter>::default();
        let status = Family::<Labels, Gauge>::default();
        for a in &self.agents {
            let pid = a.pid.to_string();
            let l = lab(&[("pid", &pid), ("listener", a.listener)]);
            beats.get_or_create(&l).inc_by(a.beats);
            stalls.get_or_create(&l).inc_by(a.stalls);
            status.get_or_create(&l).set(i64::from(a.status));
        }
        reg.register(
            "varta_beats",
            "Accepted regular heartbeats per agent; terminal frames are not beats: a crash report counts in varta_events_total{kind=\"crash\"}, a goodbye in varta_events_total{kind=\"goodbye\"}, and both in varta_frames_accepted_total",
            beats,
        );
        reg.register("varta_stalls", "Stall events per agent", stalls);
        reg.register(
            "varta_status",
            "Agent status: 0 ok, 1 degraded, 2 critical, 3 stall",
            status,
        );
        let fam = |pairs: &[(&'static str, u64)], key: &str| {
            let f = Family::<Labels, Counter>::default();
            for (k, v) in pairs {
                f.get_or_create(&lab(&[(key, k)])).inc_by(*v);
            }
            f
        };
        reg.register(
            "varta_decode_errors",
            "Datagrams refused by the frame decoder, by failed rule",
            fam(&self.decode_errors, "kind"),
        );
        reg.register(
            "varta_rejections",
            "Datagrams refused, by reason",
            fam(&self.rejections, "reason"),
        );
        reg.register(
            "varta_datagrams_received",
            "Datagrams received, by listener",
            fam(&self.datagrams, "listener"),
        );
        reg.register(
            "varta_receive_queue_drops",
            "Datagrams the kernel dropped because the listener's receive queue was full",
            fam(&self.kernel_drops, "listener"),
        );
        reg.register(
            "varta_events",
            "Events emitted, by kind",
            fam(&self.events, "kind"),
        );
        reg.register(
            "varta_recovery_outcomes",
            "Recovery command outcomes",
            fam(&self.recovery, "outcome"),
        );
        reg.register(
            "varta_recovery_refused",
            "Recovery runs refused, by reason",
            fam(&self.recovery_refused, "reason"),
        );
        let counter = |v: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            c
        };
        reg.register(
            "varta_recovery_audit_dropped",
            "Recovery decisions that could not be written to the audit file (unaudited)",
            counter(self.recovery_audit_dropped),
        );
        reg.register(
            "varta_frames_accepted",
            "Frames accepted from all listeners (regular beats and terminal frames)",
            counter(self.frames_accepted),
        );
        reg.register(
            "varta_frames_reordered",
            "Secure datagrams accepted out of order within the replay window",
            counter(self.frames_reordered),
        );
        reg.register(
            "varta_events_dropped",
            "Events lost because the tracker's event queue was full",
            counter(self.events_dropped),
        );
        reg.register(
            "varta_receive_errors",
            "Socket receive errors (other than would-block)",
            counter(self.recv_errors),
        );
        reg.register(
            "varta_frame_auth_failures",
            "Frames whose pid is not the kernel-attested sender pid",
            counter(self.auth_failures),
        );
        reg.register(
            "varta_frame_decrypt_failures",
            "Secure datagrams whose tag did not verify",
            counter(self.decrypt_failures),
        );
        reg.register(
            "varta_replays_refused",
            "Secure datagrams refused by the replay window",
            counter(self.replays),
        );
        reg.register(
            "varta_tracker_capacity_exceeded",
            "New agents refused because the tracker is full",
            counter(self.capacity_exceeded),
        );
        reg.register(
            "varta_busy_turns",
            "Loop turns that hit the per-turn datagram bound",
            counter(self.busy_turns),
        );
        reg.register(
            "varta_output_write_errors",
            "Failed writes to stdout or the export file",
            counter(self.output_errors),
        );
        let gauge = |v: i64| {
            let g = Gauge::<i64>::default();
            g.set(v);
            g
        };
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        reg.register(
            "varta_recovery_duration_ns_sum",
            "Total run time of finished recovery children, ns",
            gauge(as_i64(self.recovery_duration.0)),
        );
        reg.register(
            "varta_recovery_duration_count",
            "Finished recovery children",
            counter(self.recovery_duration.1),
        );
        reg.register(
            "varta_agents_tracked",
            "Agents in the tracker",
            gauge(as_i64(self.agents_tracked)),
        );
        reg.register(
            "varta_tracker_capacity",
            "Tracker capacity",
            gauge(as_i64(self.capacity)),
        );
        reg.register(
            "varta_agents_omitted",
            "Agents left out of per-agent series by --metrics-max-agents",
            gauge(as_i64(self.agents_omitted)),
        );
        let up =
            prometheus_client::metrics::gauge::Gauge::<f64, std::sync::atomic::AtomicU64>::default(
            );
        up.set(self.uptime_s);
        reg.register(
            "varta_uptime_seconds",
            "Seconds since the observer started",
            up,
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &reg);
        out
    }
}

/// The loop's side of the scrape protocol.
#[derive(Debug)]
pub struct MetricsLink {
    wanted: Arc<AtomicBool>,
    wake: OwnedFd,
    tx: Sender<Snapshot>,
}

impl MetricsLink {
    /// The eventfd to poll; readable when a scrape waits.
    #[must_use]
    pub fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Clears the eventfd and tells whether a snapshot is wanted.
    pub fn take_request(&self) -> bool {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a local u64 from our own non-blocking eventfd.
        let _ = unsafe { libc::read(self.wake.as_raw_fd(), std::ptr::addr_of_mut!(v).cast(), 8) };
        self.wanted.swap(false, Ordering::AcqRel)
    }

    /// Hands a snapshot to the HTTP thread (never blocks).
    pub fn publish(&self, s: Snapshot) {
        let _ = self.tx.send(s);
    }
}

/// Starts the HTTP thread on `addr`. Returns the link for the loop and the bound address.
///
/// # Errors
/// Binding the TCP listener or creating the eventfd.
pub fn serve(addr: SocketAddr) -> io::Result<(MetricsLink, SocketAddr)> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    // SAFETY: eventfd has no memory preconditions; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let wake = unsafe { OwnedFd::from_raw_fd(fd) };
    let wake_http = wake.try_clone()?;
    let wanted = Arc::new(AtomicBool::new(false));
    let (tx, rx) = channel();
    let w = Arc::clone(&wanted);
    std::thread::Builder::new()
        .name("varta-metrics".into())
        .spawn(move || http_loop(&listener, &w, &wake_http, &rx))?;
    Ok((MetricsLink { wanted, wake, tx }, bound))
}

fn http_loop(listener: &TcpListener, wanted: &AtomicBool, wake: &OwnedFd, rx: &Receiver<Snapshot>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = handle(&mut conn, wanted, wake, rx);
    }
}

fn handle(
    conn: &mut TcpStream,
    wanted: &AtomicBool,
    wake: &OwnedFd,
    rx: &Receiver<Snapshot>,
) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while n < buf.len() {
        let k = conn.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n")
            || buf[..n].windows(2).any(|w| w == b"\n\n")
        {
            break;
        }
    }
    let req = String::from_utf8_lossy(&buf[..n]);
    let mut parts = req.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    if method != "GET" {
        return respond(conn, "405 Method Not Allowed", "text/plain", "only GET\n");
    }
    if path != "/metrics" && path != "/" {
        return respond(conn, "404 Not Found", "text/plain", "try /metrics\n");
    }
    // Drop answers to earlier requests that timed out.
    while rx.try_recv().is_ok() {}
    wanted.store(true, Ordering::Release);
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a local u64 to our eventfd.
    let _ = unsafe { libc::write(wake.as_raw_fd(), std::ptr::addr_of!(one).cast(), 8) };
    match rx.recv_timeout(Duration::from_secs(3)) {
        Ok(s) => respond(
            conn,
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            &s.encode(),
        ),
        Err(_) => respond(
            conn,
            "503 Service Unavailable",
            "text/plain",
            "observer busy\n",
        ),
    }
}

fn respond(conn: &mut TcpStream, status: &str, ctype: &str, body: &str) -> io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}
