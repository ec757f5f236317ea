//! A panic is reported to the observer as it happens: the hook sends one terminal Critical
//! frame (nonce `u64::MAX`) and then runs the previous hook, which prints the message.
//!
//! ```text
//! cargo run -p varta-client --example with_panic_handler -- /run/varta/observer.sock [BEATS]
//! ```
//! Beats BEATS times (default 3), 100 ms apart, then panics.
use std::time::Duration;

use varta_client::{install_panic_handler, Status, Varta};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "/run/varta/observer.sock".to_owned());
    let beats: u32 = args.next().and_then(|c| c.parse().ok()).unwrap_or(3);

    install_panic_handler(&path)?;
    let mut varta = Varta::connect(&path)?;
    for _ in 0..beats {
        let _ = varta.beat(Status::Ok, 0);
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("simulated fatal bug after {beats} beats");
}
