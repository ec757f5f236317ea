//! `secure_udp`: 60-byte sealed datagrams under a shared key read from a key file. Usage:
//! `secure_udp ADDR KEY_FILE [COUNT]`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use varta_client::{BeatOutcome, SecureUdpTransport, Status, Varta};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .expect("usage: secure_udp ADDR KEY_FILE [COUNT]")
        .parse()
        .expect("ADDR is ip:port");
    let path = PathBuf::from(
        args.next()
            .expect("usage: secure_udp ADDR KEY_FILE [COUNT]"),
    );
    let key = varta_vlp::crypto::Key::from_file(&path)?;
    let mut agent = Varta::<SecureUdpTransport>::connect_secure_udp(addr, key)?;
    for _ in 0..varta_compat_v02::count_arg(3) {
        match agent.beat(Status::Ok, 0) {
            BeatOutcome::Sent => {}
            BeatOutcome::Dropped(_) => eprintln!("beat dropped"),
            BeatOutcome::Failed(e) => eprintln!("beat failed: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
