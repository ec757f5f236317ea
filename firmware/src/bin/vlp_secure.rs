//! Secure VLP v0.2 heartbeats: master-key datagrams (64 bytes: pid, IV, ChaCha20-Poly1305
//! sealed frame) built with `vlp-core`'s sender session, sent to 10.0.2.2:`port` (the host's
//! 127.0.0.1:`port` under QEMU's user network).
//!
//! Arguments (semihosting command line): `port=N` (required), `key=HEX` (the 32-byte master
//! key, required), `salt=HEX` (16 bytes of fresh entropy for this boot, required),
//! `count=N` (default 5), `interval_ms=N` (default 20), `pid=N` (default: from the MAC).
//!
//! The agent key is derived once from the master key and the pid (HKDF-SHA256, §4). IVs come
//! from the session salt, so a reboot with a fresh salt never reuses an AEAD nonce. QEMU's
//! MPS2 board has no random number generator: the host supplies the salt; a real board would
//! take it from its TRNG.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpEndpoint;
use varta_firmware_mps2::app::{self, Plan, Source, MAX_DATAGRAM};
use varta_firmware_mps2::board::{exit, fail, Board};
use varta_firmware_mps2::{args, net};
use vlp_core::envelope::MASTER_LEN;
use vlp_core::kdf::{derive_agent_key, SALT_LEN};
use vlp_core::{Beat, Key, Session, Status};

struct Secure {
    session: Session,
    agent_key: Key,
    pending: Option<Beat>,
}

impl Source for Secure {
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
        let sealed = beat
            .seal_master(&self.agent_key)
            .map_err(|_| "vlp-core could not seal the beat")?;
        buf[..MASTER_LEN].copy_from_slice(&sealed.0);
        self.pending = Some(beat);
        Ok(MASTER_LEN)
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
    let mut cmd_buf = [0u8; 512];
    let cmd = args::cmdline(&mut cmd_buf).unwrap_or("");
    let Some(port) = args::find_u32(cmd, "port").and_then(|p| u16::try_from(p).ok()) else {
        fail(format_args!("vlp-secure: missing or bad port=N"));
    };
    let Some(master) = args::find_hex::<32>(cmd, "key") else {
        fail(format_args!(
            "vlp-secure: missing or bad key=HEX (32 bytes)"
        ));
    };
    let Some(salt) = args::find_hex::<SALT_LEN>(cmd, "salt") else {
        fail(format_args!(
            "vlp-secure: missing or bad salt=HEX (16 bytes)"
        ));
    };
    let count = args::find_u32(cmd, "count").unwrap_or(5);
    let interval = args::find_u32(cmd, "interval_ms").unwrap_or(20);

    let mut board = Board::bring_up().unwrap_or_else(|e| fail(format_args!("vlp-secure: {e}")));
    let pid = args::find_u32(cmd, "pid").unwrap_or_else(|| board.device_id());
    if pid <= 1 {
        fail(format_args!("vlp-secure: pid {pid} is reserved"));
    }
    hprintln!(
        "vlp-secure: pid {} -> {}:{}, {} sealed beats",
        pid,
        net::GATEWAY_IP,
        port,
        count
    );
    let plan = Plan {
        remote: IpEndpoint::new(net::GATEWAY_IP.into(), port),
        local_port: 49_154,
        count,
        interval: Duration::from_millis(interval.into()),
        deadline: Duration::from_secs(10),
    };
    let mut source = Secure {
        session: Session::secure(pid, salt),
        agent_key: derive_agent_key(&Key::from_bytes(master), pid),
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
                "vlp-secure: {} beats sent in {} ms, next nonce {}",
                report.sent,
                report.elapsed.total_millis(),
                source.session.next_nonce()
            );
            exit(true)
        }
        Err(e) => fail(format_args!("vlp-secure: {e}")),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("vlp-secure: {info}"))
}
