//! `varta`: Varta's demo, benchmarks and agent simulator.
//!
//! * `varta demo`: an observer and three real agents (one hangs, one crashes), for a first look;
//! * `varta bench`: the observer's benchmarks, every figure of one run side by side;
//! * `varta agent`: a heartbeat agent sending through `varta-client`, for tests and trials.
//!
//! Hidden helpers the commands above start as real processes: `observe` (the `varta-watch`
//! daemon linked in, same flags), `demo-recover` (the demo's recovery program) and `bench-gen`
//! (the benchmarks' load generator).

mod agent;
mod bench;
mod demo;
mod observe;
mod seal;
mod sys;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `varta`: Varta's demo, benchmarks and agent simulator.
#[derive(Debug, Parser)]
#[command(name = "varta", version, about = "Varta's demo, benchmarks and agent simulator", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start an observer and a few agents (one hangs, one crashes) and show what happens.
    Demo(demo::DemoArgs),
    /// Benchmarks of the observer: ingest, stall precision, many agents; prints figures.
    Bench(Box<bench::BenchArgs>),
    /// A heartbeat agent (sends through varta-client).
    Agent(agent::AgentArgs),
    /// The observer daemon linked into this binary: `varta-watch`'s flags.
    #[command(hide = true)]
    Observe {
        /// `varta-watch` flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// The demo's recovery command.
    #[command(hide = true)]
    DemoRecover(demo::RecoverArgs),
    /// The benchmarks' load generator.
    #[command(hide = true)]
    BenchGen(bench::gen::GenArgs),
}

fn main() -> ExitCode {
    let cli = match varta_watch::config::parse_or_exit::<Cli>("varta") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = match cli.command {
        Command::Demo(a) => demo::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Agent(a) => agent::run(&a),
        Command::Observe { args } => observe::run(&args),
        Command::DemoRecover(a) => demo::recover(&a),
        Command::BenchGen(a) => bench::gen::run(&a),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(msg) => {
            eprintln!("varta: {msg}");
            ExitCode::from(2)
        }
    }
}
