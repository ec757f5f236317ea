//! Sealed frames over UDP: each beat is a 60-byte ChaCha20-Poly1305 datagram under the shared
//! key in KEY_FILE (64 hex characters, mode 0600, owned by us; VLP v0.2 §5).
//!
//! ```text
//! umask 077; openssl rand -hex 32 > agent.key
//! cargo run -p varta-client --example secure_udp -- 127.0.0.1:9999 agent.key [COUNT]
//! ```
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use varta_client::vlp_core::keyfile::read_key_file;
use varta_client::{Status, Varta};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(key_file)) = (args.next(), args.next().map(PathBuf::from)) else {
        eprintln!("usage: secure_udp ADDR KEY_FILE [COUNT]");
        return ExitCode::from(2);
    };
    let count: u64 = args.next().and_then(|c| c.parse().ok()).unwrap_or(5);

    let key = match read_key_file(&key_file) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("key file {}: {e}", key_file.display());
            return ExitCode::from(2);
        }
    };
    let mut varta = match Varta::connect_secure_udp(addr.as_str(), key) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("cannot connect to {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    for _ in 0..count {
        let outcome = varta.beat(Status::Ok, 0);
        println!("sealed beat -> {outcome}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = varta.goodbye();
    ExitCode::SUCCESS
}
