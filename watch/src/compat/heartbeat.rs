//! `--heartbeat-file`: one line, rewritten in place every loop turn with `pwrite` into a
//! descriptor opened once (no open, rename or fsync on the loop's path): a turn counter that
//! only grows, a space, and the Unix time with milliseconds. A script restarts the observer
//! when the counter stops growing.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use rustix::fs::{Mode, OFlags};

/// The open heartbeat file.
#[derive(Debug)]
pub struct HeartbeatFile {
    fd: OwnedFd,
    turns: u64,
    len: usize,
    line: String,
    /// Failed writes (full disk, I/O error); the loop goes on.
    pub errors: u64,
}

impl HeartbeatFile {
    /// Opens (creating, mode 0644) `path` for writing; refuses a symbolic link.
    ///
    /// # Errors
    /// The `open` error, with the path.
    pub fn open(path: &Path) -> std::io::Result<HeartbeatFile> {
        let fd = rustix::fs::open(
            path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| {
            std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!("--heartbeat-file {}: {e}", path.display()),
            )
        })?;
        rustix::fs::ftruncate(&fd, 0)?;
        Ok(HeartbeatFile {
            fd,
            turns: 0,
            len: 0,
            line: String::with_capacity(64),
            errors: 0,
        })
    }

    /// Turns written so far.
    #[must_use]
    pub fn turns(&self) -> u64 {
        self.turns
    }

    /// Writes the next line: the counter plus one, and `unix` (time since the epoch).
    pub fn write(&mut self, unix: Duration) {
        use std::fmt::Write as _;
        self.turns += 1;
        self.line.clear();
        let _ = writeln!(
            self.line,
            "{} {}.{:03}",
            self.turns,
            unix.as_secs(),
            unix.subsec_millis()
        );
        let ok = matches!(rustix::io::pwrite(&self.fd, self.line.as_bytes(), 0), Ok(n) if n == self.line.len());
        // The line only grows (the counter grows, the time keeps its width), but a shorter
        // one must not leave the tail of the last.
        let ok = ok
            && (self.line.len() >= self.len
                || rustix::fs::ftruncate(&self.fd, self.line.len() as u64).is_ok());
        if ok {
            self.len = self.line.len();
        } else {
            self.errors += 1;
        }
    }
}
