//! Run-time arguments from the host, over semihosting (`SYS_GET_CMDLINE`).
//!
//! QEMU builds the command line from `-semihosting-config ...,arg=A,arg=B` ("A B"), so the
//! end-to-end script can hand the firmware its UDP port without rebuilding it. Arguments are
//! `key=value` words; other words (the program name) are ignored.

/// The value of the first `key=value` word in `cmdline`.
pub fn find<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_ascii_whitespace().find_map(|word| {
        let (k, v) = word.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// The value of `key` parsed as a `u32`; `None` when absent or not a decimal number.
pub fn find_u32(cmdline: &str, key: &str) -> Option<u32> {
    find(cmdline, key)?.parse().ok()
}

/// The value of `key` as exactly `N` bytes of hex (either case); `None` when absent, of
/// another length, or not hex.
pub fn find_hex<const N: usize>(cmdline: &str, key: &str) -> Option<[u8; N]> {
    let text = find(cmdline, key)?.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        *byte = (hi << 4 | lo) as u8; // two hex digits: < 256
    }
    Some(out)
}

/// Reads the semihosting command line into `buf`; `None` when the host gives none or it is
/// not UTF-8.
#[cfg(all(target_arch = "arm", target_os = "none"))]
pub fn cmdline(buf: &mut [u8]) -> Option<&str> {
    // SYS_GET_CMDLINE takes {buffer, length}; the host writes the string with a NUL and
    // stores its length (without the NUL) back into the second word.
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: the block holds a valid, writable buffer and its length, as the call requires;
    // the host writes at most `buf.len()` bytes into the buffer and one word into the block,
    // both through pointers derived from unique borrows.
    let rc = unsafe {
        cortex_m_semihosting::syscall1(
            cortex_m_semihosting::nr::GET_CMDLINE,
            block.as_mut_ptr() as usize,
        )
    };
    if rc != 0 {
        return None;
    }
    let len = block[1].min(buf.len());
    core::str::from_utf8(&buf[..len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_key_value_words() {
        let cmd = "udp-probe port=40123 count=5";
        assert_eq!(find(cmd, "port"), Some("40123"));
        assert_eq!(find_u32(cmd, "count"), Some(5));
        assert_eq!(find(cmd, "udp-probe"), None);
        assert_eq!(find(cmd, "missing"), None);
    }

    #[test]
    fn decodes_hex_of_the_exact_length() {
        let cmd = "salt=00ff10Ab key=0";
        assert_eq!(find_hex::<4>(cmd, "salt"), Some([0x00, 0xFF, 0x10, 0xAB]));
        assert_eq!(find_hex::<3>(cmd, "salt"), None, "too long");
        assert_eq!(find_hex::<5>(cmd, "salt"), None, "too short");
        assert_eq!(find_hex::<1>("salt=0g", "salt"), None, "not hex");
        assert_eq!(find_hex::<1>("salt=+1", "salt"), None, "not hex");
        assert_eq!(find_hex::<1>(cmd, "key"), None, "odd length");
        assert_eq!(find_hex::<1>(cmd, "iv"), None, "absent");
    }

    #[test]
    fn rejects_non_numbers_and_takes_the_first_match() {
        assert_eq!(find_u32("port=x", "port"), None);
        assert_eq!(find_u32("port=-1", "port"), None);
        assert_eq!(find_u32("port=7 port=8", "port"), Some(7));
        assert_eq!(find("port=", "port"), Some(""));
    }
}
