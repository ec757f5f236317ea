#![no_std]
#![no_main]
use varta_nostd_size_probe::*;
#[cortex_m_rt::entry]
fn main() -> ! {
    loop {
        let n = now();
        let _ = sink(&n.to_le_bytes());
    }
}
