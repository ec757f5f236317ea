//! Instruction counts of the per-beat work on the Cortex-M4, measured under QEMU with
//! `-icount shift=0` (one instruction = one nanosecond of virtual time; the LAN9118's 25 MHz
//! `FREE_RUN` counter then ticks once per 40 instructions). Each operation runs `REPS` times
//! between two counter reads, less the cost of the empty loop, so the resolution is
//! 40 / `REPS` instructions. Without `-icount shift=0` the counter follows host time and the
//! figures would mean nothing: the binary first times a loop of known length (two instructions
//! per turn, in assembly) at two lengths and stops with failure unless both match icount.
//!
//! The beats are `varta-client-nostd`'s (`Agent::try_beat` into a sink transport), as the
//! `heartbeat` firmware sends them; vlp-core's seal and RustCrypto's AEAD alone are timed
//! beside them. Also prints the RAM of the client's types on this target. Exits with success
//! whenever the measurement is valid: `size-report.sh` judges the budgets.
#![no_std]
#![no_main]

use core::hint::black_box;

use chacha20poly1305::{AeadInPlace, ChaCha20Poly1305, KeyInit};
use core::mem::size_of;
use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use varta_client_nostd::{Agent, GlobalAgent, StackError, TaskMonitor};
use varta_firmware_mps2::board::{exit, fail};
use varta_firmware_mps2::lan9118::Lan9118;
use vlp_core::kdf::derive_agent_key;
use vlp_core::{crc, Key, MasterDatagram, Session, Status};

const REPS: u32 = 1_000;
/// Instructions per `FREE_RUN` tick under `-icount shift=0`.
const INSNS_PER_TICK: u64 = 40;

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

    // The client's beats, as the firmware sends them: prepare, seal, hand to a transport
    // (here a sink that takes every datagram), commit. `beat_once` is not inlined, so the
    // figure does not depend on how this function's own code is laid out.
    let mut now = 1_000u64;
    let mut plain = Agent::plain(0x1234_5678);
    let plain_beat = per(
        measure(REPS, &mut || {
            now += 1_000;
            let _ = black_box(beat_once(&mut plain, black_box(now)));
        }),
        REPS,
    );

    let master = Key::from_bytes([7; 32]);
    let mut agent = Agent::master(0x1234_5678, master.clone());
    agent.start([9; 16]);
    // The first beat of a session is not the steady state: take one before measuring.
    let _ = beat_once(&mut agent, now);
    let sealed_beat = per(
        measure(REPS, &mut || {
            now += 1_000;
            let _ = black_box(beat_once(&mut agent, black_box(now)));
        }),
        REPS,
    );
    if agent.session().next_nonce() != u64::from(REPS) + 2 {
        fail(format_args!("bench: sealed beats were refused"));
    }

    let kdf_reps = 100;
    let kdf = per(
        measure(kdf_reps, &mut || {
            black_box(derive_agent_key(black_box(&master), 0x1234_5678));
        }),
        kdf_reps,
    );

    // vlp-core's seal alone, and RustCrypto's AEAD alone on the same 32 bytes + 4 bytes of
    // associated data, to tell the client's and vlp-core's overhead from the cipher's cost.
    let agent_key = derive_agent_key(&master, 0x1234_5678);
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
    let rows: [(&str, &str, u64); 7] = [
        (
            "empty_loop",
            "empty loop iteration",
            empty / u64::from(REPS),
        ),
        ("crc32c_28", "crc32c over 28 bytes", crc),
        ("plain_beat", "plain beat (Agent::try_beat)", plain_beat),
        (
            "sealed_beat",
            "master-key sealed beat (Agent::try_beat)",
            sealed_beat,
        ),
        ("seal", "  of which vlp-core seal (MasterDatagram)", seal),
        (
            "raw_aead",
            "  RustCrypto ChaCha20-Poly1305 on 32 B",
            raw_aead,
        ),
        ("kdf", "agent key derivation (once per boot)", kdf),
    ];
    // `bench: NAME=VALUE` lines are what size-report.sh parses.
    for (key, what, insns) in rows {
        hprintln!("bench:   {:<42} {:>6}   [{}={}]", what, insns, key, insns);
    }
    hprintln!(
        "bench: RAM: Agent {} B, GlobalAgent {} B, TaskMonitor<2> {} B   [agent_ram={}] [global_agent_ram={}] [tasks2_ram={}]",
        size_of::<Agent>(),
        size_of::<GlobalAgent>(),
        size_of::<TaskMonitor<2>>(),
        size_of::<Agent>(),
        size_of::<GlobalAgent>(),
        size_of::<TaskMonitor<2>>()
    );
    // The budgets are judged by size-report.sh; a valid measurement exits with success.
    exit(true)
}

/// A transport that takes every datagram.
fn sink(datagram: &[u8]) -> Result<(), StackError> {
    black_box(datagram);
    Ok(())
}

/// One beat of `agent` through [`sink`], kept out of line (see the call sites).
#[inline(never)]
fn beat_once(agent: &mut Agent, now: u64) -> Result<(), varta_client_nostd::Error> {
    agent.try_beat(&mut sink, Status::Ok, 0, now)
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
