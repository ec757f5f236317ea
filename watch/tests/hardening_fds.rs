//! Descriptors passed over the Unix socket (`SCM_RIGHTS`) must not accumulate in the
//! observer: after 10,000 datagrams each carrying a descriptor, the observer holds about as
//! many descriptors as before. Prints the figure (run with `--nocapture`).
//!
//! Needs the listener to receive with `MSG_CMSG_CLOEXEC` and close every passed descriptor
//! (the ingest work on `listener/`); until that lands this test fails, so it is ignored with
//! that reason. Run it with `cargo test -p varta-watch --test hardening_fds -- --ignored
//! --nocapture`.

mod hardening_support;

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use hardening_support::{frame, tmpdir, Observer, Stdout};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use vlp_core::Status;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
#[ignore = "needs the listener to close descriptors passed with SCM_RIGHTS (ingest work on listener/)"]
fn passed_descriptors_do_not_accumulate() {
    let dir = tmpdir("fds");
    let obs = Observer::start(&dir, Stdout::Null, &[]);
    let pid = obs.child.id();
    obs.scrape();
    let before = open_fds(pid);
    let sock = UnixDatagram::unbound().unwrap();
    sock.connect(&obs.socket).unwrap();
    let passed = std::fs::File::open("/dev/null").unwrap();
    let me = std::process::id();
    let n = 10_000u64;
    for nonce in 1..=n {
        let bytes = frame(Status::Ok, me, nonce);
        let fds = [passed.as_fd()];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        assert!(cmsg.push(SendAncillaryMessage::ScmRights(&fds)));
        // Blocking send: each datagram waits for room in the observer's queue.
        rustix::net::sendmsg(
            &sock,
            &[IoSlice::new(&bytes)],
            &mut cmsg,
            SendFlags::empty(),
        )
        .unwrap();
    }
    // Every datagram was read once the beats are all counted.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let body = obs.scrape();
        let got = hardening_support::metric_in(
            &body,
            r#"varta_datagrams_received_total{listener="unix"}"#,
        );
        if got >= n as f64 {
            break;
        }
        assert!(Instant::now() < end, "only {got} datagrams read\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = open_fds(pid);
    println!("descriptors open in the observer: {before} before, {after} after {n} fd-carrying datagrams");
    assert!(
        after <= before + 2,
        "{before} descriptors before, {after} after {n} fd-carrying datagrams"
    );
    assert!(obs.terminate().success());
    std::fs::remove_dir_all(&dir).unwrap();
}
