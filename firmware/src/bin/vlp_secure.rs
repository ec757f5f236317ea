//! Secure VLP v0.2 heartbeats: master-key datagrams (64 bytes: pid, IV, ChaCha20-Poly1305
//! sealed frame) built with `vlp-core`'s sender session, sent to 10.0.2.2:`port` (the host's
//! 127.0.0.1:`port` under QEMU's user network).
//!
//! Arguments (semihosting command line): those of [`RunArgs`] (`pid` defaults to one derived
//! from the MAC), plus `key=HEX` (the 32-byte master key) and `salt=HEX` (16 bytes of fresh
//! entropy for this boot), both required.
//!
//! The agent key is derived once from the master key and the pid (HKDF-SHA256, §4). IVs come
//! from the session salt, so a reboot with a fresh salt never reuses an AEAD nonce. QEMU's
//! MPS2 board has no random number generator: the host supplies the salt; a real board would
//! take it from its TRNG.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use smoltcp::time::Instant;
use varta_firmware_mps2::app::{Source, MAX_DATAGRAM};
use varta_firmware_mps2::args::{self, RunArgs};
use varta_firmware_mps2::board::{fail, Board};
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
    let args = RunArgs::parse(cmd).unwrap_or_else(|e| fail(format_args!("vlp-secure: {e}")));
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
    let mut board = Board::bring_up().unwrap_or_else(|e| fail(format_args!("vlp-secure: {e}")));
    let pid = args.pid.unwrap_or_else(|| board.device_id());
    hprintln!("vlp-secure: pid {} -> port {}, sealed", pid, args.port);
    let mut source = Secure {
        session: Session::secure(pid, salt),
        agent_key: derive_agent_key(&Key::from_bytes(master), pid),
        pending: None,
    };
    board.run("vlp-secure", &args, 49_154, &mut source)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("vlp-secure: {info}"))
}
