//! `udp`: plain frames over UDP. Usage: `udp ADDR [COUNT]`.
use std::net::SocketAddr;
use std::time::Duration;

use varta_client::{BeatOutcome, Status, Varta};

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .expect("usage: udp ADDR [COUNT]")
        .parse()
        .expect("ADDR is ip:port");
    let mut agent = Varta::connect_udp(addr)?;
    for _ in 0..varta_compat_v02::count_arg(2) {
        match agent.beat(Status::Ok, 0) {
            BeatOutcome::Sent => {}
            BeatOutcome::Dropped(_) => eprintln!("beat dropped"),
            BeatOutcome::Failed(e) => eprintln!("beat failed: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
