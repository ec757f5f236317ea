//! Size probe: `varta-client-nostd` with shared-key AEAD datagrams ([`Agent::shared`], IV
//! prefixes derived from the boot salt); its text over `size-baseline` is the client's cost.
#![no_std]
#![no_main]

use core::hint::black_box;

use varta_client_nostd::{Agent, Key, StackError, Status};

#[cortex_m_rt::entry]
fn main() -> ! {
    let mut agent = Agent::shared(black_box(100), Key::from_bytes(black_box([7; 32])));
    agent.start(black_box([1; 16]));
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
