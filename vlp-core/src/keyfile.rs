//! Key files (VLP v0.2 §5), behind the `std` feature: one key of 64 hex characters per file,
//! blank lines and `#` comments ignored. Refused: symlinks, anything not a regular file, files
//! readable or writable by group or others (`mode & 0o077 != 0`), files owned by another user.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::envelope::{Key, KeyError};

/// Why a key file was refused. Each variant names the failed rule.
#[derive(Debug)]
pub enum KeyFileError {
    /// The file could not be inspected or read.
    Io(io::Error),
    /// The path is a symbolic link.
    Symlink,
    /// The path is not a regular file.
    NotRegular,
    /// Group or others have some access.
    TooOpen {
        /// The file's permission bits.
        mode: u32,
    },
    /// The file belongs to another user.
    WrongOwner {
        /// The file's owner.
        owner: u32,
        /// Our effective uid.
        expected: u32,
    },
    /// No key line in the file.
    NoKey,
    /// More than one key line in the file.
    SeveralKeys,
    /// The key line is not 64 hex characters.
    Key(KeyError),
    /// The file is larger than [`MAX_KEY_FILE_LEN`] bytes (no key file is).
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

/// The largest key file read: one 64-character key line and plenty of comments. The file is
/// read into a stack buffer of this size (zeroized afterwards), never into a growing heap
/// string whose reallocations would leave copies of the key in freed memory.
pub const MAX_KEY_FILE_LEN: usize = 4096;

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Io(e) => write!(f, "cannot read: {e}"),
            KeyFileError::Symlink => f.write_str("is a symbolic link (refused)"),
            KeyFileError::NotRegular => f.write_str("is not a regular file"),
            KeyFileError::TooOpen { mode } => write!(
                f,
                "mode {:04o} gives group/others access; chmod 600 it",
                mode & 0o7777
            ),
            KeyFileError::WrongOwner { owner, expected } => {
                write!(f, "is owned by uid {owner}, not by us (uid {expected})")
            }
            KeyFileError::NoKey => f.write_str("holds no key line"),
            KeyFileError::SeveralKeys => f.write_str("holds more than one key line"),
            KeyFileError::Key(e) => write!(f, "{e}"),
            KeyFileError::TooLarge { limit } => {
                write!(f, "is larger than {limit} bytes (not a key file)")
            }
        }
    }
}

impl std::error::Error for KeyFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyFileError::Io(e) => Some(e),
            KeyFileError::Key(e) => Some(e),
            _ => None,
        }
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Parses key-file text: exactly one non-blank, non-`#` line, 64 hex characters.
///
/// # Errors
/// [`KeyFileError::NoKey`], [`KeyFileError::SeveralKeys`] or [`KeyFileError::Key`].
pub fn parse_key_text(text: &str) -> Result<Key, KeyFileError> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = lines.next().ok_or(KeyFileError::NoKey)?;
    if lines.next().is_some() {
        return Err(KeyFileError::SeveralKeys);
    }
    Key::from_hex(line).map_err(KeyFileError::Key)
}

/// Reads a key file, enforcing the rules of the module docs on the opened file itself (no
/// window between the check and the read).
///
/// # Errors
/// Any [`KeyFileError`].
pub fn read_key_file(path: &Path) -> Result<Key, KeyFileError> {
    let link = std::fs::symlink_metadata(path).map_err(KeyFileError::Io)?;
    if link.file_type().is_symlink() {
        return Err(KeyFileError::Symlink);
    }
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                KeyFileError::Symlink
            } else {
                KeyFileError::Io(e)
            }
        })?;
    let meta = file.metadata().map_err(KeyFileError::Io)?;
    if !meta.file_type().is_file() {
        return Err(KeyFileError::NotRegular);
    }
    if meta.mode() & 0o077 != 0 {
        return Err(KeyFileError::TooOpen { mode: meta.mode() });
    }
    let me = effective_uid();
    if meta.uid() != me {
        return Err(KeyFileError::WrongOwner {
            owner: meta.uid(),
            expected: me,
        });
    }
    let mut buf = [0u8; MAX_KEY_FILE_LEN];
    let key = read_bounded(&mut file, &mut buf).and_then(|n| {
        let text = core::str::from_utf8(&buf[..n]).map_err(|_| {
            KeyFileError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "key file is not UTF-8",
            ))
        })?;
        parse_key_text(text)
    });
    zeroize::Zeroize::zeroize(&mut buf);
    key
}

/// Reads all of `file` into `buf`; [`KeyFileError::TooLarge`] if it does not fit.
fn read_bounded(file: &mut File, buf: &mut [u8; MAX_KEY_FILE_LEN]) -> Result<usize, KeyFileError> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => return Ok(n),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(KeyFileError::Io(e)),
        }
    }
    // Full: one more byte means the file does not fit.
    let mut probe = [0u8; 1];
    loop {
        match file.read(&mut probe) {
            Ok(0) => return Ok(n),
            Ok(_) => {
                zeroize::Zeroize::zeroize(&mut probe);
                return Err(KeyFileError::TooLarge {
                    limit: MAX_KEY_FILE_LEN,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(KeyFileError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::os::unix::fs::PermissionsExt;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vlp-keyfile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn accepts_and_refuses_by_rule() {
        let d = tmpdir("rules");
        let good = write(&d, "good", &format!("# comment\n\n{HEX}\n"), 0o600);
        assert_eq!(read_key_file(&good).unwrap().as_bytes()[31], 0x1f);
        let open = write(&d, "open", HEX, 0o640);
        assert!(matches!(
            read_key_file(&open),
            Err(KeyFileError::TooOpen { .. })
        ));
        let two = write(&d, "two", &format!("{HEX}\n{HEX}\n"), 0o600);
        assert!(matches!(
            read_key_file(&two),
            Err(KeyFileError::SeveralKeys)
        ));
        let none = write(&d, "none", "# only\n", 0o600);
        assert!(matches!(read_key_file(&none), Err(KeyFileError::NoKey)));
        let short = write(&d, "short", "abcd", 0o600);
        assert!(matches!(
            read_key_file(&short),
            Err(KeyFileError::Key(KeyError::BadLength { len: 4 }))
        ));
        let link = d.join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(matches!(read_key_file(&link), Err(KeyFileError::Symlink)));
        assert!(matches!(read_key_file(&d), Err(KeyFileError::NotRegular)));
        assert!(matches!(
            read_key_file(&d.join("missing")),
            Err(KeyFileError::Io(_))
        ));
        // Up to the limit the key is found among comments; one byte more is refused whole.
        let pad = "#".repeat(MAX_KEY_FILE_LEN - HEX.len() - 2);
        let full = write(&d, "full", &format!("{pad}\n{HEX}\n"), 0o600);
        assert_eq!(
            std::fs::metadata(&full).unwrap().len(),
            MAX_KEY_FILE_LEN as u64
        );
        assert_eq!(read_key_file(&full).unwrap().as_bytes()[0], 0);
        let big = write(&d, "big", &format!("{pad}#\n{HEX}\n"), 0o600);
        assert!(matches!(
            read_key_file(&big),
            Err(KeyFileError::TooLarge {
                limit: MAX_KEY_FILE_LEN
            })
        ));
        let binary = d.join("binary");
        std::fs::write(&binary, [0xff, 0xfe, b'\n']).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_key_file(&binary),
            Err(KeyFileError::Io(e)) if e.kind() == io::ErrorKind::InvalidData
        ));
        let other = write(&d, "other", HEX, 0o600);
        if effective_uid() == 0 {
            std::os::unix::fs::chown(&other, Some(12345), None).unwrap();
            assert!(matches!(
                read_key_file(&other),
                Err(KeyFileError::WrongOwner { owner: 12345, .. })
            ));
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
