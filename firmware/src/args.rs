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

/// The arguments every sending binary takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunArgs {
    /// `port=N` (required): the host port; 10.0.2.2:N reaches 127.0.0.1:N.
    pub port: u16,
    /// `count=N` (default 5): datagrams to send; `count=0` means until stopped (`u32::MAX`).
    pub count: u32,
    /// `interval_ms=N` (default 20): time between datagrams.
    pub interval_ms: u32,
    /// `linger_ms=N` (default 0): after the last datagram, stay up this long, silent but still
    /// answering the network (what an observer sees as a stalled device), then exit.
    pub linger_ms: u32,
    /// `pid=N` (optional): the VLP device identity; 0 and 1 are reserved.
    pub pid: Option<u32>,
}

impl RunArgs {
    /// Parses the semihosting command line.
    ///
    /// # Errors
    ///
    /// Names the argument that is missing or malformed.
    pub fn parse(cmdline: &str) -> Result<Self, &'static str> {
        let number = |key: &str, default: u32| match find(cmdline, key) {
            None => Ok(default),
            Some(v) => v.parse::<u32>().map_err(|_| ()),
        };
        let port = find(cmdline, "port")
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|&p| p != 0)
            .ok_or("port=N (1..=65535) is required")?;
        let count = match number("count", 5).map_err(|_| "count=N must be a number")? {
            0 => u32::MAX,
            n => n,
        };
        let interval_ms =
            number("interval_ms", 20).map_err(|_| "interval_ms=N must be a number")?;
        let linger_ms = number("linger_ms", 0).map_err(|_| "linger_ms=N must be a number")?;
        let pid = match find(cmdline, "pid") {
            None => None,
            Some(v) => match v.parse::<u32>() {
                Ok(0 | 1) => return Err("pid 0 and 1 are reserved (VLP v0.2 section 2)"),
                Ok(p) => Some(p),
                Err(_) => return Err("pid=N must be a number"),
            },
        };
        Ok(Self {
            port,
            count,
            interval_ms,
            linger_ms,
            pid,
        })
    }
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
    fn run_args_defaults_and_overrides() {
        let a = RunArgs::parse("fw port=40000").unwrap();
        assert_eq!(
            a,
            RunArgs {
                port: 40_000,
                count: 5,
                interval_ms: 20,
                linger_ms: 0,
                pid: None
            }
        );
        let a = RunArgs::parse("port=1 count=0 interval_ms=7 linger_ms=900 pid=42").unwrap();
        assert_eq!(a.count, u32::MAX, "count=0 sends until stopped");
        assert_eq!((a.interval_ms, a.linger_ms, a.pid), (7, 900, Some(42)));
    }

    #[test]
    fn run_args_name_the_bad_argument() {
        assert!(RunArgs::parse("count=3").unwrap_err().starts_with("port"));
        assert!(RunArgs::parse("port=0").unwrap_err().starts_with("port"));
        assert!(RunArgs::parse("port=70000")
            .unwrap_err()
            .starts_with("port"));
        assert!(RunArgs::parse("port=9 count=x")
            .unwrap_err()
            .starts_with("count"));
        assert!(RunArgs::parse("port=9 interval_ms=-1")
            .unwrap_err()
            .starts_with("interval_ms"));
        assert!(RunArgs::parse("port=9 linger_ms=1e3")
            .unwrap_err()
            .starts_with("linger_ms"));
        assert!(RunArgs::parse("port=9 pid=1")
            .unwrap_err()
            .contains("reserved"));
        assert!(RunArgs::parse("port=9 pid=0")
            .unwrap_err()
            .contains("reserved"));
        assert!(RunArgs::parse("port=9 pid=me")
            .unwrap_err()
            .starts_with("pid"));
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
