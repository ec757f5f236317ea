//! Key files (VLP v0.2 §5), behind the `std` feature: one key of 64 hex characters per file
//! ([`read_key_file`]), or one key per line in an accepted-key list ([`read_key_list`]), blank
//! lines and `#` comments ignored. Refused, for both: symlinks, anything not a regular file,
//! files readable or writable by group or others (`mode & 0o077 != 0`), files owned by another
//! user.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::vec;
use std::vec::Vec;

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
    /// The file is larger than [`MAX_KEY_FILE_LEN`] bytes (no key file is), or a key list
    /// larger than [`MAX_KEY_LIST_LEN`].
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// A line of a key list is not 64 hex characters.
    KeyLine {
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it.
        error: KeyError,
    },
}

/// The largest key file read: one 64-character key line and plenty of comments. The file is
/// read into a stack buffer of this size (zeroized afterwards), never into a growing heap
/// string whose reallocations would leave copies of the key in freed memory.
pub const MAX_KEY_FILE_LEN: usize = 4096;

/// The largest accepted-key list read ([`read_key_list`]): about a thousand keys with
/// comments. Read into one buffer allocated at this size up front (never grown, so no
/// reallocation leaves copies of keys behind) and zeroized afterwards.
pub const MAX_KEY_LIST_LEN: usize = 64 * 1024;

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
            KeyFileError::KeyLine { line, error } => write!(f, "line {line}: {error}"),
        }
    }
}

impl std::error::Error for KeyFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyFileError::Io(e) => Some(e),
            KeyFileError::Key(e) | KeyFileError::KeyLine { error: e, .. } => Some(e),
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

/// Opens `path` for reading and checks the rules of the module docs on the opened file itself
/// (no window between the check and the read).
fn open_checked(path: &Path) -> Result<File, KeyFileError> {
    let link = std::fs::symlink_metadata(path).map_err(KeyFileError::Io)?;
    if link.file_type().is_symlink() {
        return Err(KeyFileError::Symlink);
    }
    let file = File::options()
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
    Ok(file)
}

fn utf8(bytes: &[u8]) -> Result<&str, KeyFileError> {
    core::str::from_utf8(bytes).map_err(|_| {
        KeyFileError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "key file is not UTF-8",
        ))
    })
}

/// Reads a key file, enforcing the rules of the module docs on the opened file itself (no
/// window between the check and the read).
///
/// # Errors
/// Any [`KeyFileError`].
pub fn read_key_file(path: &Path) -> Result<Key, KeyFileError> {
    let mut file = open_checked(path)?;
    let mut buf = [0u8; MAX_KEY_FILE_LEN];
    let key = read_bounded(&mut file, &mut buf).and_then(|n| parse_key_text(utf8(&buf[..n])?));
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

/// Parses an accepted-key list: one key of 64 hex characters per line, blank lines and `#`
/// comments ignored, at least one key. A key listed twice is kept once.
///
/// # Errors
/// [`KeyFileError::NoKey`], or [`KeyFileError::KeyLine`] naming the first bad line.
pub fn parse_key_list(text: &str) -> Result<Vec<Key>, KeyFileError> {
    let lines = || {
        text.lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
    };
    // Sized once: a growing Vec would leave copies of keys in the memory it frees.
    let mut keys: Vec<Key> = Vec::with_capacity(lines().count());
    for (line, l) in lines() {
        let key = Key::from_hex(l).map_err(|error| KeyFileError::KeyLine { line, error })?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(KeyFileError::NoKey);
    }
    Ok(keys)
}

/// Reads an accepted-key list ([`parse_key_list`]) with the same file checks as
/// [`read_key_file`]; at most [`MAX_KEY_LIST_LEN`] bytes.
///
/// # Errors
/// Any [`KeyFileError`].
pub fn read_key_list(path: &Path) -> Result<Vec<Key>, KeyFileError> {
    let mut file = open_checked(path)?;
    let mut buf = zeroize::Zeroizing::new(vec![0u8; MAX_KEY_LIST_LEN + 1]);
    let mut n = 0;
    loop {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if n > MAX_KEY_LIST_LEN {
                    return Err(KeyFileError::TooLarge {
                        limit: MAX_KEY_LIST_LEN,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(KeyFileError::Io(e)),
        }
    }
    parse_key_list(utf8(&buf[..n])?)
}

/// A refused key file as an `io::Error` (for `?` in programs that return `io::Result`): the
/// kind follows the rule (`PermissionDenied` for the ownership and mode rules, `InvalidData`
/// for the contents), the message is the rule's.
impl From<KeyFileError> for io::Error {
    fn from(e: KeyFileError) -> io::Error {
        io::Error::new(e.io_kind(), e)
    }
}

impl KeyFileError {
    /// The `io::ErrorKind` this refusal maps to: `PermissionDenied` for the ownership, mode
    /// and symlink rules, `InvalidData` for the contents, the OS error's own kind otherwise.
    #[must_use]
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            KeyFileError::Io(inner) => inner.kind(),
            KeyFileError::Symlink
            | KeyFileError::TooOpen { .. }
            | KeyFileError::WrongOwner { .. } => io::ErrorKind::PermissionDenied,
            KeyFileError::NotRegular
            | KeyFileError::NoKey
            | KeyFileError::SeveralKeys
            | KeyFileError::Key(_)
            | KeyFileError::TooLarge { .. }
            | KeyFileError::KeyLine { .. } => io::ErrorKind::InvalidData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::os::unix::fs::PermissionsExt;
    use std::string::ToString;

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

    #[test]
    fn key_lists_hold_one_key_per_line_with_the_same_file_checks() {
        let d = tmpdir("list");
        let hex2 = HEX.replace("00", "ff");
        let good = write(
            &d,
            "list",
            &format!("# rotation: new key first\n{hex2}\n\n  {HEX}  \n# old\n{HEX}\n"),
            0o600,
        );
        let keys = read_key_list(&good).unwrap();
        assert_eq!(keys.len(), 2, "the key listed twice is kept once");
        assert_eq!(keys[0].as_bytes()[0], 0xff);
        assert_eq!(keys[1].as_bytes()[31], 0x1f);
        // A single-key file is a list of one.
        let one = write(&d, "one", HEX, 0o600);
        assert_eq!(read_key_list(&one).unwrap().len(), 1);
        let bad = write(&d, "bad", &format!("{HEX}\n# x\n{}\n", &HEX[1..]), 0o600);
        assert!(matches!(
            read_key_list(&bad),
            Err(KeyFileError::KeyLine {
                line: 3,
                error: KeyError::BadLength { len: 63 }
            })
        ));
        let none = write(&d, "none", "# nothing yet\n\n", 0o600);
        assert!(matches!(read_key_list(&none), Err(KeyFileError::NoKey)));
        let open = write(&d, "open", HEX, 0o604);
        assert!(matches!(
            read_key_list(&open),
            Err(KeyFileError::TooOpen { .. })
        ));
        let link = d.join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(matches!(read_key_list(&link), Err(KeyFileError::Symlink)));
        assert!(matches!(read_key_list(&d), Err(KeyFileError::NotRegular)));
        let mut many = std::string::String::new();
        while many.len() <= MAX_KEY_LIST_LEN {
            many.push_str(HEX);
            many.push('\n');
        }
        let big = write(&d, "big", &many, 0o600);
        assert!(matches!(
            read_key_list(&big),
            Err(KeyFileError::TooLarge {
                limit: MAX_KEY_LIST_LEN
            })
        ));
        let binary = d.join("binary");
        std::fs::write(&binary, [0xff, 0xfe, b'\n']).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_key_list(&binary),
            Err(KeyFileError::Io(e)) if e.kind() == io::ErrorKind::InvalidData
        ));
        let other = write(&d, "other", HEX, 0o600);
        if effective_uid() == 0 {
            std::os::unix::fs::chown(&other, Some(12345), None).unwrap();
            assert!(matches!(
                read_key_list(&other),
                Err(KeyFileError::WrongOwner { owner: 12345, .. })
            ));
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn key_from_file_is_the_checked_reader_as_io_result() {
        let d = tmpdir("from-file");
        let good = write(&d, "good", &format!("{HEX}\n"), 0o600);
        let key = crate::crypto::Key::from_file(&good).unwrap();
        assert_eq!(key, read_key_file(&good).unwrap());
        let open = write(&d, "open", HEX, 0o644);
        let e = crate::crypto::Key::from_file(&open).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("chmod 600"), "{e}");
        let short = write(&d, "short", "abcd", 0o600);
        let e = crate::crypto::Key::from_file(short).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            crate::crypto::Key::from_file(d.join("missing"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
