//! Recovery: run an operator's program when an agent stalls or crashes.
//!
//! The program is run directly (no shell, so a pid can never be interpreted as shell syntax),
//! with `{pid}` replaced in every argument. Runs are debounced per agent, refused for agents
//! whose pid is only claimed (UDP) unless the operator opted in, bounded in number, and every
//! child is reaped without blocking the loop. Each run's outcome is counted by label.
//!
//! Every child runs in a process group of its own and has a deadline (`--recovery-timeout-ms`):
//! a child still running then is killed with its whole group (`SIGKILL`, so a script's own
//! children go too) and counted as `timeout` when it is reaped. The daemon sleeps no longer than
//! the earliest such deadline ([`Recovery::next_deadline`]) and calls [`Recovery::expire`];
//! with no child running there is no deadline, so an idle observer still never wakes.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::tracker::{AgentId, Listener, Nanos};

/// At most this many recovery children at once; more are refused and counted as `busy`.
pub const MAX_RUNNING: usize = 32;
/// Bound on the per-agent debounce table.
pub const MAX_DEBOUNCE_ENTRIES: usize = 65_536;

/// A parsed `--recovery-cmd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTemplate {
    argv: Vec<String>,
}

impl CommandTemplate {
    /// Splits on white space; single or double quotes group words (no escapes, no shell).
    ///
    /// # Errors
    /// An empty command or an unclosed quote.
    pub fn parse(s: &str) -> Result<CommandTemplate, &'static str> {
        let mut argv = Vec::new();
        let mut cur = String::new();
        let mut in_word = false;
        let mut quote: Option<char> = None;
        for c in s.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => cur.push(c),
                None if c == '\'' || c == '"' => {
                    quote = Some(c);
                    in_word = true;
                }
                None if c.is_whitespace() => {
                    if in_word {
                        argv.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                }
                None => {
                    cur.push(c);
                    in_word = true;
                }
            }
        }
        if quote.is_some() {
            return Err("unclosed quote");
        }
        if in_word {
            argv.push(cur);
        }
        if argv.is_empty() {
            return Err("empty command");
        }
        Ok(CommandTemplate { argv })
    }

    /// The argument vector for `pid`.
    #[must_use]
    pub fn render(&self, pid: u32) -> Vec<String> {
        let p = pid.to_string();
        self.argv.iter().map(|a| a.replace("{pid}", &p)).collect()
    }
}

/// Outcome labels of `varta_recovery_outcomes_total{outcome}`.
pub const OUTCOMES: [&str; 8] = [
    "succeeded",
    "failed",
    "timeout",
    "spawn_error",
    "debounced",
    "refused_unattested",
    "busy",
    "started",
];

/// What happened when recovery was asked for (reported as an event line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A child was started.
    Started {
        /// Its pid.
        child: u32,
    },
    /// Not run: debounced, refused or busy (label as in [`OUTCOMES`]).
    Skipped(&'static str),
    /// The program could not be started.
    SpawnError(String),
}

/// A finished child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The agent it was run for.
    pub agent: AgentId,
    /// The child's pid.
    pub child: u32,
    /// Exit code, or None if killed by a signal.
    pub code: Option<i32>,
    /// Whether it exited 0.
    pub success: bool,
    /// Killed by [`Recovery::expire`] for running past its deadline.
    pub timed_out: bool,
}

/// A running child.
#[derive(Debug)]
struct Running {
    agent: AgentId,
    child: Child,
    /// When it must have finished (start + timeout).
    deadline: Nanos,
    /// Already killed for running past `deadline`.
    killed: bool,
}

/// The recovery runner.
#[derive(Debug)]
pub struct Recovery {
    template: CommandTemplate,
    debounce: Nanos,
    timeout: Nanos,
    allow_unattested: bool,
    last_run: HashMap<AgentId, Nanos>,
    running: Vec<Running>,
    outcomes: [u64; OUTCOMES.len()],
}

impl Recovery {
    /// A runner for `template`; a child still running `timeout` after its start is killed.
    #[must_use]
    pub fn new(
        template: CommandTemplate,
        debounce: Nanos,
        timeout: Nanos,
        allow_unattested: bool,
    ) -> Recovery {
        Recovery {
            template,
            debounce,
            timeout,
            allow_unattested,
            last_run: HashMap::new(),
            running: Vec::new(),
            outcomes: [0; OUTCOMES.len()],
        }
    }

    fn count(&mut self, label: &'static str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == label) {
            self.outcomes[i] += 1;
        }
    }

    /// Counts per outcome label, in [`OUTCOMES`] order.
    #[must_use]
    pub fn outcomes(&self) -> &[u64; OUTCOMES.len()] {
        &self.outcomes
    }

    /// Children still running.
    #[must_use]
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Runs the program for `agent` unless debounced, refused or busy.
    pub fn trigger(&mut self, now: Nanos, agent: AgentId) -> Decision {
        if !matches!(agent.listener, Listener::Unix) && !self.allow_unattested {
            self.count("refused_unattested");
            return Decision::Skipped("refused_unattested");
        }
        if let Some(&last) = self.last_run.get(&agent) {
            if now.saturating_sub(last) < self.debounce {
                self.count("debounced");
                return Decision::Skipped("debounced");
            }
        }
        if self.running.len() >= MAX_RUNNING {
            self.count("busy");
            return Decision::Skipped("busy");
        }
        if self.last_run.len() >= MAX_DEBOUNCE_ENTRIES {
            let debounce = self.debounce;
            self.last_run
                .retain(|_, t| now.saturating_sub(*t) < debounce);
            if self.last_run.len() >= MAX_DEBOUNCE_ENTRIES {
                self.count("busy");
                return Decision::Skipped("busy");
            }
        }
        self.last_run.insert(agent, now);
        let argv = self.template.render(agent.pid);
        // The child's stdout goes to our stderr: stdout carries event lines (possibly JSON)
        // and must not be interleaved with whatever the program prints.
        let out = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_or_else(|_| Stdio::null(), Stdio::from);
        let spawned = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(out)
            .env("VARTA_PID", agent.pid.to_string())
            // Its own group, so a timeout kills what it started too (and a Ctrl-C meant for
            // the observer does not cut a recovery short).
            .process_group(0)
            .spawn();
        match spawned {
            Ok(child) => {
                let id = child.id();
                self.running.push(Running {
                    agent,
                    child,
                    deadline: now.saturating_add(self.timeout),
                    killed: false,
                });
                self.count("started");
                Decision::Started { child: id }
            }
            Err(e) => {
                self.count("spawn_error");
                Decision::SpawnError(format!("{}: {e}", argv[0]))
            }
        }
    }

    /// The earliest deadline of a child not yet killed; `None` if there is none.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Nanos> {
        self.running
            .iter()
            .filter(|r| !r.killed)
            .map(|r| r.deadline)
            .min()
    }

    /// Kills (`SIGKILL`, whole process group) every child past its deadline at `now`; returns
    /// the agent and child pid of each. They are reaped, and counted as `timeout`, by
    /// [`Recovery::reap`] once the kernel reports them (`SIGCHLD`).
    pub fn expire(&mut self, now: Nanos) -> Vec<(AgentId, u32)> {
        let mut killed = Vec::new();
        for r in &mut self.running {
            if r.killed || r.deadline > now {
                continue;
            }
            r.killed = true;
            let id = r.child.id();
            // The child is not reaped yet (we hold it), so its pid, which is also its process
            // group id, cannot have been reused.
            let group_killed = libc::pid_t::try_from(id).is_ok_and(|p| {
                // SAFETY: kill(2) with a negative pid signals that process group; no memory
                // is involved.
                p > 0 && unsafe { libc::kill(-p, libc::SIGKILL) } == 0
            });
            if !group_killed {
                // Not a group leader after all (it cannot have left its group, but never
                // leave it running): the child alone.
                let _ = r.child.kill();
            }
            killed.push((r.agent, id));
        }
        killed
    }

    /// Reaps finished children without blocking; returns them.
    pub fn reap(&mut self) -> Vec<Finished> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            match self.running[i].child.try_wait() {
                Ok(Some(status)) => {
                    let r = self.running.swap_remove(i);
                    let f = Finished {
                        agent: r.agent,
                        child: r.child.id(),
                        code: status.code(),
                        success: status.success() && !r.killed,
                        timed_out: r.killed,
                    };
                    self.count(if f.timed_out {
                        "timeout"
                    } else if f.success {
                        "succeeded"
                    } else {
                        "failed"
                    });
                    done.push(f);
                }
                Ok(None) => i += 1,
                Err(_) => {
                    let _ = self.running.swap_remove(i);
                    self.count("failed");
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_splits_quotes_and_substitutes() {
        let t = CommandTemplate::parse(r#"/bin/echo "a b" x{pid}y '{pid}'"#).unwrap();
        assert_eq!(t.render(42), vec!["/bin/echo", "a b", "x42y", "42"]);
        assert_eq!(CommandTemplate::parse("  "), Err("empty command"));
        assert_eq!(CommandTemplate::parse("a 'b"), Err("unclosed quote"));
    }

    #[test]
    fn debounce_refusal_and_reaping() {
        let t = CommandTemplate::parse("/bin/sh -c 'exit 3'").unwrap();
        let mut r = Recovery::new(t, 1_000, 60_000_000_000, false);
        let unix = AgentId::unix(7);
        let udp = AgentId::udp(0, crate::tracker::KeyClass::None, 7);
        assert!(matches!(r.trigger(0, unix), Decision::Started { .. }));
        assert_eq!(r.trigger(500, unix), Decision::Skipped("debounced"));
        assert_eq!(r.trigger(500, udp), Decision::Skipped("refused_unattested"));
        let mut finished = Vec::new();
        for _ in 0..500 {
            finished.extend(r.reap());
            if !finished.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(finished.len(), 1);
        assert_eq!(finished[0].code, Some(3));
        assert!(!finished[0].success);
        let o = r.outcomes();
        assert_eq!(o[OUTCOMES.iter().position(|x| *x == "failed").unwrap()], 1);
        assert_eq!(
            o[OUTCOMES.iter().position(|x| *x == "debounced").unwrap()],
            1
        );
    }

    fn outcome(r: &Recovery, label: &str) -> u64 {
        r.outcomes()[OUTCOMES.iter().position(|x| *x == label).unwrap()]
    }

    fn reap_one(r: &mut Recovery) -> Finished {
        for _ in 0..500 {
            if let Some(f) = r.reap().pop() {
                return f;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("child not reaped within 5 s");
    }

    #[test]
    fn child_past_its_deadline_is_killed_with_its_group_and_counted_as_timeout() {
        let dir = std::env::temp_dir().join(format!("varta-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let grandchild = dir.join("grandchild.pid");
        // A script that starts a long sleep of its own and waits for it.
        let t = CommandTemplate::parse(&format!(
            "/bin/sh -c 'sleep 60 & echo $! > {}; wait'",
            grandchild.display()
        ))
        .unwrap();
        let timeout = 50_000_000;
        let mut r = Recovery::new(t, 0, timeout, false);
        assert_eq!(r.next_deadline(), None, "no child, no deadline");
        let agent = AgentId::unix(7);
        assert!(matches!(r.trigger(1_000, agent), Decision::Started { .. }));
        assert_eq!(r.next_deadline(), Some(1_000 + timeout));
        let mut gpid = None;
        for _ in 0..500 {
            gpid = std::fs::read_to_string(&grandchild)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if gpid.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let gpid = gpid.expect("the script started its sleep");
        assert_eq!(r.expire(1_000 + timeout - 1), [], "not yet due");
        let killed = r.expire(1_000 + timeout);
        assert_eq!(killed.len(), 1);
        assert_eq!(killed[0].0, agent);
        assert_eq!(
            r.next_deadline(),
            None,
            "a killed child has no deadline left"
        );
        assert_eq!(r.expire(u64::MAX), [], "killed once");
        let f = reap_one(&mut r);
        assert!(f.timed_out && !f.success, "{f:?}");
        assert_eq!(f.code, None, "killed by a signal");
        assert_eq!(outcome(&r, "timeout"), 1);
        assert_eq!(outcome(&r, "failed"), 0);
        // The script's own child went with it (a zombie until init reaps it counts as gone).
        let gone = (0..500).any(|_| {
            let state = std::fs::read_to_string(format!("/proc/{gpid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()
                        .map(|t| t.trim_start().starts_with('Z'))
                });
            if state.unwrap_or(true) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            false
        });
        assert!(gone, "grandchild {gpid} still running");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn child_finishing_in_time_is_not_a_timeout() {
        let t = CommandTemplate::parse("/bin/true").unwrap();
        let mut r = Recovery::new(t, 0, 60_000_000_000, false);
        let agent = AgentId::unix(8);
        assert!(matches!(r.trigger(0, agent), Decision::Started { .. }));
        let f = reap_one(&mut r);
        assert!(f.success && !f.timed_out);
        assert_eq!(outcome(&r, "succeeded"), 1);
        assert_eq!(outcome(&r, "timeout"), 0);
    }
}
