//! `cmsg`: arbitrary bytes as the control buffer and source address of a received datagram
//! (`varta_watch::listener`: credentials, passed descriptors, kernel timestamps, socket
//! addresses). Never a panic and never a read past the buffer; a credentials message written
//! the kernel's way is found again with its pid and uid; the arrival time of a stamp always
//! lies between the previous arrival and now.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varta_watch::listener::{arrival_time, parse_creds, parse_rights, parse_sockaddr, parse_stamp};

/// One `SCM_CREDENTIALS` message as the kernel lays it out (`struct cmsghdr` + `struct ucred`).
fn creds_message(pid: u32, uid: u32) -> Vec<u8> {
    const W: usize = std::mem::size_of::<usize>();
    let hdr = (W + 8).div_ceil(W) * W;
    let len = hdr + 12;
    let mut m = Vec::with_capacity(len.div_ceil(W) * W);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
    m.extend_from_slice(&libc::SCM_CREDENTIALS.to_ne_bytes());
    m.resize(hdr, 0);
    m.extend_from_slice(&pid.to_ne_bytes());
    m.extend_from_slice(&uid.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.resize(len.div_ceil(W) * W, 0);
    m
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_creds(data);
    let mut n = 0usize;
    parse_rights(data, |fd| {
        assert!(fd >= 0);
        n += 1;
    });
    assert!(n <= data.len() / 4);
    let stamp = parse_stamp(data);
    let _ = parse_sockaddr(data);

    // A well-formed credentials message first, whatever follows it, is found.
    if data.len() >= 8 {
        let pid = u32::from_ne_bytes(data[0..4].try_into().unwrap());
        let uid = u32::from_ne_bytes(data[4..8].try_into().unwrap());
        let mut buf = creds_message(pid, uid);
        buf.extend_from_slice(&data[8..]);
        assert_eq!(parse_creds(&buf), Some((pid, uid)));
    }

    // Arrival times stay within [previous, now] whatever the clocks say.
    if data.len() >= 24 {
        let word = |i: usize| u64::from_ne_bytes(data[i..i + 8].try_into().unwrap());
        let (wall, now, previous) = (word(0), word(8), word(16));
        let t = arrival_time(stamp, wall, now, previous);
        assert!(t <= now.max(previous));
        assert!(t >= previous.min(now));
    }
});
