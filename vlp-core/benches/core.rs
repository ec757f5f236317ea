//! Per-frame costs of the protocol core: `cargo bench -p vlp-core`.
//!
//! Targets on the reference machine: emit + parse <= 30 ns together; seal and open <= 0.5 us
//! each. `benches/compare.sh` runs the seal/open benches beside `openssl speed` and with the
//! `chacha20`/`poly1305` backend cfgs.
//!
//! Figures are the CPU time of the benchmarking thread (`CLOCK_THREAD_CPUTIME_ID`), not wall
//! time: the build machine is shared, and time spent preempted by other work is not the
//! code's. `openssl speed` reports CPU time too. `VLP_BENCH_WALLCLOCK=1` measures wall time.

use std::hint::black_box;

#[path = "common/clock.rs"]
mod clock;

use clock::ThreadOrWall;
use criterion::measurement::Measurement;
use criterion::Criterion;
use vlp_core::crc::{crc32c, crc32c_hw, crc32c_nibble, crc32c_slice8};
use vlp_core::kdf::derive_agent_key;
use vlp_core::{Frame, Iv, Key, MasterDatagram, ReplayWindow, SharedDatagram, Status};

fn frame() -> Frame {
    Frame::new(Status::Degraded, 12_345, 1_234_567_890, 100, 0xDEAD_BEEF).unwrap()
}

fn iv() -> Iv {
    Iv {
        random: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88],
        counter: 7,
    }
}

fn key() -> Key {
    Key::from_bytes(core::array::from_fn(|i| i as u8))
}

fn wire<M: Measurement + 'static>(c: &mut Criterion<M>) {
    let f = frame();
    let bytes = f.emit();
    let mut g = c.benchmark_group("wire");
    g.bench_function("emit", |b| b.iter(|| black_box(black_box(&f).emit())));
    g.bench_function("parse", |b| {
        b.iter(|| Frame::parse(black_box(&bytes[..])).unwrap())
    });
    g.bench_function("emit+parse", |b| {
        b.iter(|| {
            let out = black_box(&f).emit();
            Frame::parse(black_box(&out[..])).unwrap()
        })
    });
    g.finish();
}

/// The frame's CRC input: 28 bytes.
fn crc<M: Measurement + 'static>(c: &mut Criterion<M>) {
    let data = frame().emit();
    let data = &data[..28];
    let mut g = c.benchmark_group("crc32c_28B");
    g.bench_function("dispatch", |b| b.iter(|| crc32c(black_box(data))));
    g.bench_function("slice8", |b| b.iter(|| crc32c_slice8(black_box(data))));
    g.bench_function("nibble", |b| b.iter(|| crc32c_nibble(black_box(data))));
    if crc32c_hw(data).is_some() {
        g.bench_function("sse42", |b| b.iter(|| crc32c_hw(black_box(data))));
    }
    g.finish();
}

fn envelope<M: Measurement + 'static>(c: &mut Criterion<M>) {
    let f = frame();
    let k = key();
    let agent = derive_agent_key(&k, f.pid());
    let shared = SharedDatagram::seal(&k, &iv(), &f);
    let master = MasterDatagram::seal(&agent, &iv(), &f);
    let mut g = c.benchmark_group("envelope");
    g.bench_function("seal_shared", |b| {
        b.iter(|| SharedDatagram::seal(black_box(&k), black_box(&iv()), black_box(&f)))
    });
    g.bench_function("open_shared", |b| {
        b.iter(|| black_box(&shared).open(black_box(&k)).unwrap())
    });
    g.bench_function("seal_master", |b| {
        b.iter(|| MasterDatagram::seal(black_box(&agent), black_box(&iv()), black_box(&f)))
    });
    g.bench_function("open_master", |b| {
        b.iter(|| black_box(&master).open(black_box(&agent)).unwrap())
    });
    // Opening with a wrong key: the cost of refusing a forged datagram.
    let wrong = Key::from_bytes([0xEE; 32]);
    g.bench_function("open_shared_bad_tag", |b| {
        b.iter(|| black_box(&shared).open(black_box(&wrong)).unwrap_err())
    });
    g.finish();

    // The `chacha20poly1305` crate (the envelope's test reference) on the same 32-byte frame,
    // cipher set up per datagram as a receiver holding many keys does: what the envelope would
    // cost without its own AEAD. Its backends follow the `chacha20_force_*` and
    // `poly1305_force_soft` cfgs (compare.sh --sweep).
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
    let nonce = iv().nonce();
    let mut g = c.benchmark_group("reference");
    g.bench_function("crate_seal", |b| {
        b.iter(|| {
            let mut body = black_box(&f).emit();
            let tag = ChaCha20Poly1305::new(black_box(k.as_bytes()).into())
                .encrypt_in_place_detached(black_box(&nonce).into(), &[], &mut body)
                .unwrap();
            (body, tag)
        })
    });
    let mut sealed = f.emit();
    let tag = ChaCha20Poly1305::new(k.as_bytes().into())
        .encrypt_in_place_detached(&nonce.into(), &[], &mut sealed)
        .unwrap();
    g.bench_function("crate_open", |b| {
        b.iter(|| {
            let mut body = *black_box(&sealed);
            ChaCha20Poly1305::new(black_box(k.as_bytes()).into())
                .decrypt_in_place_detached(black_box(&nonce).into(), &[], &mut body, &tag)
                .unwrap();
            Frame::parse(&body).unwrap()
        })
    });
    g.finish();
}

fn replay<M: Measurement + 'static>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group("replay");
    // In-order stream: each iteration checks and commits the next counter.
    g.bench_function("check+commit", |b| {
        let mut w = ReplayWindow::new();
        let mut next = iv();
        b.iter(|| {
            next.counter = next.counter.wrapping_add(1);
            w.check(black_box(&next)).unwrap();
            w.commit(black_box(&next));
        })
    });
    // A replay refused by check.
    let mut w = ReplayWindow::new();
    w.commit(&iv());
    g.bench_function("check_replayed", |b| {
        b.iter(|| black_box(&w).check(black_box(&iv())).unwrap_err())
    });
    g.finish();
}

fn kdf<M: Measurement + 'static>(c: &mut Criterion<M>) {
    let k = key();
    c.bench_function("kdf/derive_agent_key", |b| {
        b.iter(|| derive_agent_key(black_box(&k), black_box(12_345)))
    });
    // The `hkdf` crate, which `kdf` used before it zeroized its intermediates: same bytes.
    c.bench_function("kdf/derive_agent_key_hkdf_crate", |b| {
        b.iter(|| {
            let mut okm = [0u8; 32];
            hkdf::Hkdf::<sha2::Sha256>::new(None, black_box(k.as_bytes()))
                .expand_multi_info(
                    &[
                        vlp_core::kdf::AGENT_KEY_INFO,
                        &black_box(12_345u32).to_le_bytes(),
                    ],
                    &mut okm,
                )
                .unwrap();
            okm
        })
    });
}

/// What a load generator pays per identity (build and start a master-key sender: two HKDF
/// derivations), and per beat (prepare a sealed datagram, commit).
fn sender<M: Measurement + 'static>(c: &mut Criterion<M>) {
    use vlp_core::sender::{Kind, Sender, MAX_DATAGRAM_LEN};
    let k = key();
    let mut g = c.benchmark_group("sender");
    g.bench_function("master_new_and_start", |b| {
        b.iter(|| {
            let mut s = Sender::master(black_box(12_345), k.clone());
            s.start(black_box([7; 16]));
            s
        })
    });
    let mut s = Sender::master(12_345, k.clone());
    s.start([7; 16]);
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    g.bench_function("master_prepare_commit", |b| {
        b.iter(|| {
            let p = s
                .prepare(Kind::Beat(Status::Ok, 0), black_box(1), &mut buf)
                .unwrap();
            s.commit(&p).unwrap();
            black_box(&buf);
        })
    });
    g.finish();
}

fn run<M: Measurement + 'static>(c: &mut Criterion<M>) {
    wire(c);
    crc(c);
    envelope(c);
    replay(c);
    kdf(c);
    sender(c);
}

fn main() {
    run(&mut Criterion::default()
        .with_measurement(ThreadOrWall::get())
        .configure_from_args());
    Criterion::default().configure_from_args().final_summary();
}
