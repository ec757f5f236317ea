//! `open_batch`: a batch of up to 16 datagrams built from the input (raw bytes of any length,
//! or correctly sealed frames, some with one bit flipped; shared and master layouts; four
//! keys) opened on every batch path this CPU runs. Never panics; job for job the result equals
//! the single open; whatever opens re-seals to exactly the received bytes.
#![no_main]

#[path = "common/input.rs"]
mod input;

use input::Input;
use libfuzzer_sys::fuzz_target;
use vlp_core::batch::{Backend, Job, Opened, Path, Sealed};
use vlp_core::envelope::{MASTER_LEN, SHARED_LEN};
use vlp_core::{Frame, Iv, Key, MasterDatagram, OpenError, SharedDatagram, Status};

const MAX_JOBS: usize = 16;

fn keys() -> [Key; 4] {
    core::array::from_fn(|k| {
        Key::from_bytes(core::array::from_fn(|i| (i as u8) ^ (k as u8 * 0x55)))
    })
}

/// One datagram from the input, the layout it is opened as and the key index.
fn datagram(inp: &mut Input, keys: &[Key; 4]) -> Option<(bool, usize, Vec<u8>)> {
    let [ctrl] = inp.take::<1>();
    let master = ctrl & 1 != 0;
    let key = usize::from(ctrl >> 1) & 3;
    let len = if master { MASTER_LEN } else { SHARED_LEN };
    match (ctrl >> 3) & 3 {
        // Raw bytes of the layout's length: almost always a forgery.
        0 => Some((master, key, inp.bytes(len))),
        // Raw bytes of a length chosen by the input.
        1 => {
            let [n] = inp.take::<1>();
            Some((master, key, inp.bytes(usize::from(n % 80))))
        }
        // A sealed valid frame, possibly under another key, possibly with a flipped bit.
        _ => {
            let [s, other_key] = inp.take::<2>();
            let status = Status::from_u8(s % 3)?;
            let pid = u32::from_le_bytes(inp.take());
            let f = Frame::new(
                status,
                pid,
                u64::from_le_bytes(inp.take()),
                u64::from_le_bytes(inp.take()),
                u32::from_le_bytes(inp.take()),
            )
            .ok()?;
            let iv = Iv {
                random: inp.take(),
                counter: u32::from_le_bytes(inp.take()),
            };
            let seal_key = &keys[(key + usize::from(other_key & 1)) & 3];
            let mut d = if master {
                MasterDatagram::seal(seal_key, &iv, &f).0.to_vec()
            } else {
                SharedDatagram::seal(seal_key, &iv, &f).0.to_vec()
            };
            if ctrl & 0x20 != 0 {
                let bit = usize::from(u16::from_le_bytes(inp.take())) % (len * 8);
                d[bit / 8] ^= 1 << (bit % 8);
            }
            Some((master, key, d))
        }
    }
}

fn single(job: &Job<'_>) -> Opened {
    match job.sealed {
        Sealed::Shared(b) => SharedDatagram::from_bytes(b)?.open(job.key),
        Sealed::Master(b) => MasterDatagram::from_bytes(b)?.open(job.key),
    }
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let mut inp = Input(data);
    let mut made = Vec::new();
    while made.len() < MAX_JOBS && !inp.0.is_empty() {
        if let Some(d) = datagram(&mut inp, &keys) {
            made.push(d);
        }
    }
    let jobs: Vec<Job<'_>> = made
        .iter()
        .map(|(master, key, b)| {
            if *master {
                Job::master(&keys[*key], b)
            } else {
                Job::shared(&keys[*key], b)
            }
        })
        .collect();
    let expected: Vec<Opened> = jobs.iter().map(single).collect();
    for path in Path::ALL {
        let Some(backend) = Backend::with_path(path) else {
            continue;
        };
        let mut out: Vec<Opened> = vec![Err(OpenError::BadLength { len: usize::MAX }); jobs.len()];
        backend.open(&jobs, &mut out);
        assert_eq!(out, expected, "{path} differs from the single open");
        for (job, got) in jobs.iter().zip(&out) {
            if let Ok((iv, f)) = got {
                let resealed = match job.sealed {
                    Sealed::Shared(b) => (SharedDatagram::seal(job.key, iv, f).0.to_vec(), b),
                    Sealed::Master(b) => (MasterDatagram::seal(job.key, iv, f).0.to_vec(), b),
                };
                assert_eq!(
                    resealed.0, resealed.1,
                    "{path}: opened bytes do not re-seal"
                );
            }
        }
    }
});
