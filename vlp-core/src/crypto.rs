//! The key type under the path the published 0.2 client API uses,
//! `varta_vlp::crypto::Key::from_file` (with `varta-vlp = { package = "vlp-core", features =
//! ["std"] }` in a program's Cargo.toml). Behind the `std` feature.

use std::io;
use std::path::Path;

pub use crate::envelope::{Key, KeyError, KEY_LEN};

impl Key {
    /// Reads a key file: 64 hex characters, blank lines and `#` comments ignored, mode 0600
    /// (no group or other access), a regular file owned by us, not a symlink (VLP v0.2 §5;
    /// [`crate::keyfile::read_key_file`]).
    ///
    /// # Errors
    /// The file was refused or could not be read: `PermissionDenied` for the ownership, mode
    /// and symlink rules, `InvalidData` for the contents, the OS error's kind otherwise. The
    /// message names the file and the rule (`key file F: mode 0644 gives group/others access;
    /// chmod 600 it`), also in the `Debug` form a `main` returning `io::Result` prints.
    pub fn from_file(path: impl AsRef<Path>) -> io::Result<Key> {
        let path = path.as_ref();
        crate::keyfile::read_key_file(path).map_err(|e| {
            io::Error::new(
                e.io_kind(),
                std::format!("key file {}: {e}", path.display()),
            )
        })
    }
}
