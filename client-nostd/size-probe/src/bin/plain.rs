#![no_std]
#![no_main]
use varta_client_nostd::{Agent, Status};
use varta_nostd_size_probe::*;
#[cortex_m_rt::entry]
fn main() -> ! {
    let mut a = Agent::plain(now() as u32);
    let mut t = sink;
    loop {
        let _ = a.try_beat(&mut t, Status::Ok, 0, now());
    }
}
