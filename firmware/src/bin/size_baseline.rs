//! Size probe, baseline: the probes' common frame (runtime, opaque inputs, a sink) without the
//! client. `size-report.sh` subtracts its text from the other probes'.
#![no_std]
#![no_main]

use core::hint::black_box;

#[cortex_m_rt::entry]
fn main() -> ! {
    loop {
        let now = black_box(0u64);
        black_box(&now.to_le_bytes()[..]);
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}
