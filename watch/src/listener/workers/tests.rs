use std::net::UdpSocket;
use std::time::{Duration, Instant};

use super::*;

/// Waits (bounded) for batches and takes them, returning their buffers, until `want`
/// datagrams were taken; returns each datagram's first byte, source port and worker.
fn take_all(pool: &Workers, want: usize) -> Vec<(u8, u16, usize)> {
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while got.len() < want && Instant::now() < end {
        let mut fds = [PollFd::new(pool, PollFlags::IN)];
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        let _ = poll(&mut fds, Some(&timeout));
        while let Some(mut b) = pool.take() {
            let worker = b.worker();
            let n = b.len;
            let (items, _) = b.split();
            for (_, origin, bytes) in &items[..n] {
                let port = match origin {
                    Origin::UdpFrom { source, .. } => source.port(),
                    _ => 0,
                };
                got.push((bytes[0], port, worker));
            }
            pool.give_back(b);
        }
    }
    got
}

#[test]
fn every_datagram_reaches_the_loop_once_from_either_worker_and_buffers_circulate() {
    let first = UdpListener::bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut socks = siblings(first, 2).unwrap();
    for s in &mut socks {
        s.record_sources();
    }
    let addr = socks[0].local_addr().unwrap();
    assert_eq!(socks[1].local_addr().unwrap(), addr);
    let limits = WorkerLimits {
        max_keys: 16,
        derivations_per_sec: 0,
    };
    let pool = Workers::start(socks, 0, &[UdpMode::Plain], limits, || 1).unwrap();
    assert_eq!(pool.len(), 2);
    // More datagrams than the buffers the workers own (2 × DEPTH batches), from many source
    // ports so the kernel spreads them.
    let senders: Vec<UdpSocket> = (0..16)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut sent = Vec::new();
    for round in 0..8u8 {
        for (k, s) in senders.iter().enumerate() {
            let tag = round * 16 + u8::try_from(k).unwrap();
            s.send_to(&[tag; 32], addr).unwrap();
            sent.push((tag, s.local_addr().unwrap().port()));
        }
        // Taken as they come (a slow loop would leave them in the kernel's queue).
        std::thread::sleep(Duration::from_millis(5));
    }
    let got = take_all(&pool, sent.len());
    let mut seen: Vec<(u8, u16)> = got.iter().map(|&(t, p, _)| (t, p)).collect();
    seen.sort_unstable();
    sent.sort_unstable();
    assert_eq!(seen, sent, "each datagram once, with its source");
    // Each source's datagrams were read by one worker, and both workers read some.
    for s in &senders {
        let port = s.local_addr().unwrap().port();
        let mut workers: Vec<usize> = got.iter().filter(|g| g.1 == port).map(|g| g.2).collect();
        workers.dedup();
        assert_eq!(workers.len(), 1, "port {port}: {workers:?}");
    }
    assert!(got.iter().any(|g| g.2 == 0) && got.iter().any(|g| g.2 == 1));
    assert_eq!(pool.kernel_drops(), Some(0));
}

#[test]
fn a_rekey_moves_the_generation_and_dropping_the_pool_stops_its_threads() {
    let first = UdpListener::bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
    let socks = siblings(first, 3).unwrap();
    let limits = WorkerLimits {
        max_keys: 16,
        derivations_per_sec: 0,
    };
    let pool = Workers::start(socks, 0, &[UdpMode::Plain], limits, || 1).unwrap();
    assert_eq!(pool.generation(), 0);
    assert_eq!(pool.rekey(&[UdpMode::Plain]), 1);
    assert_eq!(pool.generation(), 1);
    // Threads blocked in poll are woken by the stop eventfd and joined (a worker that never
    // saw it would hang here).
    drop(pool);
}

#[test]
fn a_socket_without_reuseport_gets_no_siblings_and_the_error_says_why() {
    let plain = UdpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let err = siblings(plain, 2).unwrap_err().to_string();
    assert!(err.contains("ReusePort=yes"), "{err}");
    let one = UdpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    assert_eq!(siblings(one, 1).unwrap().len(), 1);
}

/// Reads every datagram queued on `sock` (non-blocking): their first four bytes (the pid of
/// a master-key datagram) and lengths.
fn queued(sock: &UdpListener) -> Vec<(u32, usize)> {
    let mut rb = RecvBatch::new();
    let mut got = Vec::new();
    while let Ok(n) = sock.try_recv(&mut rb) {
        for i in 0..n {
            let d = rb.data(i);
            got.push((u32::from_le_bytes([d[0], d[1], d[2], d[3]]), d.len()));
        }
    }
    got
}

#[test]
fn master_key_datagrams_go_to_socket_pid_mod_n_whatever_their_source() {
    const N: usize = 3;
    let first = UdpListener::bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
    let socks = siblings(first, N).unwrap();
    let addr = socks[0].local_addr().unwrap();
    let senders: Vec<UdpSocket> = (0..12)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut sent = 0;
    for pid in [1u32, 2, 3, 4, 5, 1000, 65_537, 4_000_000_007] {
        let mut d = [0u8; 64];
        d[..4].copy_from_slice(&pid.to_le_bytes());
        for s in &senders {
            s.send_to(&d, addr).unwrap();
            sent += 1;
        }
    }
    // 60-byte (shared-key) datagrams: their pid is sealed, the kernel's hash spreads them.
    for (k, s) in senders.iter().enumerate() {
        s.send_to(&[u8::try_from(k).unwrap(); 60], addr).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut master = 0;
    let mut shared = vec![0; N];
    for (k, sock) in socks.iter().enumerate() {
        for (pid, len) in queued(sock) {
            match len {
                64 => {
                    assert_eq!(pid as usize % N, k, "pid {pid} read by socket {k}");
                    master += 1;
                }
                _ => shared[k] += 1,
            }
        }
    }
    assert_eq!(master, sent, "every master-key datagram routed by its pid");
    assert_eq!(shared.iter().sum::<usize>(), senders.len());
    assert!(
        shared.iter().filter(|&&n| n > 0).count() >= 2,
        "shared-key datagrams spread by the hash: {shared:?}"
    );
}

#[test]
fn a_full_queue_is_handed_over_in_fewer_larger_batches() {
    let first = UdpListener::bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = first.local_addr().unwrap();
    let socks = siblings(first, 1).unwrap();
    // Queued before the worker starts: its first reads find full batches.
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let total = HANDOVER + BATCH / 2;
    for i in 0..total {
        sender
            .send_to(&u16::try_from(i).unwrap().to_le_bytes(), addr)
            .unwrap();
    }
    let limits = WorkerLimits {
        max_keys: 16,
        derivations_per_sec: 0,
    };
    let pool = Workers::start(socks, 0, &[UdpMode::Plain], limits, || 1).unwrap();
    let mut sizes = Vec::new();
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while got.len() < total && Instant::now() < end {
        let mut fds = [PollFd::new(&pool, PollFlags::IN)];
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        let _ = poll(&mut fds, Some(&timeout));
        while let Some(mut b) = pool.take() {
            let n = b.len;
            sizes.push(n);
            let (items, _) = b.split();
            got.extend(
                items[..n]
                    .iter()
                    .map(|(_, _, d)| u16::from_le_bytes([d[0], d[1]])),
            );
            pool.give_back(b);
        }
    }
    let want: Vec<u16> = (0..total).map(|i| u16::try_from(i).unwrap()).collect();
    assert_eq!(got, want, "every datagram once, in order");
    assert_eq!(sizes[0], HANDOVER, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= HANDOVER));
}

#[test]
fn shutdown_returns_every_datagram_read_even_from_a_worker_out_of_buffers() {
    let first = UdpListener::bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = first.local_addr().unwrap();
    let socks = siblings(first, 1).unwrap();
    let limits = WorkerLimits {
        max_keys: 16,
        derivations_per_sec: 0,
    };
    let mut pool = Workers::start(socks, 0, &[UdpMode::Plain], limits, || 1).unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    // One hand-over per datagram (sent apart) until the worker holds no buffer, then more
    // than it can read: they wait in the socket's queue.
    let total = DEPTH + 3;
    for i in 0..total {
        sender
            .send_to(&[u8::try_from(i).unwrap(); 32], addr)
            .unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let got: Vec<u8> = pool
        .shutdown()
        .iter_mut()
        .flat_map(|b| {
            let n = b.len;
            let (items, _) = b.split();
            items[..n].iter().map(|(_, _, d)| d[0]).collect::<Vec<_>>()
        })
        .collect();
    let want: Vec<u8> = (0..total).map(|i| u8::try_from(i).unwrap()).collect();
    assert_eq!(got, want, "every datagram, in order");
}
