//! The smallest agent: beat `Ok` once a second over the observer's Unix socket.
//!
//! ```text
//! cargo run -p varta-client --example basic -- /run/varta/observer.sock [COUNT]
//! ```
use std::time::Duration;

use varta_client::{BeatOutcome, Status, Varta};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "/run/varta/observer.sock".to_owned());
    let count: u64 = args.next().and_then(|c| c.parse().ok()).unwrap_or(5);

    let mut varta = Varta::connect(&path)?;
    for _ in 0..count {
        // ... one unit of the daemon's real work goes here ...
        match varta.beat(Status::Ok, 0) {
            BeatOutcome::Sent => println!("beat sent (pid {})", varta.pid()),
            BeatOutcome::Dropped(reason) => println!("beat dropped: {reason}"),
            BeatOutcome::Failed(e) => return Err(e.to_io_error()),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // A clean exit, announced so the observer does not report a stall.
    let _ = varta.goodbye();
    Ok(())
}
