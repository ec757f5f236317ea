//! Fork safety with a real `fork()`: the child's next beat notices the new pid, takes its own
//! socket, restarts nonces at 1 and draws a fresh IV salt; the parent's streams go on.
//!
//! One test in this binary, so the only other thread at fork time is the harness's idle main
//! thread. The child neither allocates nor panics: it reports through its exit status and
//! leaves with `_exit`.
mod common;

use std::net::SocketAddr;

use common::{temp_dir, UdpObserver, UdsObserver};
use varta_client::vlp_core::envelope::{MasterDatagram, SharedDatagram};
use varta_client::vlp_core::kdf::derive_agent_key;
use varta_client::{BeatOutcome, Frame, Key, SecureUdpTransport, Status, UdsTransport, Varta};

fn recv_from(obs: &UdpObserver) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 128];
    let (n, from) = obs
        .socket
        .recv_from(&mut buf)
        .expect("a datagram within 5 s");
    (buf[..n].to_vec(), from)
}

#[test]
fn forked_child_starts_a_fresh_session() {
    let key = Key::from_bytes([0x77; 32]);
    let master = Key::from_bytes([0x99; 32]);
    let dir = temp_dir("fork");
    let uds_obs = UdsObserver::bind(&dir.join("obs.sock"));
    common::pass_credentials(&uds_obs.socket);
    let shared_obs = UdpObserver::bind();
    let master_obs = UdpObserver::bind();

    let mut plain = Varta::connect(&uds_obs.path).unwrap();
    let mut shared = Varta::connect_secure_udp(shared_obs.addr(), key.clone()).unwrap();
    let mut mastered =
        Varta::connect_secure_udp_with_master(master_obs.addr(), master.clone()).unwrap();
    let parent = std::process::id();

    // The parent's streams before the fork: nonces 1 and 2.
    for _ in 0..2 {
        assert_eq!(plain.beat(Status::Ok, 0), BeatOutcome::Sent);
        assert_eq!(shared.beat(Status::Ok, 0), BeatOutcome::Sent);
        assert_eq!(mastered.beat(Status::Ok, 0), BeatOutcome::Sent);
    }
    let _ = uds_obs.recv();
    let _ = uds_obs.recv();
    let (b, parent_src) = recv_from(&shared_obs);
    let parent_iv = SharedDatagram::from_bytes(&b).unwrap().iv();
    let _ = recv_from(&shared_obs);
    let _ = recv_from(&master_obs);
    let (b, _) = recv_from(&master_obs);
    let parent_master_iv = MasterDatagram::from_bytes(&b).unwrap().iv();

    // SAFETY: fork has no preconditions; the child below only makes allocation-free calls
    // (the beat path, getrandom, socket syscalls) and leaves with _exit.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        let mut code = 0;
        for i in 0..2 {
            if plain.beat(Status::Ok, 0xC0 + i) != BeatOutcome::Sent {
                code |= 1;
            }
            if shared.beat(Status::Ok, 0xC0 + i) != BeatOutcome::Sent {
                code |= 2;
            }
            if mastered.beat(Status::Ok, 0xC0 + i) != BeatOutcome::Sent {
                code |= 4;
            }
        }
        if plain.fork_recoveries() != 1
            || shared.fork_recoveries() != 1
            || mastered.fork_recoveries() != 1
        {
            code |= 8;
        }
        if plain.pid() == parent {
            code |= 16;
        }
        // SAFETY: _exit ends the child without running the parent's atexit handlers or
        // unwinding the test harness's stack.
        unsafe { libc::_exit(code) };
    }

    let mut status = 0;
    // SAFETY: `child` is our child's pid and `status` a valid out-pointer.
    let waited = unsafe { libc::waitpid(child, &mut status, 0) };
    assert_eq!(waited, child);
    assert!(
        libc::WIFEXITED(status),
        "child died abnormally: {status:#x}"
    );
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "child's own checks (bit set = failed)"
    );
    let child = u32::try_from(child).unwrap();

    // Plain UDS: the child's frames carry its pid, the one the kernel attests for their
    // sender, and start again at nonce 1.
    for n in 1..=2 {
        let (bytes, attested) = common::recv_attested(&uds_obs.socket);
        let f = Frame::parse(&bytes).unwrap();
        assert_eq!((f.pid(), f.nonce()), (child, n));
        assert_eq!(attested, child);
    }

    // Shared key: fresh nonces, counters from 1 under a different iv_random, own socket.
    for n in 1..=2u64 {
        let (b, src) = recv_from(&shared_obs);
        let (iv, f) = SharedDatagram::from_bytes(&b).unwrap().open(&key).unwrap();
        assert_eq!(
            (f.pid(), f.nonce(), f.payload()),
            (child, n, 0xC0 + n as u32 - 1)
        );
        assert_eq!(iv.counter, n as u32);
        assert_ne!(iv.random, parent_iv.random, "a fresh salt in the child");
        assert_ne!(src, parent_src, "the child reconnected on its own socket");
    }

    // Master key: the child's datagrams are sealed under its own derived key.
    for n in 1..=2u64 {
        let (b, _) = recv_from(&master_obs);
        let d = MasterDatagram::from_bytes(&b).unwrap();
        assert_eq!(d.pid(), child);
        let (iv, f) = d.open(&derive_agent_key(&master, child)).unwrap();
        assert_eq!((f.pid(), f.nonce()), (child, n));
        assert_ne!(iv.random, parent_master_iv.random);
    }

    // The parent is unaffected: its sequences continue where they were.
    assert_eq!(plain.fork_recoveries(), 0);
    assert_eq!(plain.beat(Status::Ok, 0), BeatOutcome::Sent);
    let (bytes, attested) = common::recv_attested(&uds_obs.socket);
    let f = Frame::parse(&bytes).unwrap();
    assert_eq!((f.pid(), f.nonce(), attested), (parent, 3, parent));
    assert_eq!(shared.beat(Status::Ok, 0), BeatOutcome::Sent);
    let (b, src) = recv_from(&shared_obs);
    let (iv, f) = SharedDatagram::from_bytes(&b).unwrap().open(&key).unwrap();
    assert_eq!((f.pid(), f.nonce(), iv.counter), (parent, 3, 3));
    assert_eq!((iv.random, src), (parent_iv.random, parent_src));

    raw_clone_child(
        &mut shared,
        &key,
        &shared_obs,
        parent_iv.random,
        &mut plain,
        &uds_obs,
    );
}

/// A child made by the raw `clone(2)` system call runs none of libc's fork bookkeeping (no
/// `pthread_atfork` handlers); the kernel still wipes the marker page, so both clients notice
/// and the secure one never reuses the parent's IV stream.
fn raw_clone_child(
    shared: &mut Varta<SecureUdpTransport>,
    key: &Key,
    obs: &UdpObserver,
    parent_random: [u8; 8],
    plain: &mut Varta<UdsTransport>,
    uds_obs: &UdsObserver,
) {
    let before = shared.fork_recoveries();
    // SAFETY: clone with only SIGCHLD and no new stack behaves like fork() minus the libc
    // bookkeeping (atfork handlers); the child makes only allocation-free calls and _exits.
    let child = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    assert!(child >= 0, "clone failed");
    if child == 0 {
        let ok = shared.beat(Status::Ok, 0xD0) == BeatOutcome::Sent
            && shared.fork_recoveries() == before + 1
            && plain.beat(Status::Ok, 0xD1) == BeatOutcome::Sent
            && plain.fork_recoveries() == 1;
        // SAFETY: as above; ends the child at once.
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    let child = libc::pid_t::try_from(child).unwrap();
    let mut status = 0;
    // SAFETY: `child` is our child's pid and `status` a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let (b, _) = recv_from(obs);
    let (iv, f) = SharedDatagram::from_bytes(&b).unwrap().open(key).unwrap();
    assert_eq!((f.pid(), f.nonce(), f.payload()), (child as u32, 1, 0xD0));
    assert_eq!(iv.counter, 1);
    assert_ne!(iv.random, parent_random);
    let (bytes, attested) = common::recv_attested(&uds_obs.socket);
    let f = Frame::parse(&bytes).unwrap();
    assert_eq!((f.pid(), f.nonce(), f.payload()), (child as u32, 1, 0xD1));
    assert_eq!(attested, child as u32);
}
