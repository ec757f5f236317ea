//! Routing by identity over the receive workers' `SO_REUSEPORT` sockets: a classic BPF program
//! (`SO_ATTACH_REUSEPORT_CBPF`) that sends every 64-byte (master-key) datagram to socket
//! `pid mod N`, `pid` being its clear-text first four bytes (VLP v0.2 §3, little-endian). So
//! all of one agent's master-key datagrams, and every copy of them whatever its source port,
//! are read by one worker, which alone keeps (and derives) that agent's key. Other datagrams
//! (shared-key ones, whose pid is sealed; plaintext) get an out-of-range index, on which the
//! kernel falls back to its hash of the addresses. Routing only spreads work: the decisions stay
//! with the one table whichever worker reads a datagram.
//!
//! A socket's index in the group is the order in which it joined it: the order
//! [`super::workers::siblings`] binds them in.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use libc::sock_filter;

/// Length of a master-key datagram: the only kind routed by pid.
const MASTER_LEN: u32 = vlp_core::envelope::MASTER_LEN as u32;

const fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        // Every classic BPF opcode fits 16 bits.
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The program for `n` sockets (`n` ≥ 2): `pid mod n` for a master-key datagram, else an
/// index past the group (the kernel's hash decides).
#[must_use]
pub fn program(n: u32) -> [sock_filter; 18] {
    use libc::{
        BPF_ABS, BPF_ALU, BPF_B, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_LEN, BPF_LSH, BPF_MISC,
        BPF_MOD, BPF_OR, BPF_RET, BPF_TAX, BPF_W, BPF_X,
    };
    let load_byte = |at| stmt(BPF_LD | BPF_B | BPF_ABS, at);
    let shift = stmt(BPF_ALU | BPF_LSH | BPF_K, 8);
    let to_x = stmt(BPF_MISC | BPF_TAX, 0);
    let or_x = stmt(BPF_ALU | BPF_OR | BPF_X, 0);
    [
        // A = datagram length; not a master-key datagram: on to the last instruction.
        stmt(BPF_LD | BPF_W | BPF_LEN, 0),
        sock_filter {
            code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
            jt: 0,
            jf: 15,
            k: MASTER_LEN,
        },
        // A = the pid, bytes 3, 2, 1, 0 (little-endian on the wire).
        load_byte(3),
        shift,
        to_x,
        load_byte(2),
        or_x,
        shift,
        to_x,
        load_byte(1),
        or_x,
        shift,
        to_x,
        load_byte(0),
        or_x,
        stmt(BPF_ALU | BPF_MOD | BPF_K, n),
        stmt(BPF_RET | libc::BPF_A, 0),
        // Past every socket of the group: the kernel's hash chooses.
        stmt(BPF_RET | BPF_K, u32::MAX),
    ]
}

/// Attaches [`program`] for `n` sockets to the reuseport group of `fd`.
///
/// # Errors
/// The `setsockopt` error.
pub fn attach(fd: BorrowedFd<'_>, n: u32) -> io::Result<()> {
    let mut prog = program(n);
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, a live local array of `len` instructions; the kernel
    // copies the program during the call and keeps no pointer to it. (No safe crate wraps
    // SO_ATTACH_REUSEPORT_CBPF.)
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::addr_of!(fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
