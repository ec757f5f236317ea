//! The Unix-socket client against a real observer socket: bytes on the wire, nonces, every
//! drop reason the kernel can produce, reconnects.
mod common;

use std::time::{Duration, Instant};

use common::{temp_dir, UdsObserver};
use varta_client::vlp_core::crc::crc32c;
use varta_client::{
    BeatError, BeatOutcome, DropReason, Frame, Status, Varta, GOODBYE_PAYLOAD, NONCE_TERMINAL,
};

fn frame(bytes: &[u8]) -> Frame {
    let f = Frame::parse(bytes).expect("a valid VLP v0.2 frame");
    // Byte-exact: re-emitting the parsed value gives back the very same 32 bytes.
    assert_eq!(&f.emit()[..], bytes);
    f
}

#[test]
fn frames_are_byte_exact_with_nonces_1_2_3() {
    let dir = temp_dir("exact");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let before = Instant::now();
    let mut v = Varta::connect(&obs.path).unwrap();
    let pid = std::process::id();
    assert_eq!(v.pid(), pid);

    let statuses = [Status::Ok, Status::Degraded, Status::Critical, Status::Ok];
    let mut last_ts = 0;
    for (i, status) in statuses.into_iter().enumerate() {
        let payload = 0xA0B0_C0D0 + i as u32;
        assert_eq!(v.beat(status, payload), BeatOutcome::Sent);
        let bytes = obs.recv();
        assert_eq!(bytes.len(), 32);
        // The fixed header and the CRC, checked independently of the parser.
        assert_eq!(&bytes[0..3], &[0x56, 0x41, 0x02]);
        assert_eq!(bytes[3], status.as_u8());
        assert_eq!(&bytes[4..8], &pid.to_le_bytes());
        assert_eq!(&bytes[16..24], &(i as u64 + 1).to_le_bytes());
        assert_eq!(&bytes[24..28], &payload.to_le_bytes());
        assert_eq!(&bytes[28..32], &crc32c(&bytes[..28]).to_le_bytes());
        let f = frame(&bytes);
        assert_eq!(
            (f.status(), f.pid(), f.nonce(), f.payload()),
            (status, pid, i as u64 + 1, payload)
        );
        // Nanoseconds since connect: monotonic and bounded by our own clock.
        assert!(f.timestamp() >= last_ts);
        assert!(u128::from(f.timestamp()) <= before.elapsed().as_nanos());
        last_ts = f.timestamp();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(last_ts >= 6_000_000, "three 2 ms sleeps elapsed: {last_ts}");
    assert_eq!(v.next_nonce(), 5);
    assert_eq!(v.clock_regressions(), 0);
    assert_eq!(v.fork_recoveries(), 0);
}

#[test]
fn stall_is_refused_and_never_sent() {
    let dir = temp_dir("stall");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let mut v = Varta::connect(&obs.path).unwrap();
    let out = v.beat(Status::Stall, 0);
    assert_eq!(out, BeatOutcome::Failed(BeatError::INVALID_INPUT));
    let BeatOutcome::Failed(e) = out else {
        unreachable!()
    };
    assert_eq!(e.to_io_error().kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(obs.try_recv(), None, "nothing reached the observer");
    // The refused beat consumed no nonce.
    assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
    assert_eq!(frame(&obs.recv()).nonce(), 1);
}

#[test]
fn goodbye_and_terminal_frames() {
    let dir = temp_dir("bye");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let mut v = Varta::connect(&obs.path).unwrap();
    assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
    assert_eq!(v.terminal(7), BeatOutcome::Sent);
    assert_eq!(v.goodbye(), BeatOutcome::Sent);
    assert_eq!(frame(&obs.recv()).nonce(), 1);
    let t = frame(&obs.recv());
    assert!(t.is_terminal() && !t.is_goodbye());
    assert_eq!((t.status(), t.payload()), (Status::Critical, 7));
    let bytes = obs.recv();
    assert_eq!(&bytes[16..24], &NONCE_TERMINAL.to_le_bytes());
    assert_eq!(&bytes[24..28], b"BYE!");
    let g = frame(&bytes);
    assert!(g.is_goodbye());
    assert_eq!(g.payload(), GOODBYE_PAYLOAD);
    assert_eq!(g.status(), Status::Critical);
    // Terminal frames sit outside the regular sequence.
    assert_eq!(v.next_nonce(), 2);
}

#[test]
fn connect_without_observer_fails() {
    let dir = temp_dir("absent");
    let err = Varta::connect(dir.join("nobody.sock")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    // A path that exists but has no socket bound behind it.
    let path = dir.join("stale.sock");
    drop(UdsObserver::bind(&path)); // socket closed, file left behind
    let err = Varta::connect(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn observer_gone_is_reported_as_the_kernel_says() {
    let dir = temp_dir("gone");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let mut v = Varta::connect(&obs.path).unwrap();
    v.set_reconnect_after(0);
    assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
    obs.shut_down();
    // Linux: the first send to a dead peer says ECONNREFUSED and disconnects the socket;
    // every later send on the now unconnected socket says ENOTCONN.
    assert_eq!(
        v.beat(Status::Ok, 0),
        BeatOutcome::Dropped(DropReason::NoObserver)
    );
    for _ in 0..3 {
        assert_eq!(
            v.beat(Status::Ok, 0),
            BeatOutcome::Dropped(DropReason::PeerGone)
        );
    }
    assert_eq!(v.consecutive_drops(), 4);
    // Nothing was consumed by the drops.
    assert_eq!(v.next_nonce(), 2);
    // Reconnecting while nobody listens fails and says why.
    assert_eq!(
        v.reconnect().unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
}

#[test]
fn auto_reconnect_while_absent_reports_no_observer() {
    let dir = temp_dir("absent-auto");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let mut v = Varta::connect(&obs.path).unwrap();
    assert_eq!(v.reconnect_after(), 1, "the default");
    assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
    obs.shut_down();
    // Each beat: the send fails, the reconnect finds no socket file (ENOENT).
    for _ in 0..3 {
        assert_eq!(
            v.beat(Status::Ok, 0),
            BeatOutcome::Dropped(DropReason::NoObserver)
        );
    }
}

#[test]
fn queue_full_drops_without_blocking_or_consuming_nonces() {
    let dir = temp_dir("full");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let mut v = Varta::connect(&obs.path).unwrap();
    // The observer reads nothing while we burst.
    let started = Instant::now();
    let mut sent = 0u64;
    let mut dropped = 0u64;
    for _ in 0..200 {
        match v.beat(Status::Ok, 0) {
            BeatOutcome::Sent => {
                assert_eq!(dropped, 0, "once full, the queue stays full");
                sent += 1;
            }
            BeatOutcome::Dropped(DropReason::KernelQueueFull) => dropped += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let qlen = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    eprintln!(
        "burst of 200: sent {sent}, dropped {dropped} (max_dgram_qlen {qlen:?}) in {:?}",
        started.elapsed()
    );
    assert!(sent >= 1 && dropped >= 1, "sent {sent} dropped {dropped}");
    if let Some(q) = qlen.filter(|q| *q < 150) {
        // The kernel queues max_dgram_qlen + 1 datagrams.
        assert_eq!(sent, q + 1);
    }
    // A full queue never triggers a reconnect.
    assert_eq!(v.consecutive_drops(), dropped as u32);
    // The queued frames are nonces 1..=sent, in order; then the next beat continues.
    for n in 1..=sent {
        assert_eq!(frame(&obs.recv()).nonce(), n);
    }
    assert_eq!(obs.try_recv(), None);
    assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
    assert_eq!(frame(&obs.recv()).nonce(), sent + 1);
    assert_eq!(v.consecutive_drops(), 0);
}

#[test]
fn explicit_reconnect_after_observer_restart() {
    let dir = temp_dir("restart");
    let path = dir.join("obs.sock");
    let obs = UdsObserver::bind(&path);
    let mut v = Varta::connect(&path).unwrap();
    v.set_reconnect_after(0);
    assert_eq!(v.beat(Status::Ok, 1), BeatOutcome::Sent);
    assert_eq!(frame(&obs.recv()).nonce(), 1);
    obs.shut_down();
    let obs = UdsObserver::bind(&path); // the observer restarted
                                        // Our socket still points at the dead one.
    assert!(!v.beat(Status::Ok, 2).is_sent());
    v.reconnect().unwrap();
    assert_eq!(v.beat(Status::Ok, 3), BeatOutcome::Sent);
    let f = frame(&obs.recv());
    // The session continued: nonce 2 (the dropped beat did not consume it), payload 3.
    assert_eq!((f.nonce(), f.payload()), (2, 3));
}

#[test]
fn auto_reconnect_follows_a_restarted_observer() {
    let dir = temp_dir("auto");
    let path = dir.join("obs.sock");
    let obs = UdsObserver::bind(&path);
    let mut v = Varta::connect(&path).unwrap();
    v.set_reconnect_after(3);
    assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
    obs.shut_down();
    let obs = UdsObserver::bind(&path);
    // Two drops are tolerated; the third consecutive one reconnects and retries the frame.
    assert_eq!(
        v.beat(Status::Ok, 0),
        BeatOutcome::Dropped(DropReason::NoObserver)
    );
    assert_eq!(
        v.beat(Status::Ok, 0),
        BeatOutcome::Dropped(DropReason::PeerGone)
    );
    assert_eq!(v.beat(Status::Ok, 42), BeatOutcome::Sent);
    let f = frame(&obs.recv());
    assert_eq!((f.nonce(), f.payload()), (2, 42));
    assert_eq!(
        obs.try_recv(),
        None,
        "the retry sent the frame exactly once"
    );
    assert_eq!(v.consecutive_drops(), 0);

    // The default (1) reconnects on the very first drop: no beat is lost.
    v.set_reconnect_after(1);
    obs.shut_down();
    let obs = UdsObserver::bind(&path);
    assert_eq!(v.beat(Status::Ok, 43), BeatOutcome::Sent);
    assert_eq!(frame(&obs.recv()).nonce(), 3);
}

#[test]
fn clients_can_move_between_threads() {
    fn is_send<T: Send>(_: &T) {}
    let dir = temp_dir("send");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let mut v = Varta::connect(&obs.path).unwrap();
    is_send(&v);
    let v2 = std::thread::spawn(move || {
        assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
        v
    })
    .join()
    .unwrap();
    assert_eq!(v2.next_nonce(), 2);
    assert_eq!(frame(&obs.recv()).nonce(), 1);
}
