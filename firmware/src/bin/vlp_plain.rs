//! Plain VLP v0.2 heartbeats (32-byte frames, CRC-32C) built with `vlp-core`'s sender session,
//! sent to 10.0.2.2:`port` (the host's 127.0.0.1:`port` under QEMU's user network).
//!
//! Arguments (semihosting command line): `port=N` (required), `count=N` (default 5),
//! `interval_ms=N` (default 20), `pid=N` (default: from the MAC address; not 0 or 1).
//! Frames carry status Ok, payload 0, nonces 1..=count and the nanoseconds since boot.
//! A frame the socket refuses is not committed, so its nonce is reused by the next attempt.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpEndpoint;
use varta_firmware_mps2::app::{self, Plan, Source, MAX_DATAGRAM};
use varta_firmware_mps2::board::{exit, fail, Board};
use varta_firmware_mps2::{args, net};
use vlp_core::{Beat, Session, Status, FRAME_LEN};

struct Plain {
    session: Session,
    pending: Option<Beat>,
}

impl Source for Plain {
    fn prepare(
        &mut self,
        _seq: u32,
        now: Instant,
        buf: &mut [u8; MAX_DATAGRAM],
    ) -> Result<usize, &'static str> {
        let nanos = now.total_micros().unsigned_abs().saturating_mul(1_000);
        let beat = self
            .session
            .beat(Status::Ok, 0, nanos)
            .map_err(|_| "vlp-core refused the beat")?;
        buf[..FRAME_LEN].copy_from_slice(&beat.emit());
        self.pending = Some(beat);
        Ok(FRAME_LEN)
    }

    fn accepted(&mut self) {
        if let Some(beat) = self.pending.take() {
            // Only this loop touches the session, so the beat is the current one.
            let _ = self.session.commit(&beat);
        }
    }
}

#[entry]
fn main() -> ! {
    let mut cmd_buf = [0u8; 256];
    let cmd = args::cmdline(&mut cmd_buf).unwrap_or("");
    let Some(port) = args::find_u32(cmd, "port").and_then(|p| u16::try_from(p).ok()) else {
        fail(format_args!("vlp-plain: missing or bad port=N"));
    };
    let count = args::find_u32(cmd, "count").unwrap_or(5);
    let interval = args::find_u32(cmd, "interval_ms").unwrap_or(20);

    let mut board = Board::bring_up().unwrap_or_else(|e| fail(format_args!("vlp-plain: {e}")));
    let pid = args::find_u32(cmd, "pid").unwrap_or_else(|| board.device_id());
    if pid <= 1 {
        fail(format_args!("vlp-plain: pid {pid} is reserved"));
    }
    hprintln!(
        "vlp-plain: pid {} -> {}:{}, {} beats",
        pid,
        net::GATEWAY_IP,
        port,
        count
    );
    let plan = Plan {
        remote: IpEndpoint::new(net::GATEWAY_IP.into(), port),
        local_port: 49_153,
        count,
        interval: Duration::from_millis(interval.into()),
        deadline: Duration::from_secs(10),
    };
    let mut source = Plain {
        session: Session::plain(pid),
        pending: None,
    };
    let Board { eth, clock, iface } = &mut board;
    match app::send_all(
        eth,
        iface,
        |eth| clock.instant(eth.free_run()),
        &plan,
        &mut source,
    ) {
        Ok(report) => {
            hprintln!(
                "vlp-plain: {} beats sent in {} ms, next nonce {}",
                report.sent,
                report.elapsed.total_millis(),
                source.session.next_nonce()
            );
            exit(true)
        }
        Err(e) => fail(format_args!("vlp-plain: {e}")),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("vlp-plain: {info}"))
}
