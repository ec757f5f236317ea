//! Property tests: arbitrary operation sequences (beats with arbitrary nonces and timestamps,
//! terminal frames, secure datagrams with arbitrary streams and counters, garbage, time
//! passing) keep the tracker's invariants.

use std::collections::HashMap;

use proptest::prelude::*;
use varta_watch::tracker::{AgentId, Event, Nanos, Origin, Tracker, TrackerConfig, UdpMode};
use vlp_core::{Frame, Iv, Key, SharedDatagram, Status};

const THRESHOLD: Nanos = 100;
const EVICT: Nanos = 300;
const CAPACITY: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    /// A plain Unix frame of agent `pid` (2..10).
    Beat {
        pid: u32,
        nonce: u64,
        ts: u64,
        status: u8,
    },
    Terminal {
        pid: u32,
        ts: u64,
        clean: bool,
    },
    /// A shared-key datagram from stream `stream` (0..3), counter `counter`.
    Secure {
        pid: u32,
        stream: u8,
        counter: u32,
        nonce: u64,
        terminal: bool,
    },
    Garbage(Vec<u8>),
    /// Time passes; the shell serves the deadline if one is due.
    Wait(Nanos),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (2u32..10, 0u64..40, 0u64..40, 0u8..3).prop_map(|(pid, nonce, ts, status)| Op::Beat {
            pid,
            nonce,
            ts,
            status
        }),
        1 => (2u32..10, 0u64..40, any::<bool>()).prop_map(|(pid, ts, clean)| Op::Terminal {
            pid,
            ts,
            clean
        }),
        2 => (2u32..10, 0u8..3, 0u32..300, 0u64..40, prop::bool::weighted(0.1)).prop_map(
            |(pid, stream, counter, nonce, terminal)| Op::Secure {
                pid,
                stream,
                counter,
                nonce,
                terminal
            }
        ),
        1 => prop::collection::vec(any::<u8>(), 0..70).prop_map(Op::Garbage),
        3 => (0u64..250).prop_map(Op::Wait),
    ]
}

fn key() -> Key {
    Key::from_bytes([3; 32])
}

fn status(b: u8) -> Status {
    Status::from_u8(b).unwrap_or(Status::Ok)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn operation_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..80)) {
        let mut t = Tracker::new(TrackerConfig {
            threshold: THRESHOLD,
            capacity: CAPACITY,
            evict_after: EVICT,
            allowed_uids: vec![0],
            udp: vec![UdpMode::Secure { keys: vec![key()], master: None }],
            ..TrackerConfig::default()
        });
        let udp = Origin::Udp { listener: 0 };
        let mut now: Nanos = 0;
        let mut stalled: HashMap<AgentId, bool> = HashMap::new();
        let mut last_beat: HashMap<AgentId, Nanos> = HashMap::new();
        for op in ops {
            let result = match op {
                Op::Beat { pid, nonce, ts, status: s } => {
                    let f = Frame::new(status(s), pid, ts, nonce, 0).unwrap();
                    Some(t.handle_datagram(now, &Origin::Unix { pid, uid: 0 }, &f.emit()))
                }
                Op::Terminal { pid, ts, clean } => {
                    let f = if clean {
                        Frame::goodbye(pid, ts).unwrap()
                    } else {
                        Frame::terminal(pid, ts, 1).unwrap()
                    };
                    Some(t.handle_datagram(now, &Origin::Unix { pid, uid: 0 }, &f.emit()))
                }
                Op::Secure { pid, stream, counter, nonce, terminal } => {
                    let f = if terminal {
                        Frame::terminal(pid, nonce, 0).unwrap()
                    } else {
                        Frame::new(Status::Ok, pid, nonce, nonce, 0).unwrap()
                    };
                    let iv = Iv { random: [stream; 8], counter };
                    let d = SharedDatagram::seal(&key(), &iv, &f);
                    Some(t.handle_datagram(now, &udp, &d.0))
                }
                Op::Garbage(b) => {
                    let r = t.handle_datagram(now, &Origin::Unix { pid: 5, uid: 0 }, &b);
                    prop_assert!(r.is_err() || b.len() == 32);
                    Some(r)
                }
                Op::Wait(dt) => {
                    now += dt;
                    while let Some(d) = t.poll_timeout() {
                        if d > now {
                            break;
                        }
                        t.handle_timeout(now);
                    }
                    // poll_timeout is the earliest deadline, and none is left due.
                    prop_assert!(t.poll_timeout().map_or(true, |d| d > now));
                    None
                }
            };
            if let Some(Ok(a)) = result {
                if a.kind != varta_watch::tracker::AcceptKind::Reordered {
                    last_beat.insert(a.agent, now);
                }
            }
            while let Some(e) = t.poll_event() {
                prop_assert!(e.at() <= now, "event from the future: {e:?}");
                let s = stalled.entry(e.agent()).or_insert(false);
                match e {
                    Event::Stalled { at, last_beat: lb, .. } => {
                        prop_assert!(!*s, "second Stalled in one silence run: {e:?}");
                        prop_assert_eq!(at, lb + THRESHOLD);
                        prop_assert_eq!(Some(&lb), last_beat.get(&e.agent()));
                        *s = true;
                    }
                    Event::Recovered { .. } => {
                        prop_assert!(*s, "Recovered without a stall: {e:?}");
                        *s = false;
                    }
                    Event::Died { .. } | Event::Evicted { .. } | Event::NewAgent { .. } => {
                        *s = false;
                    }
                    Event::SessionRestart { .. } | Event::StatusChanged { .. } => {
                        prop_assert!(!*s, "restart of a stalled agent without Recovered");
                    }
                }
            }
            prop_assert!(t.len() <= CAPACITY);
            prop_assert_eq!(t.poll_timeout().is_none(), t.is_empty());
            if let Err(why) = t.check_invariants() {
                prop_assert!(false, "{}", why);
            }
        }
    }

    // The fuzz entry point is behind varta-watch's `fuzz` feature (on in the test script's
    // `--all-features` run and in `fuzz/`).
    #[cfg(feature = "fuzz")]
    #[test]
    fn fuzz_entry_point_holds_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..800)) {
        if let Err(why) = varta_watch::tracker::fuzz::run(&data) {
            prop_assert!(false, "{}", why);
        }
    }

    // The same operations, every datagram also through receive workers' openers: the same
    // outcomes and events.
    #[cfg(feature = "fuzz")]
    #[test]
    fn worker_opened_datagrams_are_handled_as_one_by_one(data in prop::collection::vec(any::<u8>(), 0..800)) {
        if let Err(why) = varta_watch::tracker::fuzz::run_opened(&data) {
            prop_assert!(false, "{}", why);
        }
    }

    // Any bytes as a state file, and as the body of one with a valid checksum.
    #[cfg(feature = "fuzz")]
    #[test]
    fn state_restore_holds_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..1200)) {
        if let Err(why) = varta_watch::tracker::fuzz::restore(&data) {
            prop_assert!(false, "{}", why);
        }
    }
}
