//! The `varta-watch` executable: parses flags, then runs the observer or a subcommand.

use std::ffi::OsString;
use std::process::ExitCode;

use varta_watch::config::{parse_or_exit, Cli, Command, RunArgs};

fn fail(msg: &str) -> ExitCode {
    eprintln!("varta-watch: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = match parse_or_exit::<Cli>("varta-watch") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = match cli.command {
        // The observer's own arguments: everything after the program name, or after `run`
        // (flags and subcommands do not mix, so `run` is then the first argument).
        None => run(std::env::args_os().skip(1).collect()),
        Some(Command::Run(_)) => run(std::env::args_os().skip(2).collect()),
        Some(Command::Audit(a)) => Ok(varta_watch::recovery::verify::run(&a)),
        Some(Command::State(a)) => Ok(varta_watch::daemon::state::run(&a)),
        Some(Command::Key(a)) => varta_watch::keytool::run(&a).map_err(|e| e.to_string()),
        Some(Command::Status(a)) => {
            varta_watch::control::client::status(&a).map_err(|e| e.to_string())
        }
        Some(Command::Reload(a)) => {
            varta_watch::control::client::reload(&a).map_err(|e| e.to_string())
        }
        Some(Command::Silence(a)) => {
            varta_watch::control::client::silence(&a).map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(msg) => fail(&msg),
    }
}

fn run(argv: Vec<OsString>) -> Result<i32, String> {
    let cfg = RunArgs::load(&argv).map_err(|e| e.to_string())?;
    let mut daemon = varta_watch::daemon::Daemon::new(cfg).map_err(|e| e.to_string())?;
    daemon.set_reload_args(argv);
    Ok(daemon.run())
}
