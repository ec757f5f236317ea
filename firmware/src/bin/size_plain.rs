//! Size probe: `varta-client-nostd` with plain frames (an [`Agent::plain`] beating through a
//! sink transport); its text over `size-baseline` is the client's plain-frame cost.
#![no_std]
#![no_main]

use core::hint::black_box;

use varta_client_nostd::{Agent, StackError, Status};

#[cortex_m_rt::entry]
fn main() -> ! {
    let mut agent = Agent::plain(black_box(100));
    let mut sink = |d: &[u8]| -> Result<(), StackError> {
        black_box(d);
        Ok(())
    };
    loop {
        let _ = black_box(agent.try_beat(&mut sink, Status::Ok, 0, black_box(0)));
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}
