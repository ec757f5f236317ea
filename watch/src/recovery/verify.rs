//! `varta-watch audit verify [--key-file F] [--anchor SEQ:HASH] FILE…`: checks the chain of
//! audit files and prints where it breaks.
//!
//! Files may be given in any order (`audit.log*` expands newest-last-generation wrongly): they
//! are put in chain order by their first sequence number. Exit status: 0 intact, 1 broken,
//! 2 unreadable (a file or the key cannot be read, or a bad `--anchor`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::audit::{self, Chain, Start, Verifier};

/// `varta-watch audit …`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// Audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the chain of audit files; print FILE:LINE and what is wrong where it breaks.
    Verify(VerifyArgs),
}

/// `varta-watch audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The audit key (64 hex) the observer was given with --recovery-audit-key-file.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The anchor `SEQ:HASH` recorded elsewhere (state file): the record SEQ must be present
    /// and hash to HASH, which catches a cut tail and an edited last record.
    #[arg(long, value_name = "SEQ:HASH")]
    pub anchor: Option<String>,
    /// Audit files (current and rotated generations, any order).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Runs `audit …`; returns the exit status.
#[must_use]
pub fn run(a: &AuditArgs) -> i32 {
    match &a.command {
        AuditCommand::Verify(v) => verify(v),
    }
}

fn parse_anchor(s: &str) -> Option<(u64, audit::Hash)> {
    let (seq, hash) = s.split_once(':')?;
    Some((seq.parse().ok()?, audit::parse_hex(hash)?))
}

/// First sequence number in a file, for ordering (files without one sort last, in the order
/// given).
fn first_seq(bytes: &[u8]) -> u64 {
    bytes
        .split(|b| *b == b'\n')
        .next()
        .and_then(|l| audit::parse(l).ok())
        .map_or(u64::MAX, |r| r.seq)
}

fn verify(a: &VerifyArgs) -> i32 {
    let chain = match &a.key_file {
        None => Chain::Sha256,
        Some(p) => match vlp_core::keyfile::read_key_file(p) {
            Ok(k) => Chain::Hmac(zeroize::Zeroizing::new(*k.as_bytes())),
            Err(e) => {
                eprintln!("varta-watch: --key-file {}: {e}", p.display());
                return 2;
            }
        },
    };
    let anchor = match &a.anchor {
        None => None,
        Some(s) => match parse_anchor(s) {
            Some(x) => Some(x),
            None => {
                eprintln!("varta-watch: --anchor {s}: expected SEQ:HASH (64 hex digits)");
                return 2;
            }
        },
    };
    let mut files = Vec::new();
    for p in &a.files {
        match std::fs::read(p) {
            Ok(b) => files.push((p.clone(), b)),
            Err(e) => {
                eprintln!("{}: unreadable: {e}", p.display());
                return 2;
            }
        }
    }
    files.sort_by_key(|(_, b)| first_seq(b));
    let mut v = Verifier::new(chain, anchor);
    for (i, (_, bytes)) in files.iter().enumerate() {
        audit::feed_file(&mut v, i, bytes);
    }
    match v.finish() {
        Ok(ok) => {
            let names: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
            let start = match ok.start {
                Start::Genesis => "from the first record".to_owned(),
                Start::RotatedAway { seq } => {
                    format!("starting at seq {seq} (earlier generations rotated away)")
                }
                Start::Empty => "no records".to_owned(),
            };
            let last = ok.last.map_or_else(String::new, |(s, h)| {
                format!("; last record {s}:{}", audit::hex(&h))
            });
            println!(
                "{}: intact, {} record(s) {start}{last}",
                names.join(" "),
                ok.records
            );
            0
        }
        Err(b) => {
            let name = files
                .get(b.file)
                .map_or_else(|| "-".to_owned(), |(p, _)| p.display().to_string());
            println!("{name}:{}: {}", b.line, b.problem);
            1
        }
    }
}
