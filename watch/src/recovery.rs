//! Recovery: run an operator's program when an agent stalls or crashes.
//!
//! The program is run directly (no shell, so a pid can never be interpreted as shell syntax),
//! with `{pid}` replaced in every argument. Runs are debounced per agent, refused for agents
//! whose pid is only claimed (UDP) unless the operator opted in, bounded in number, and every
//! child is reaped without blocking the loop. Each run's outcome is counted by label.

use std::collections::HashMap;
use std::os::fd::AsFd;
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
pub const OUTCOMES: [&str; 7] = [
    "succeeded",
    "failed",
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
}

/// The recovery runner.
#[derive(Debug)]
pub struct Recovery {
    template: CommandTemplate,
    debounce: Nanos,
    allow_unattested: bool,
    last_run: HashMap<AgentId, Nanos>,
    running: Vec<(AgentId, Child)>,
    outcomes: [u64; OUTCOMES.len()],
}

impl Recovery {
    /// A runner for `template`.
    #[must_use]
    pub fn new(template: CommandTemplate, debounce: Nanos, allow_unattested: bool) -> Recovery {
        Recovery {
            template,
            debounce,
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
            .spawn();
        match spawned {
            Ok(child) => {
                let id = child.id();
                self.running.push((agent, child));
                self.count("started");
                Decision::Started { child: id }
            }
            Err(e) => {
                self.count("spawn_error");
                Decision::SpawnError(format!("{}: {e}", argv[0]))
            }
        }
    }

    /// Reaps finished children without blocking; returns them.
    pub fn reap(&mut self) -> Vec<Finished> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            match self.running[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (agent, child) = self.running.swap_remove(i);
                    let f = Finished {
                        agent,
                        child: child.id(),
                        code: status.code(),
                        success: status.success(),
                    };
                    self.count(if f.success { "succeeded" } else { "failed" });
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
        let mut r = Recovery::new(t, 1_000, false);
        let unix = AgentId {
            listener: Listener::Unix,
            pid: 7,
        };
        let udp = AgentId {
            listener: Listener::Udp(0),
            pid: 7,
        };
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
}
