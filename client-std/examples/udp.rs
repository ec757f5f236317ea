//! Plain (unauthenticated) frames over UDP, for an observer on another host or a container.
//!
//! ```text
//! cargo run -p varta-client --example udp -- 127.0.0.1:9999 [COUNT]
//! ```
use std::time::Duration;

use varta_client::{Status, Varta};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9999".to_owned());
    let count: u64 = args.next().and_then(|c| c.parse().ok()).unwrap_or(5);

    let mut varta = Varta::connect_udp(addr.as_str())?;
    for _ in 0..count {
        let nonce = varta.next_nonce();
        let outcome = varta.beat(Status::Ok, 0);
        println!("nonce {nonce} -> {outcome}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = varta.goodbye();
    Ok(())
}
