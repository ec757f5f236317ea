//! The recovery command: parsed once from `--recovery-exec` (or the file of
//! `--recovery-exec-file`), rendered per decision with its placeholders filled in.
//!
//! Splitting follows the upstream observer: white space separates words, double (or single)
//! quotes group them, nothing else is special (no escapes, no variables, no shell). The program
//! is executed directly, so a value substituted for a placeholder can never become syntax.
//!
//! | placeholder | replaced by |
//! |---|---|
//! | `{pid}` | the agent's pid (kernel-attested on the Unix socket, claimed on UDP) |
//! | `{listener}` | where it speaks: `unix`, `udp0`, … |
//! | `{agent}` | its identity as event lines print it: `unix:4242`, `udp0:17` |
//! | `{status}` | its last reported status: `ok`, `degraded`, `critical`, `stall` |
//! | `{reason}` | why recovery runs: `stall` (silent past its threshold) or `crash` |
//!
//! Any other `{name}` made of lowercase letters and `_` is refused when the command is parsed,
//! so a misspelt placeholder is a start-up error rather than a literal string at 3 a.m.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The placeholders a command may use, in documentation order.
pub const PLACEHOLDERS: [&str; 5] = ["{pid}", "{listener}", "{agent}", "{status}", "{reason}"];

/// The largest `--recovery-exec-file` read (a command line, comments around it).
pub const MAX_COMMAND_FILE_LEN: u64 = 64 * 1024;

/// Why a recovery command was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// Nothing but white space.
    #[error("empty command")]
    Empty,
    /// A quote opened and never closed.
    #[error("unclosed quote")]
    UnclosedQuote,
    /// `{name}` that is not one of [`PLACEHOLDERS`].
    #[error(
        "unknown placeholder {{{0}}} (known: {{pid}} {{listener}} {{agent}} {{status}} {{reason}})"
    )]
    UnknownPlaceholder(String),
}

/// Why `--recovery-exec-file` was refused (same rules as key files).
#[derive(Debug, thiserror::Error)]
pub enum CommandFileError {
    /// Cannot be opened or read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// A symbolic link.
    #[error("is a symbolic link (refused)")]
    Symlink,
    /// Not a regular file.
    #[error("is not a regular file")]
    NotRegular,
    /// Group or others have access.
    #[error("mode {0:04o} gives group/others access; chmod 600 it")]
    TooOpen(u32),
    /// Owned by someone else.
    #[error("is owned by uid {owner}, not by us (uid {expected})")]
    WrongOwner {
        /// The file's owner.
        owner: u32,
        /// Our effective uid.
        expected: u32,
    },
    /// Larger than [`MAX_COMMAND_FILE_LEN`].
    #[error("is larger than {MAX_COMMAND_FILE_LEN} bytes")]
    TooLarge,
    /// Not UTF-8, or no command line in it.
    #[error("holds no command line")]
    NoCommand,
    /// More than one command line.
    #[error("holds more than one command line")]
    SeveralCommands,
    /// The command itself is malformed.
    #[error("{0}")]
    Command(#[from] CommandError),
}

/// The values substituted for the placeholders.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// `{pid}`.
    pub pid: u32,
    /// `{listener}`.
    pub listener: &'a str,
    /// `{agent}`.
    pub agent: &'a str,
    /// `{status}`.
    pub status: &'a str,
    /// `{reason}`.
    pub reason: &'a str,
}

/// A parsed recovery command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTemplate {
    argv: Vec<String>,
}

impl CommandTemplate {
    /// Splits on white space; double or single quotes group words (no escapes, no shell).
    ///
    /// # Errors
    /// [`CommandError`] naming what is wrong.
    pub fn parse(s: &str) -> Result<CommandTemplate, CommandError> {
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
            return Err(CommandError::UnclosedQuote);
        }
        if in_word {
            argv.push(cur);
        }
        if argv.is_empty() {
            return Err(CommandError::Empty);
        }
        for a in &argv {
            check_placeholders(a)?;
        }
        Ok(CommandTemplate { argv })
    }

    /// Reads the command from a file owned by us with no group/other access, not a symlink:
    /// the one line that is neither blank nor a `#` comment.
    ///
    /// # Errors
    /// [`CommandFileError`] naming the failed rule.
    pub fn from_file(path: &Path) -> Result<CommandTemplate, CommandFileError> {
        if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
            return Err(CommandFileError::Symlink);
        }
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    CommandFileError::Symlink
                } else {
                    CommandFileError::Io(e)
                }
            })?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(CommandFileError::NotRegular);
        }
        if meta.mode() & 0o077 != 0 {
            return Err(CommandFileError::TooOpen(meta.mode() & 0o7777));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(CommandFileError::WrongOwner {
                owner: meta.uid(),
                expected: me,
            });
        }
        let mut text = String::new();
        let n = file
            .take(MAX_COMMAND_FILE_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    CommandFileError::NoCommand
                } else {
                    CommandFileError::Io(e)
                }
            })?;
        if n as u64 > MAX_COMMAND_FILE_LEN {
            return Err(CommandFileError::TooLarge);
        }
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let line = lines.next().ok_or(CommandFileError::NoCommand)?;
        if lines.next().is_some() {
            return Err(CommandFileError::SeveralCommands);
        }
        Ok(CommandTemplate::parse(line)?)
    }

    /// The program (first word), for messages.
    #[must_use]
    pub fn program(&self) -> &str {
        &self.argv[0]
    }

    /// The argument vector with every placeholder replaced.
    #[must_use]
    pub fn render(&self, v: &Vars<'_>) -> Vec<String> {
        let pid = v.pid.to_string();
        self.argv
            .iter()
            .map(|a| {
                if !a.contains('{') {
                    return a.clone();
                }
                a.replace("{pid}", &pid)
                    .replace("{listener}", v.listener)
                    .replace("{agent}", v.agent)
                    .replace("{status}", v.status)
                    .replace("{reason}", v.reason)
            })
            .collect()
    }
}

/// Refuses `{name}` (lowercase letters and `_`) that is not a known placeholder; other braces
/// (`awk '{print $1}'`) are left alone.
fn check_placeholders(arg: &str) -> Result<(), CommandError> {
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            break;
        };
        let name = &after[..close];
        let word = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if word && !PLACEHOLDERS.contains(&format!("{{{name}}}").as_str()) {
            return Err(CommandError::UnknownPlaceholder(name.to_owned()));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn vars() -> Vars<'static> {
        Vars {
            pid: 42,
            listener: "unix",
            agent: "unix:42",
            status: "stall",
            reason: "stall",
        }
    }

    #[test]
    fn splits_quotes_and_substitutes_every_placeholder() {
        let t = CommandTemplate::parse(
            r#"/bin/echo "a b" x{pid}y '{pid}' {listener} {agent} {status}/{reason} '{print $1}'"#,
        )
        .unwrap();
        assert_eq!(
            t.render(&vars()),
            vec![
                "/bin/echo",
                "a b",
                "x42y",
                "42",
                "unix",
                "unix:42",
                "stall/stall",
                "{print $1}"
            ]
        );
        assert_eq!(t.program(), "/bin/echo");
    }

    #[test]
    fn refusals_name_the_rule() {
        assert_eq!(CommandTemplate::parse("  "), Err(CommandError::Empty));
        assert_eq!(
            CommandTemplate::parse("a \"b"),
            Err(CommandError::UnclosedQuote)
        );
        assert_eq!(
            CommandTemplate::parse("restart {agnet}"),
            Err(CommandError::UnknownPlaceholder("agnet".into()))
        );
    }

    #[test]
    fn command_file_checks_like_key_files() {
        let d = std::env::temp_dir().join(format!("varta-cmdfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let good = d.join("good");
        std::fs::write(&good, "# restart it\n/bin/echo {pid}\n").unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = CommandTemplate::from_file(&good).unwrap();
        assert_eq!(t.render(&vars()), vec!["/bin/echo", "42"]);
        let open = d.join("open");
        std::fs::write(&open, "/bin/true\n").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            CommandTemplate::from_file(&open),
            Err(CommandFileError::TooOpen(0o644))
        ));
        let link = d.join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(matches!(
            CommandTemplate::from_file(&link),
            Err(CommandFileError::Symlink)
        ));
        assert!(matches!(
            CommandTemplate::from_file(&d),
            Err(CommandFileError::NotRegular)
        ));
        let two = d.join("two");
        std::fs::write(&two, "/bin/true\n/bin/false\n").unwrap();
        std::fs::set_permissions(&two, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            CommandTemplate::from_file(&two),
            Err(CommandFileError::SeveralCommands)
        ));
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&good, Some(4242), None).unwrap();
            assert!(matches!(
                CommandTemplate::from_file(&good),
                Err(CommandFileError::WrongOwner { owner: 4242, .. })
            ));
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
