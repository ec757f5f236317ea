//! Files the observer writes (the export file, the recovery audit trail, state files): one
//! way to open them and one way to rotate them.
//!
//! [`open_private`] opens for appending with `O_NOFOLLOW | O_CLOEXEC` (a symbolic link at the
//! path is refused by the kernel, not by a racy check before the open; no descriptor leaks
//! into recovery children), creates with mode 0600, and refuses what is there already if it
//! is not a regular file, is owned by another user, or gives group or others any access. The
//! checks run on the opened descriptor (`fstat`), so the file checked is the file written.
//! [`rotate`] shifts `PATH.1 … PATH.(n-1)` up by one and renames `PATH` to `PATH.1`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a file the observer writes was refused.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    /// Open, stat or read failed.
    #[error("{op}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
    /// A symbolic link.
    #[error("is a symbolic link (refused)")]
    Symlink,
    /// Not a regular file.
    #[error("is not a regular file")]
    NotRegular,
    /// Owned by another user.
    #[error("is owned by uid {owner}, not by us (uid {expected})")]
    WrongOwner {
        /// Its owner.
        owner: u32,
        /// Our euid.
        expected: u32,
    },
    /// Group or others have access.
    #[error("mode {0:04o} gives group/others access; chmod 600 it")]
    TooOpen(u32),
}

impl From<PrivateFileError> for io::Error {
    fn from(e: PrivateFileError) -> io::Error {
        match e {
            PrivateFileError::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::PermissionDenied, other.to_string()),
        }
    }
}

/// Opens `path` for appending (and reading, if `read`) with the rules of the module docs.
///
/// # Errors
/// [`PrivateFileError`] naming the failed rule.
pub fn open_private(path: &Path, read: bool) -> Result<File, PrivateFileError> {
    let file = OpenOptions::new()
        .read(read)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                PrivateFileError::Symlink
            } else {
                PrivateFileError::Io {
                    op: "open",
                    source: e,
                }
            }
        })?;
    check_private(&file)?;
    Ok(file)
}

/// The rule of the module docs on an opened file: a regular file, ours, no access for group
/// or others (checked on the descriptor, so the file checked is the file used).
///
/// # Errors
/// [`PrivateFileError`] naming the failed rule.
pub fn check_private(file: &File) -> Result<(), PrivateFileError> {
    let meta = file
        .metadata()
        .map_err(|source| PrivateFileError::Io { op: "stat", source })?;
    if !meta.file_type().is_file() {
        return Err(PrivateFileError::NotRegular);
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(PrivateFileError::WrongOwner {
            owner: meta.uid(),
            expected: me,
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(PrivateFileError::TooOpen(meta.mode() & 0o7777));
    }
    Ok(())
}

/// Opens an existing file read-only without following a symbolic link (close-on-exec).
///
/// # Errors
/// The open error (`ELOOP` for a symbolic link).
pub fn open_read_nofollow(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// `PATH.n`.
#[must_use]
pub fn generation(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Rotates `path` keeping `generations` old files: `PATH.(g-1)` → `PATH.g`, …, `PATH` →
/// `PATH.1` (the oldest is replaced). The caller reopens `PATH` afterwards.
///
/// # Errors
/// The first rename that failed.
pub fn rotate(path: &Path, generations: u32) -> io::Result<()> {
    for n in (1..generations).rev() {
        let from = generation(path, n);
        if std::fs::symlink_metadata(&from).is_ok() {
            std::fs::rename(&from, generation(path, n + 1))?;
        }
    }
    std::fs::rename(path, generation(path, 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("varta-fsutil-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn creates_0600_and_refuses_links_and_open_modes() {
        let d = dir("rules");
        let p = d.join("f");
        drop(open_private(&p, false).unwrap());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let link = d.join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(matches!(
            open_private(&link, false),
            Err(PrivateFileError::Symlink)
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            open_private(&p, false),
            Err(PrivateFileError::TooOpen(0o644))
        ));
        let sub = d.join("dir");
        std::fs::create_dir(&sub).unwrap();
        assert!(open_private(&sub, false).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rotation_keeps_the_asked_generations() {
        let d = dir("rotate");
        let p = d.join("f");
        for i in 0..8 {
            std::fs::write(&p, format!("{i}")).unwrap();
            rotate(&p, 5).unwrap();
        }
        for n in 1..=5 {
            let text = std::fs::read_to_string(generation(&p, n)).unwrap();
            assert_eq!(text, format!("{}", 8 - n));
        }
        assert!(!generation(&p, 6).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
