//! Beats that carry an application counter in the 32-bit payload (here: items processed),
//! and report `Degraded` when a unit of work was slow.
//!
//! ```text
//! cargo run -p varta-client --example with_payload -- /run/varta/observer.sock [COUNT]
//! ```
use std::time::{Duration, Instant};

use varta_client::{Status, Varta};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "/run/varta/observer.sock".to_owned());
    let count: u32 = args.next().and_then(|c| c.parse().ok()).unwrap_or(5);

    let mut varta = Varta::connect(&path)?;
    let mut processed: u32 = 0;
    for i in 0..count {
        let started = Instant::now();
        // Pretend to work; every third round is slow.
        std::thread::sleep(Duration::from_millis(if i % 3 == 2 { 300 } else { 50 }));
        processed = processed.wrapping_add(17);
        let status = if started.elapsed() > Duration::from_millis(200) {
            Status::Degraded
        } else {
            Status::Ok
        };
        let outcome = varta.beat(status, processed);
        println!("status={status} payload={processed} -> {outcome}");
    }
    let _ = varta.goodbye();
    Ok(())
}
