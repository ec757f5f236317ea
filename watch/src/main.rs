//! The `varta-watch` executable: parses flags, then runs the observer or a subcommand.

use std::process::ExitCode;

use clap::Parser;
use varta_watch::config::{Cli, Command};

fn fail(msg: &str) -> ExitCode {
    eprintln!("varta-watch: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line naming the problem; clap's usage block would bury it.
            let text = e.render().to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad arguments")
                .trim_start_matches("error: ");
            return fail(&format!("{line} (see --help)"));
        }
    };
    let result = match cli.command {
        None => run(cli.run),
        Some(Command::Run(args)) => run(*args),
        Some(Command::Audit(a)) => Ok(varta_watch::recovery::verify::run(&a)),
        Some(Command::Key(a)) => varta_watch::keytool::run(&a).map_err(|e| e.to_string()),
        Some(Command::Status(a)) => {
            varta_watch::control::client::status(&a).map_err(|e| e.to_string())
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

fn run(args: varta_watch::config::RunArgs) -> Result<i32, String> {
    let cfg = args.resolve().map_err(|e| e.to_string())?;
    let mut daemon = varta_watch::daemon::Daemon::new(cfg).map_err(|e| e.to_string())?;
    Ok(daemon.run())
}
