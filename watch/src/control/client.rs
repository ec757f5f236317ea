//! `varta-watch status` and `varta-watch silence ...`: clients of the control socket.
//!
//! Both find the control socket from the observer's agent socket (`--socket PATH`, the same
//! value the observer was started with, else the observer's default), plus `.ctl`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use thiserror::Error;

use super::snapshot::StatusSnapshot;
use super::{control_path, Request, Response};
use crate::policy::silence::{Silence, UnixMs};

/// Longest response line accepted (a snapshot of many agents is large, not unbounded).
pub const MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;
/// How long the client waits for an answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// `varta-watch status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The observer's agent socket; its control socket is PATH.ctl [default: the observer's
    /// default socket].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the snapshot as one JSON object (one per refresh with --watch).
    #[arg(long)]
    pub json: bool,
    /// Refresh until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Refresh interval with --watch.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub interval_ms: u64,
}

/// `varta-watch silence ...`.
#[derive(Debug, Clone, Args)]
pub struct SilenceArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SilenceCommand,
}

/// Silence subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum SilenceCommand {
    /// Silence matching agents for a while: no alert, no recovery (stalls are still shown).
    Add(SilenceAddArgs),
    /// The silences in force.
    List(SilenceListArgs),
    /// End a silence now.
    Expire(SilenceExpireArgs),
}

/// `silence add`.
#[derive(Debug, Clone, Args)]
pub struct SilenceAddArgs {
    /// The observer's agent socket (control socket: PATH.ctl).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// KEY=VALUE, repeatable, all must hold; keys pid, name, unit, exe, comm, uid, listener,
    /// class (`*` wildcards in text values). None: every agent.
    #[arg(long = "match", value_name = "KEY=VALUE")]
    pub matchers: Vec<String>,
    /// How long: 90s, 15m, 2h, 1d, 1h30m.
    #[arg(long = "for", value_name = "DURATION")]
    pub duration: String,
    /// Why (shown in lists and on the status page).
    #[arg(long, default_value = "")]
    pub comment: String,
}

/// `silence list`.
#[derive(Debug, Clone, Args)]
pub struct SilenceListArgs {
    /// The observer's agent socket (control socket: PATH.ctl).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// As JSON.
    #[arg(long)]
    pub json: bool,
}

/// `silence expire`.
#[derive(Debug, Clone, Args)]
pub struct SilenceExpireArgs {
    /// The silence's id (from `silence list`).
    pub id: u64,
    /// The observer's agent socket (control socket: PATH.ctl).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// Why a control client failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No observer at the control socket.
    #[error("cannot reach the observer at {path} (is it running with this --socket?): {source}")]
    Connect {
        /// The control socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The conversation broke off.
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    /// The answer was not a response.
    #[error("control socket: unexpected answer: {0}")]
    Protocol(String),
    /// The observer refused the request.
    #[error("{0}")]
    Refused(String),
}

/// A connection to the control socket.
#[derive(Debug)]
pub struct Client {
    input: BufReader<UnixStream>,
    output: UnixStream,
}

impl Client {
    /// Connects to the control socket of the observer whose agent socket is `socket` (or the
    /// default one).
    ///
    /// # Errors
    /// [`ClientError::Connect`].
    pub fn connect(socket: Option<&Path>) -> Result<Client, ClientError> {
        let agent_socket = socket.map_or_else(crate::config::default_socket, Path::to_path_buf);
        let path = control_path(&agent_socket);
        let output = UnixStream::connect(&path).map_err(|source| ClientError::Connect {
            path: path.clone(),
            source,
        })?;
        output.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        output.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        Ok(Client {
            input: BufReader::new(output.try_clone()?),
            output,
        })
    }

    /// Sends one request and reads its response.
    ///
    /// # Errors
    /// I/O, a malformed answer, or the observer's refusal ([`ClientError::Refused`]).
    pub fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
        line.push(b'\n');
        self.output.write_all(&line)?;
        let mut answer = Vec::new();
        (&mut self.input)
            .take(MAX_RESPONSE_BYTES)
            .read_until(b'\n', &mut answer)?;
        if answer.last() != Some(&b'\n') {
            return Err(ClientError::Protocol(
                "connection closed before a complete answer".into(),
            ));
        }
        let r: Response =
            serde_json::from_slice(&answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if r.ok {
            Ok(r)
        } else {
            Err(ClientError::Refused(
                r.error.unwrap_or_else(|| "refused".into()),
            ))
        }
    }

    /// The observer's current snapshot.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub fn status(&mut self) -> Result<StatusSnapshot, ClientError> {
        self.request(&Request::Status)?
            .snapshot
            .ok_or_else(|| ClientError::Protocol("status answer without a snapshot".into()))
    }
}

fn now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `1.2s`, `340ms`, `5m02s`, `2h03m`, `3d04h`.
#[must_use]
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..=86_399_999 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The status table: one line per agent, stalled first (the snapshot's order).
#[must_use]
pub fn render_table(snap: &StatusSnapshot) -> String {
    let mut rows: Vec<[String; 8]> = vec![[
        "AGENT".into(),
        "NAME".into(),
        "STATE".into(),
        "LAST BEAT".into(),
        "RATE".into(),
        "PAYLOAD".into(),
        "CLASS".into(),
        "SILENCED".into(),
    ]];
    for a in &snap.agents {
        rows.push([
            format!("{}:{}", a.listener, a.pid),
            a.name.clone().unwrap_or_else(|| "-".into()),
            a.state.name().to_string(),
            format!("{} ago", human_ms(a.last_beat_age_ms)),
            a.rate_per_s
                .map_or_else(|| "-".into(), |r| format!("{r:.1}/s")),
            a.payload.to_string(),
            a.class.clone(),
            a.silence_id
                .map_or_else(|| "-".into(), |id| format!("yes (#{id})")),
        ]);
    }
    let mut widths = [0usize; 8];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if snap.total_agents > snap.agents.len() {
        out.push_str(&format!(
            "({} more agents not shown)\n",
            snap.total_agents - snap.agents.len()
        ));
    }
    if snap.agents.is_empty() {
        out.push_str("(no agents)\n");
    }
    out
}

/// The silence list: id, matchers, time left, comment.
#[must_use]
pub fn render_silences(list: &[Silence], now: UnixMs) -> String {
    if list.is_empty() {
        return "(no silences in force)\n".into();
    }
    let mut out = String::new();
    for s in list {
        out.push_str(&format!(
            "#{:<4} {:<40} ends in {:<8} {}\n",
            s.id,
            s.describe(),
            human_ms(s.ends_at_ms.saturating_sub(now)),
            s.comment
        ));
    }
    out
}

/// Runs `varta-watch status`; returns the exit status.
///
/// # Errors
/// [`ClientError`].
pub fn status(args: &StatusArgs) -> Result<i32, ClientError> {
    let mut client = Client::connect(args.socket.as_deref())?;
    let stdout = io::stdout();
    loop {
        let snap = client.status()?;
        let text = if args.json {
            let mut s = serde_json::to_string(&snap).map_err(io::Error::other)?;
            s.push('\n');
            s
        } else {
            render_table(&snap)
        };
        let mut out = stdout.lock();
        if args.watch && !args.json {
            // Clear the screen and home the cursor, then redraw.
            out.write_all(b"\x1b[H\x1b[2J")?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        drop(out);
        if !args.watch {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(args.interval_ms.max(100)));
    }
}

/// Runs `varta-watch silence ...`; returns the exit status.
///
/// # Errors
/// [`ClientError`] (a refused silence names the rule it broke).
pub fn silence(args: &SilenceArgs) -> Result<i32, ClientError> {
    let mut out = io::stdout().lock();
    match &args.command {
        SilenceCommand::Add(a) => {
            let mut client = Client::connect(a.socket.as_deref())?;
            let r = client.request(&Request::SilenceAdd {
                matchers: a.matchers.clone(),
                duration: a.duration.clone(),
                comment: a.comment.clone(),
            })?;
            let s = r
                .silence
                .ok_or_else(|| ClientError::Protocol("no silence in the answer".into()))?;
            writeln!(
                out,
                "silence #{} added: {} for {}",
                s.id,
                s.describe(),
                human_ms(s.ends_at_ms.saturating_sub(s.starts_at_ms))
            )?;
        }
        SilenceCommand::List(a) => {
            let mut client = Client::connect(a.socket.as_deref())?;
            let list = client
                .request(&Request::SilenceList)?
                .silences
                .ok_or_else(|| ClientError::Protocol("no silences in the answer".into()))?;
            if a.json {
                let s = serde_json::to_string(&list).map_err(io::Error::other)?;
                writeln!(out, "{s}")?;
            } else {
                out.write_all(render_silences(&list, now_ms()).as_bytes())?;
            }
        }
        SilenceCommand::Expire(a) => {
            let mut client = Client::connect(a.socket.as_deref())?;
            client.request(&Request::SilenceExpire { id: a.id })?;
            writeln!(out, "silence #{} expired", a.id)?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::snapshot::{AgentRow, RowState};
    use crate::policy::silence::{MatchKey, Matcher};

    #[test]
    fn ages_read_well() {
        assert_eq!(human_ms(340), "340ms");
        assert_eq!(human_ms(1234), "1.2s");
        assert_eq!(human_ms(302_000), "5m02s");
        assert_eq!(human_ms(7_380_000), "2h03m");
        assert_eq!(human_ms(273_600_000), "3d04h");
    }

    #[test]
    fn table_has_every_column_in_snapshot_order() {
        let row = |pid, state, silence_id: Option<u64>| AgentRow {
            pid,
            name: (pid == 7).then(|| "backup.service".to_string()),
            listener: "unix".into(),
            class: "batch".into(),
            state,
            silenced: silence_id.is_some(),
            silence_id,
            last_beat_age_ms: 2500,
            payload: 99,
            beats: 10,
            rate_per_s: Some(2.0),
            unit: None,
        };
        let snap = StatusSnapshot {
            total_agents: 3,
            agents: vec![
                row(7, RowState::Stalled, Some(4)),
                row(8, RowState::Ok, None),
            ],
            ..StatusSnapshot::default()
        };
        let t = render_table(&snap);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["AGENT", "NAME", "STATE", "LAST", "BEAT", "RATE", "PAYLOAD", "CLASS", "SILENCED"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "unix:7",
                "backup.service",
                "stalled",
                "2.5s",
                "ago",
                "2.0/s",
                "99",
                "batch",
                "yes",
                "(#4)"
            ]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["unix:8", "-", "ok", "2.5s", "ago", "2.0/s", "99", "batch", "-"]
        );
        assert_eq!(lines[3], "(1 more agents not shown)");
    }

    #[test]
    fn silence_list_shows_time_left() {
        let s = Silence {
            id: 3,
            matchers: vec![Matcher {
                key: MatchKey::Unit,
                value: "backup.service".into(),
            }],
            starts_at_ms: 0,
            ends_at_ms: 7_200_000,
            comment: "disk swap".into(),
        };
        let t = render_silences(&[s], 3_600_000);
        assert!(t.starts_with("#3"), "{t}");
        assert!(t.contains("unit=backup.service"), "{t}");
        assert!(t.contains("ends in 1h00m"), "{t}");
        assert!(t.trim_end().ends_with("disk swap"), "{t}");
        assert_eq!(render_silences(&[], 0), "(no silences in force)\n");
    }
}

/// `varta-watch reload`.
#[derive(Debug, Clone, Args)]
pub struct ReloadArgs {
    /// The observer's agent socket; its control socket is PATH.ctl [default: the observer's
    /// default socket].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// `varta-watch reload`: finds the observer behind the control socket (the kernel names the
/// peer's pid, `SO_PEERCRED`) and sends it SIGHUP. The observer reloads its configuration,
/// or refuses a bad one with one line on its stderr and keeps the old one.
///
/// # Errors
/// [`ClientError`]: no observer there, or the signal could not be sent.
pub fn reload(args: &ReloadArgs) -> Result<i32, ClientError> {
    let client = Client::connect(args.socket.as_deref())?;
    let cred = rustix::net::sockopt::socket_peercred(&client.output)
        .map_err(|e| ClientError::Protocol(format!("SO_PEERCRED: {e}")))?;
    rustix::process::kill_process(cred.pid, rustix::process::Signal::HUP)
        .map_err(|e| ClientError::Refused(format!("SIGHUP to pid {}: {e}", cred.pid)))?;
    println!(
        "sent SIGHUP to varta-watch pid {}",
        cred.pid.as_raw_nonzero()
    );
    Ok(0)
}
