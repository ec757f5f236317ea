//! Instruction counts of the per-beat work on the Cortex-M4, measured under QEMU with
//! `-icount shift=0` (one instruction = one nanosecond of virtual time; the LAN9118's 25 MHz
//! `FREE_RUN` counter then ticks once per 40 instructions). Each operation runs `REPS` times
//! between two counter reads, less the cost of the empty loop, so the resolution is
//! 40 / `REPS` instructions. Without `-icount shift=0` the counter follows host time and the
//! figures would mean nothing: the binary first times a loop of known length (two instructions
//! per turn, in assembly) at two lengths and stops with failure unless both match icount.
//!
//! Exits with failure when a sealed beat costs more than the budget (5,000).
#![no_std]
#![no_main]

use core::hint::black_box;

use chacha20poly1305::{AeadInPlace, ChaCha20Poly1305, KeyInit};
use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use varta_firmware_mps2::board::{exit, fail};
use varta_firmware_mps2::lan9118::Lan9118;
use vlp_core::kdf::derive_agent_key;
use vlp_core::{crc, Key, MasterDatagram, Session, Status};

const REPS: u32 = 1_000;
/// Instructions per `FREE_RUN` tick under `-icount shift=0`.
const INSNS_PER_TICK: u64 = 40;
/// Issue 4's budget for one sealed beat.
const SEALED_BEAT_BUDGET: u64 = 5_000;

#[entry]
fn main() -> ! {
    let Some(mut eth) = Lan9118::take_mps2() else {
        fail(format_args!("bench: LAN9118 taken"));
    };
    // Calibration: `subs`/`bne` is exactly two instructions per turn.
    for turns in [10_000u32, 1_000_000] {
        let t0 = eth.free_run();
        spin(turns);
        let insns = u64::from(eth.free_run().wrapping_sub(t0)) * INSNS_PER_TICK;
        let want = 2 * u64::from(turns);
        // A few instructions around the loop, plus one tick of quantisation either side.
        if insns.abs_diff(want) > 2 * INSNS_PER_TICK {
            fail(format_args!(
                "bench: {turns} turns of a 2-instruction loop read as {insns} instructions: \
                 run under QEMU with -icount shift=0"
            ));
        }
    }

    let mut measure = |reps: u32, f: &mut dyn FnMut()| -> u64 {
        let t0 = eth.free_run();
        for _ in 0..reps {
            f();
        }
        let t1 = eth.free_run();
        u64::from(t1.wrapping_sub(t0)) * INSNS_PER_TICK
    };

    let empty = measure(REPS, &mut || black_box(()));
    let per = |total: u64, reps: u32| {
        total.saturating_sub(empty * u64::from(reps) / u64::from(REPS)) / u64::from(reps)
    };

    let frame28 = [0x5Au8; 28];
    let crc = per(
        measure(REPS, &mut || {
            black_box(crc::crc32c(black_box(&frame28)));
        }),
        REPS,
    );

    let mut plain = Session::plain(0x1234_5678);
    let mut now = 1_000u64;
    let plain_beat = per(
        measure(REPS, &mut || {
            now += 1_000;
            if let Ok(beat) = plain.beat(Status::Ok, 0, black_box(now)) {
                black_box(beat.emit());
                let _ = plain.commit(&beat);
            }
        }),
        REPS,
    );

    let master = Key::from_bytes([7; 32]);
    let agent_key = derive_agent_key(&master, 0x1234_5678);
    let kdf_reps = 100;
    let kdf = per(
        measure(kdf_reps, &mut || {
            black_box(derive_agent_key(black_box(&master), 0x1234_5678));
        }),
        kdf_reps,
    );

    let mut secure = Session::secure(0x1234_5678, [9; 16]);
    let sealed_beat = per(
        measure(REPS, &mut || {
            now += 1_000;
            if let Ok(beat) = secure.beat(Status::Ok, 0, black_box(now)) {
                if let Ok(d) = beat.seal_master(black_box(&agent_key)) {
                    black_box(d);
                    let _ = secure.commit(&beat);
                }
            }
        }),
        REPS,
    );

    let beat = match Session::secure(0x1234_5678, [9; 16]).beat(Status::Ok, 0, 5) {
        Ok(b) => b,
        Err(e) => fail(format_args!("bench: {e}")),
    };
    let (frame, iv) = (
        *beat.frame(),
        beat.iv()
            .unwrap_or_else(|| fail(format_args!("bench: no IV"))),
    );
    let seal = per(
        measure(REPS, &mut || {
            black_box(MasterDatagram::seal(black_box(&agent_key), &iv, &frame));
        }),
        REPS,
    );

    // RustCrypto's AEAD alone on the same 32 bytes + 4 bytes of associated data, to tell
    // vlp-core's overhead from the cipher's cost.
    let aead = ChaCha20Poly1305::new(agent_key.as_bytes().into());
    let nonce = iv.nonce();
    let mut msg = [0u8; 32];
    let raw_aead = per(
        measure(REPS, &mut || {
            let tag = aead.encrypt_in_place_detached(
                (&nonce).into(),
                black_box(&[1, 2, 3, 4]),
                black_box(&mut msg),
            );
            let _ = black_box(tag);
        }),
        REPS,
    );

    hprintln!("bench: instructions per operation on the Cortex-M4 (QEMU -icount shift=0)");
    let rows: [(&str, u64); 7] = [
        ("empty loop iteration", empty / u64::from(REPS)),
        ("crc32c over 28 bytes", crc),
        ("plain beat (prepare+emit+commit)", plain_beat),
        ("ChaCha20-Poly1305 on 32 B (RustCrypto)", raw_aead),
        ("seal one master datagram (vlp-core)", seal),
        ("sealed beat (prepare+seal+commit)", sealed_beat),
        ("agent key derivation (once per boot)", kdf),
    ];
    for (what, insns) in rows {
        hprintln!("bench:   {:<38} {:>6}", what, insns);
    }
    hprintln!(
        "bench: sealed beat {} instructions, budget {}: {}",
        sealed_beat,
        SEALED_BEAT_BUDGET,
        if sealed_beat <= SEALED_BEAT_BUDGET {
            "ok"
        } else {
            "OVER"
        }
    );
    hprintln!(
        "bench: RAM: Session {} bytes, Key {} bytes",
        core::mem::size_of::<Session>(),
        core::mem::size_of::<Key>()
    );
    exit(sealed_beat <= SEALED_BEAT_BUDGET)
}

/// Runs `turns` turns of a two-instruction loop.
fn spin(turns: u32) {
    if turns == 0 {
        return;
    }
    // SAFETY: register-only arithmetic and a local branch; no memory, no stack.
    unsafe {
        core::arch::asm!(
            "2:",
            "subs {n}, {n}, #1",
            "bne 2b",
            n = inout(reg) turns => _,
            options(nomem, nostack),
        );
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("bench: {info}"))
}
