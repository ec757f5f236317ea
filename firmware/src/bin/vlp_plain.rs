//! Plain VLP v0.2 heartbeats (32-byte frames, CRC-32C) built with `vlp-core`'s sender session,
//! sent to 10.0.2.2:`port` (the host's 127.0.0.1:`port` under QEMU's user network).
//!
//! Arguments (semihosting command line): see [`RunArgs`]; `pid` defaults to one derived from
//! the MAC address. Frames carry status Ok, payload 0, nonces from 1, and the nanoseconds since
//! boot. A frame the socket refuses is not committed, so its nonce goes out with the next try.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use smoltcp::time::Instant;
use varta_firmware_mps2::app::{Source, MAX_DATAGRAM};
use varta_firmware_mps2::args::{self, RunArgs};
use varta_firmware_mps2::board::{fail, Board};
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
    let args = RunArgs::parse(cmd).unwrap_or_else(|e| fail(format_args!("vlp-plain: {e}")));
    let mut board = Board::bring_up().unwrap_or_else(|e| fail(format_args!("vlp-plain: {e}")));
    let pid = args.pid.unwrap_or_else(|| board.device_id());
    hprintln!("vlp-plain: pid {} -> port {}", pid, args.port);
    let mut source = Plain {
        session: Session::plain(pid),
        pending: None,
    };
    board.run("vlp-plain", &args, 49_153, &mut source)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("vlp-plain: {info}"))
}
