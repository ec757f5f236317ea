//! The Varta firmware: secure VLP heartbeats from `varta-client-nostd` over the LAN9118 and
//! smoltcp to 10.0.2.2:`port` (the host's 127.0.0.1:`port` under QEMU's user network), where
//! `varta-watch` listens with the master key.
//!
//! * The agent ([`Agent::agent_key`]: its fixed agent id and its own key, provisioned by the
//!   host, never the master; started with this boot's salt) lives in the [`GlobalAgent`]
//!   static [`AGENT`]; the main loop beats through it.
//! * The network (NIC, smoltcp interface and the UDP socket) lives in the static [`NET`], so
//!   that the last-gasp hook, a plain `fn`, can reach it: it pushes the terminal frame into the
//!   socket and polls the interface once, without waiting for anything.
//! * The `#[panic_handler]` calls [`panic_beat`] (one terminal Critical frame whose payload is
//!   the panic's source line), then ends the QEMU run with failure over semihosting.
//! * A [`TaskMonitor`] of two tasks (the network task and a "sensor" task, both checking in
//!   from the main loop) gives every beat its status and payload (the late-task bitmask), and
//!   pets the watchdog only when both are on time.
//!
//! Arguments (semihosting command line): see [`HeartbeatArgs`]; `mode=` picks the fault to
//! inject (module docs of `varta_firmware_mps2::scenario`). At the end it prints one summary
//! line, `heartbeat: summary beats=.. ok=.. degraded=.. pets=.. mode=..`, which `run-e2e.sh`
//! reads.
#![no_std]
#![no_main]

use core::cell::RefCell;
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use critical_section::Mutex;
use smoltcp::iface::{SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::udp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpEndpoint;
use varta_client_nostd::transport::smoltcp::SmoltcpTransport;
use varta_client_nostd::{
    panic_beat, Agent, GlobalAgent, Key, Kind, Status, TaskMonitor, TaskSpec, Transport,
    MAX_DATAGRAM_LEN,
};
use varta_firmware_mps2::args;
use varta_firmware_mps2::board::{exit, fail, Board};
use varta_firmware_mps2::net;
use varta_firmware_mps2::scenario::{Action, HeartbeatArgs, TASKS, TASK_NET, TASK_SENSOR};

/// The heartbeat agent, reachable from the main loop and the panic handler.
static AGENT: GlobalAgent = GlobalAgent::new();
/// The network, reachable from the main loop and the last-gasp hook.
static NET: Mutex<RefCell<Option<Net>>> = Mutex::new(RefCell::new(None));
/// Set by the last-gasp hook once the terminal frame left for the NIC.
static LAST_GASP_SENT: AtomicBool = AtomicBool::new(false);

/// Local UDP port of the heartbeat socket.
const LOCAL_PORT: u16 = 49_160;
/// Datagrams the socket can hold while ARP resolves the gateway.
const TX_SLOTS: usize = 4;
/// The run fails when no beat could be handed to the socket for this long.
const STUCK_MS: u64 = 5_000;
/// How long the end of a run waits for queued datagrams to leave.
const FLUSH_MS: u64 = 1_000;

/// The socket's buffers, `'static` so the socket can live in [`NET`].
struct Buffers {
    rx_meta: [udp::PacketMetadata; 1],
    rx: [u8; MAX_DATAGRAM_LEN],
    tx_meta: [udp::PacketMetadata; TX_SLOTS],
    tx: [u8; TX_SLOTS * MAX_DATAGRAM_LEN],
}

/// The board's network with one UDP socket bound, sending to the observer.
struct Net {
    board: Board,
    sockets: SocketSet<'static>,
    udp: SocketHandle,
    remote: IpEndpoint,
}

impl Net {
    /// Polls smoltcp (receive, ARP, transmit) and returns the time it used.
    fn poll(&mut self) -> Instant {
        let now = self.board.now();
        self.board
            .iface
            .poll(now, &mut self.board.eth, &mut self.sockets);
        now
    }

    /// The heartbeat clock: nanoseconds since bring-up, as of the last poll.
    fn nanos(&self) -> u64 {
        self.board.clock.nanos()
    }

    fn socket(&mut self) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket>(self.udp)
    }

    fn transport(&mut self) -> SmoltcpTransport<'_, 'static> {
        let remote = self.remote;
        SmoltcpTransport::new(self.socket(), remote)
    }

    /// Polls until the socket's queue is empty or `ms` pass; whether it emptied.
    fn flush(&mut self, ms: u64) -> bool {
        let start = self.poll();
        loop {
            if self.socket().send_queue() == 0 {
                return true;
            }
            if self.poll() - start > Duration::from_millis(ms) {
                return false;
            }
        }
    }
}

/// Runs `f` on the network. Only the main loop calls it, never while it already holds it.
fn with_net<R>(f: impl FnOnce(&mut Net) -> R) -> R {
    critical_section::with(|cs| match NET.borrow(cs).try_borrow_mut() {
        Ok(mut slot) => match slot.as_mut() {
            Some(net) => f(net),
            None => fail(format_args!("heartbeat: network not up")),
        },
        Err(_) => fail(format_args!("heartbeat: network re-entered")),
    })
}

/// The last-gasp send hook: queue the datagram in the socket and poll the interface once so
/// it reaches the NIC. Never waits: if the network is borrowed (the panic happened inside the
/// stack) or the socket is full, it gives up.
fn last_gasp_send(datagram: &[u8]) -> bool {
    critical_section::with(|cs| {
        let Ok(mut slot) = NET.borrow(cs).try_borrow_mut() else {
            return false;
        };
        let Some(net) = slot.as_mut() else {
            return false;
        };
        if net.transport().try_send(datagram).is_err() {
            return false;
        }
        net.poll();
        // The gateway's MAC is cached from the beats, so one poll hands it to the NIC.
        LAST_GASP_SENT.store(net.socket().send_queue() == 0, Ordering::Relaxed);
        true
    })
}

/// The time for the panic's terminal frame: the clock if the network is reachable, else 0
/// (the session then stamps the frame with the last beat's timestamp).
fn panic_now() -> u64 {
    critical_section::with(|cs| match NET.borrow(cs).try_borrow_mut() {
        Ok(mut slot) => slot.as_mut().map_or(0, |net| {
            net.board.now();
            net.nanos()
        }),
        Err(_) => 0,
    })
}

/// Pets the hardware watchdog. QEMU's MPS2 board has no watchdog the firmware must feed; a
/// real board's would be kicked here (e.g. `IWDG.KR = 0xAAAA`). Counting the pets lets the
/// end-to-end test see that a late task stops them.
fn pet_watchdog(pets: &mut u32) {
    *pets += 1;
}

#[entry]
fn main() -> ! {
    let mut cmd_buf = [0u8; 512];
    let cmd = args::cmdline(&mut cmd_buf).unwrap_or("");
    let args = HeartbeatArgs::parse(cmd).unwrap_or_else(|e| fail(format_args!("heartbeat: {e}")));
    let board = Board::bring_up().unwrap_or_else(|e| fail(format_args!("heartbeat: {e}")));
    let pid = args.run.pid.unwrap_or_else(|| board.device_id());

    let mut agent = Agent::agent_key(pid, Key::from_bytes(args.key));
    agent.start(args.salt);
    if AGENT.install(agent).is_err() {
        fail(format_args!("heartbeat: agent busy at boot"));
    }
    AGENT.set_last_gasp_hook(last_gasp_send);

    let (Some(buffers), Some(storage)) = (
        cortex_m::singleton!(: Buffers = Buffers {
            rx_meta: [udp::PacketMetadata::EMPTY; 1],
            rx: [0; MAX_DATAGRAM_LEN],
            tx_meta: [udp::PacketMetadata::EMPTY; TX_SLOTS],
            tx: [0; TX_SLOTS * MAX_DATAGRAM_LEN],
        }),
        cortex_m::singleton!(: [SocketStorage<'static>; 1] = [SocketStorage::EMPTY; 1]),
    ) else {
        fail(format_args!("heartbeat: socket buffers taken"));
    };
    let Buffers {
        rx_meta,
        rx,
        tx_meta,
        tx,
    } = buffers;
    let mut sockets = SocketSet::new(&mut storage[..]);
    let udp = sockets.add(udp::Socket::new(
        udp::PacketBuffer::new(&mut rx_meta[..], &mut rx[..]),
        udp::PacketBuffer::new(&mut tx_meta[..], &mut tx[..]),
    ));
    if let Err(e) = sockets.get_mut::<udp::Socket>(udp).bind(LOCAL_PORT) {
        fail(format_args!("heartbeat: bind: {e}"));
    }
    let remote = IpEndpoint::new(net::GATEWAY_IP.into(), args.run.port);
    critical_section::with(|cs| {
        NET.borrow(cs).replace(Some(Net {
            board,
            sockets,
            udp,
            remote,
        }))
    });
    hprintln!(
        "heartbeat: agent {} -> {}, agent-key datagrams every {} ms, mode {} after {}",
        pid,
        remote,
        args.run.interval_ms,
        args.mode.name(),
        args.after
    );
    run(&args)
}

/// Beat counters for the summary line.
#[derive(Default)]
struct Tally {
    beats: u32,
    ok: u32,
    degraded: u32,
    pets: u32,
}

impl Tally {
    fn print(&self, args: &HeartbeatArgs) {
        hprintln!(
            "heartbeat: summary beats={} ok={} degraded={} pets={} mode={}",
            self.beats,
            self.ok,
            self.degraded,
            self.pets,
            args.mode.name()
        );
    }
}

/// The main loop: poll the network, let the tasks check in, beat once per interval with the
/// task monitor's verdict, until the plan says otherwise.
fn run(args: &HeartbeatArgs) -> ! {
    let plan = args.plan();
    let interval = u64::from(args.run.interval_ms);
    let mut tasks = TaskMonitor::<TASKS>::new([TaskSpec::new(args.window_ms()); TASKS]);
    let mut tally = Tally::default();
    let start = with_net(|n| n.poll()).total_millis().unsigned_abs();
    tasks.restart(start);
    let mut next_beat = start;
    loop {
        let now = with_net(|n| n.poll()).total_millis().unsigned_abs();
        // The two tasks of this firmware: the network task just ran; the sensor task is
        // simulated and stops in mode=late-task. Indices are below TASKS, so no error.
        let _ = tasks.check_in(TASK_NET, now);
        if plan.checks_in(TASK_SENSOR, tally.beats) {
            let _ = tasks.check_in(TASK_SENSOR, now);
        }
        if now < next_beat {
            continue;
        }
        match plan.action(tally.beats) {
            Action::Beat => {
                let health = tasks.poll(now, || pet_watchdog(&mut tally.pets));
                let sent = with_net(|n| {
                    let t = n.nanos();
                    AGENT.try_beat(&mut n.transport(), health.status(), health.late_mask(), t)
                });
                match sent {
                    Ok(()) => {
                        tally.beats += 1;
                        match health.status() {
                            Status::Ok => tally.ok += 1,
                            _ => tally.degraded += 1,
                        }
                        next_beat = now + interval;
                    }
                    // Socket full (ARP pending): the beat's nonce was not consumed; retry on
                    // the next turn.
                    Err(e) if e.is_would_block() && now - next_beat < STUCK_MS => {}
                    Err(e) => fail(format_args!("heartbeat: beat {}: {e}", tally.beats + 1)),
                }
            }
            Action::Goodbye => {
                let sent = with_net(|n| {
                    let t = n.nanos();
                    AGENT.try_send(&mut n.transport(), Kind::Goodbye, t)
                });
                match sent {
                    Ok(()) => finish(args, &tally),
                    Err(e) if e.is_would_block() && now - next_beat < STUCK_MS => {}
                    Err(e) => fail(format_args!("heartbeat: goodbye: {e}")),
                }
            }
            Action::Silent => {
                hprintln!(
                    "heartbeat: silent for {} ms, still on the network",
                    args.run.linger_ms
                );
                let until = now + u64::from(args.run.linger_ms);
                loop {
                    let now = with_net(|n| n.poll()).total_millis().unsigned_abs();
                    let _ = tasks.check_in(TASK_NET, now);
                    let _ = tasks.check_in(TASK_SENSOR, now);
                    if now >= until {
                        break;
                    }
                }
                finish(args, &tally)
            }
            Action::Panic => {
                if !with_net(|n| n.flush(FLUSH_MS)) {
                    fail(format_args!("heartbeat: beats did not leave the socket"));
                }
                tally.print(args);
                inject_fault(tally.beats)
            }
        }
    }
}

/// Waits for the queued datagrams to leave, prints the summary and exits with success.
fn finish(args: &HeartbeatArgs, tally: &Tally) -> ! {
    if !with_net(|n| n.flush(FLUSH_MS)) {
        fail(format_args!(
            "heartbeat: datagrams did not leave the socket"
        ));
    }
    tally.print(args);
    exit(true)
}

/// Panics, after printing the source line the panic will report (the last gasp's payload).
#[track_caller]
fn inject_fault(beats: u32) -> ! {
    hprintln!(
        "heartbeat: injecting a panic at line {}",
        core::panic::Location::caller().line()
    );
    panic!("injected fault after {beats} beats");
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    panic_beat(&AGENT, info, panic_now(), halt)
}

/// After the last gasp: report and end the QEMU run with failure.
fn halt() -> ! {
    hprintln!(
        "heartbeat: panicked; last gasp {}",
        if LAST_GASP_SENT.load(Ordering::Relaxed) {
            "sent"
        } else {
            "NOT sent"
        }
    );
    exit(false)
}
