#![no_std]
#![no_main]
use varta_client_nostd::{Agent, Key, Status};
use varta_nostd_size_probe::*;
#[cortex_m_rt::entry]
fn main() -> ! {
    let mut key = [0u8; 32];
    key[0] = now() as u8;
    let mut a = Agent::master(now() as u32 + 100, Key::from_bytes(key));
    let mut salt = [1u8; 16];
    salt[0] = now() as u8;
    a.start(salt);
    let mut t = sink;
    let _ = a.try_beat(&mut t, Status::Ok, 0, now());
    // Measured: the second beat (steady state).
    probe_mark_start();
    let _ = a.try_beat(&mut t, Status::Ok, 0, now());
    probe_mark_end();
    let mut p = Agent::plain(now() as u32 + 100);
    probe_mark_start();
    let _ = p.try_beat(&mut t, Status::Ok, 0, now());
    probe_mark_end();
    loop {
        cortex_m::asm::wfi();
    }
}
