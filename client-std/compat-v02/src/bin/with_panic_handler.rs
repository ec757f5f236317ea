//! `with_panic_handler`: beats, then panics; the hook reports the panic to the observer.
//! Usage: `with_panic_handler SOCKET [COUNT]`.
use std::path::PathBuf;
use std::time::Duration;

use varta_client::{install_panic_handler, BeatOutcome, Status, Varta};

fn main() -> std::io::Result<()> {
    let socket_path = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: with_panic_handler SOCKET [COUNT]"),
    );
    install_panic_handler(&socket_path)?;
    let mut agent = Varta::connect(&socket_path)?;
    for _ in 0..varta_compat_v02::count_arg(2) {
        match agent.beat(Status::Ok, 0) {
            BeatOutcome::Sent => {}
            BeatOutcome::Dropped(_) => eprintln!("beat dropped"),
            BeatOutcome::Failed(e) => eprintln!("beat failed: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("simulated fatal error");
}
