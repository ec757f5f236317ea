//! Size and instruction-count probe for varta-client-nostd (see ../size-probe/measure.sh).
//! `sink` stands in for a stack (two volatile writes), `now` for a timer (a volatile read).
#![no_std]
use core::ptr::{read_volatile, write_volatile};
pub static mut SINK: [u8; 64] = [0; 64];
pub static mut INPUT: u64 = 0;
pub fn now() -> u64 {
    unsafe { read_volatile(&raw const INPUT) }
}
pub fn sink(d: &[u8]) -> Result<(), varta_client_nostd::StackError> {
    unsafe { write_volatile(&raw mut INPUT, d.as_ptr() as u64 + d.len() as u64) }
    Ok(())
}
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
#[inline(never)]
#[no_mangle]
pub extern "C" fn probe_mark_start() {
    unsafe { write_volatile(&raw mut INPUT, 1) }
}
#[inline(never)]
#[no_mangle]
pub extern "C" fn probe_mark_end() {
    unsafe { write_volatile(&raw mut INPUT, 2) }
}
