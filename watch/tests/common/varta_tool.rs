//! The `varta` tool beside the observer binary: its `agent` subcommand is the real agent process
//! (sending through `varta-client`) that daemon tests start. `cargo test --workspace` builds it
//! next to `varta-watch`; alone, `cargo build -p varta-tools` does.

use std::path::{Path, PathBuf};

/// `varta`, found beside the given `varta-watch` binary.
///
/// # Panics
/// When it has not been built, with the command that builds it.
pub fn beside(varta_watch: &Path) -> PathBuf {
    let bin = varta_watch.with_file_name("varta");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p varta-tools`",
        bin.display()
    );
    bin
}
