//! `varta observe` (hidden): the observer daemon linked into this binary. It takes exactly
//! `varta-watch`'s flags and runs the same library code, so the demo and the benchmarks work
//! from one `cargo run -p varta-tools` build; `varta bench --observer-exe PATH` measures a
//! separately built `varta-watch` instead.

use std::ffi::OsString;

use clap::Parser;
use varta_watch::config::{Cli, Command};

/// Runs the observer with `varta-watch`'s command line `args`; returns its exit status.
///
/// # Errors
/// The flag, configuration or startup problem, as one line.
pub fn run(args: &[OsString]) -> Result<i32, String> {
    let argv = std::iter::once(OsString::from("varta-watch")).chain(args.iter().cloned());
    let cli = Cli::try_parse_from(argv).map_err(|e| {
        let text = e.render().to_string();
        text.lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("bad arguments")
            .trim_start_matches("error: ")
            .to_owned()
    })?;
    let run = match cli.command {
        None => cli.run,
        Some(Command::Run(a)) => *a,
        // Other `varta-watch` subcommands (inspection tools) are run from `varta-watch` itself.
        #[allow(
            unreachable_patterns,
            reason = "the daemon may grow subcommands besides `run`"
        )]
        Some(_) => return Err("observe: give the observer's flags (no subcommand)".into()),
    };
    let cfg = run.resolve().map_err(|e| e.to_string())?;
    let mut daemon = varta_watch::daemon::Daemon::new(cfg).map_err(|e| e.to_string())?;
    Ok(daemon.run())
}
