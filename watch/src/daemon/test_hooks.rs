//! Test-only hooks, compiled with the `test-hooks` feature only (never in a release build).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// While the file named by `VARTA_TEST_BLOCK_FILE` exists, the loop is held at the top of its
/// turn, as a wedged loop would be: a test then sees the keep-alives stop.
pub fn block_while_requested() {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    let file = FILE.get_or_init(|| std::env::var_os("VARTA_TEST_BLOCK_FILE").map(PathBuf::from));
    if let Some(f) = file {
        while f.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
