//! `with_payload`: beats carrying a counter, `Degraded` every other one. Usage:
//! `with_payload SOCKET [COUNT]`.
use std::path::PathBuf;
use std::time::Duration;

use varta_client::{BeatOutcome, Status, Varta};

fn main() -> std::io::Result<()> {
    let socket_path = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: with_payload SOCKET [COUNT]"),
    );
    let mut agent = Varta::connect(&socket_path)?;
    for payload in 1..=varta_compat_v02::count_arg(2) {
        let status = if payload % 2 == 0 {
            Status::Degraded
        } else {
            Status::Ok
        };
        match agent.beat(status, payload) {
            BeatOutcome::Sent => {}
            BeatOutcome::Dropped(_) => eprintln!("beat dropped"),
            BeatOutcome::Failed(e) => eprintln!("beat failed: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
