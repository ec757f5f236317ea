//! `varta demo`: an observer and three real agent processes, for a first look.
//!
//! * `steady` beats every 200 ms for ten seconds, then says goodbye (no stall for a clean exit);
//! * `hangs` is frozen with SIGSTOP after two seconds: a stall one threshold later; the
//!   observer's recovery command (this binary's hidden `demo-recover`, a real process) sends it
//!   SIGCONT, and its next beat is reported as recovered;
//! * `crashes` sends a terminal frame after five seconds and exits: reported at once as a
//!   crash; recovery finds it gone and starts a replacement agent, which appears as a new agent
//!   and later says goodbye.
//!
//! The observer (`varta observe`: the `varta-watch` daemon linked into this binary) and the
//! agents (`varta agent`, sending through `varta-client`) are all this same executable, so
//! `cargo run --release -p varta-tools -- demo` needs nothing else built or installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::sys;

/// Event format of the demo's observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `varta demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stall threshold of the demo observer.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub threshold_ms: u64,
    /// Event format of the observer.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Flags of the hidden `varta demo-recover` (the demo's recovery command).
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The agent the observer asks us to recover.
    pub pid: u32,
    /// Where replacement agents report.
    #[arg(long)]
    pub socket: PathBuf,
}

fn say(t0: Instant, msg: &str) {
    eprintln!("demo {:>5.2}s | {msg}", t0.elapsed().as_secs_f64());
}

fn spawn_agent(exe: &Path, socket: &Path, extra: &[&str]) -> std::io::Result<Child> {
    Command::new(exe)
        .arg("agent")
        .arg("--socket")
        .arg(socket)
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
}

/// Runs the demo; returns the exit status.
///
/// # Errors
/// A one-line message if the observer or an agent cannot be started.
pub fn run(a: &DemoArgs) -> Result<i32, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let dir = std::env::temp_dir().join(format!("varta-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let socket = dir.join("varta.sock");
    let t0 = Instant::now();
    say(
        t0,
        "starting an observer and three agents: steady, hangs (frozen at 2 s), crashes (at 5 s)",
    );
    let recover = format!(
        "'{}' demo-recover {{pid}} --socket '{}'",
        exe.display(),
        socket.display()
    );
    let format = match a.format {
        Format::Text => "text",
        Format::Json => "json",
    };
    let mut observer = Command::new(&exe)
        .arg("observe")
        .arg("--socket")
        .arg(&socket)
        .args(["--threshold-ms", &a.threshold_ms.to_string()])
        .args(["--format", format])
        .args(["--recovery-cmd", &recover, "--recovery-debounce-ms", "5000"])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start observer: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() {
        if Instant::now() > deadline || matches!(observer.try_wait(), Ok(Some(_))) {
            let _ = observer.kill();
            let _ = observer.wait();
            return Err("observer did not create its socket".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));

    let mut agents: Vec<(&str, Child)> = Vec::new();
    let start = |name: &'static str, extra: &[&str], agents: &mut Vec<(&str, Child)>| {
        spawn_agent(&exe, &socket, extra)
            .map(|c| {
                say(t0, &format!("agent {name:<7} pid {}", c.id()));
                agents.push((name, c));
            })
            .map_err(|e| format!("cannot start agent: {e}"))
    };
    start(
        "steady",
        &["--interval-ms", "200", "--count", "48", "--goodbye"],
        &mut agents,
    )?;
    start(
        "hangs",
        &["--interval-ms", "200", "--count", "45", "--goodbye"],
        &mut agents,
    )?;
    start(
        "crashes",
        &["--interval-ms", "200", "--crash-after", "24"],
        &mut agents,
    )?;

    std::thread::sleep(Duration::from_millis(2000));
    let hang_pid = agents[1].1.id();
    if sys::signal(hang_pid, sys::STOP) {
        say(
            t0,
            &format!("froze agent hangs (pid {hang_pid}) with SIGSTOP"),
        );
    }
    // Let everything play out: the steady agent says goodbye after ~9.6 s.
    let end = t0 + Duration::from_millis(10_500);
    while Instant::now() < end {
        for (name, c) in &mut agents {
            if let Ok(Some(st)) = c.try_wait() {
                say(t0, &format!("agent {name} (pid {}) exited: {st}", c.id()));
                *name = "";
            }
        }
        agents.retain(|(n, _)| !n.is_empty());
        std::thread::sleep(Duration::from_millis(50));
    }
    for (_, c) in &mut agents {
        let _ = sys::signal(c.id(), sys::CONT);
        let _ = c.kill();
        let _ = c.wait();
    }
    std::thread::sleep(Duration::from_millis(200));
    let _ = sys::signal(observer.id(), sys::TERM);
    let _ = observer.wait();
    let _ = std::fs::remove_dir_all(&dir);
    say(
        t0,
        "done. Run `cargo run --release -p varta-watch -- --help` for the real thing.",
    );
    Ok(0)
}

/// The demo's recovery command: resume a frozen agent, or replace a dead one.
///
/// # Errors
/// A one-line message if a replacement cannot be started.
pub fn recover(a: &RecoverArgs) -> Result<i32, String> {
    // A crashed agent may still be a zombie, waiting for its parent: that counts as gone.
    if sys::alive(a.pid) {
        sys::signal(a.pid, sys::CONT);
        eprintln!("demo-recover: agent {} is alive; sent SIGCONT", a.pid);
        return Ok(0);
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let child = spawn_agent(
        &exe,
        &a.socket,
        &["--interval-ms", "200", "--count", "10", "--goodbye"],
    )
    .map_err(|e| format!("cannot start replacement: {e}"))?;
    eprintln!(
        "demo-recover: agent {} is gone; started replacement agent pid {}",
        a.pid,
        child.id()
    );
    Ok(0)
}
