#![no_std]
#![no_main]
use varta_client_nostd::{Agent, Key, Status};
use varta_nostd_size_probe::*;
#[cortex_m_rt::entry]
fn main() -> ! {
    let mut key = [0u8; 32];
    key[0] = now() as u8;
    let mut a = Agent::shared(now() as u32, Key::from_bytes(key));
    let mut salt = [1u8; 16];
    salt[0] = now() as u8;
    a.start(salt);
    let mut t = sink;
    loop {
        let _ = a.try_beat(&mut t, Status::Ok, 0, now());
    }
}
