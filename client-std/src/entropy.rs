//! OS entropy for IV salts: `getrandom(2)`, blocking only until the kernel's pool is
//! initialised at boot (never afterwards), no file descriptor, no allocation.

use std::io;

use vlp_core::kdf::SALT_LEN;

/// A fresh 16-byte session salt.
///
/// # Errors
/// `getrandom(2)` failed with something other than `EINTR` (e.g. `ENOSYS` on a pre-3.17
/// kernel, `EPERM` under a seccomp filter).
pub(crate) fn salt() -> io::Result<[u8; SALT_LEN]> {
    let mut salt = [0u8; SALT_LEN];
    fill(&mut salt)?;
    Ok(salt)
}

fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes for the duration of
        // the call; getrandom writes at most that many bytes into it.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // n >= 0 and n <= rest.len() by getrandom's contract.
        filled += usize::try_from(n).unwrap_or(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn salts_differ() {
        // Two 128-bit draws colliding would mean the entropy source is broken.
        let a = super::salt().unwrap();
        let b = super::salt().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 16]);
    }
}
