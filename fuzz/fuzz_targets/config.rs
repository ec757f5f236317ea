//! `config`: arbitrary bytes as the observer's `--config` TOML file. The file is read as
//! arguments for the one flag definition (`varta_watch::config::file::to_args`) and then
//! parsed and checked like a command line (`RunArgs::load`): never a panic, whatever the keys,
//! values, nesting or numbers (millisecond settings are range-checked before `* 1_000_000`).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use varta_watch::config::{file, RunArgs};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() as u64 > file::MAX_CONFIG_LEN {
        return;
    }
    let Ok(args) = file::to_args(Path::new("fuzz.toml"), text, &RunArgs::command()) else {
        return;
    };
    // Every argument is a flag of the observer, in `--key` or `--key=value` form.
    for a in &args {
        assert!(a.to_string_lossy().starts_with("--"), "{a:?}");
    }
    let _ = RunArgs::load(&args);
});
