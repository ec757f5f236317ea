//! `varta-watch key derive`: provisions an agent with its own key so it never holds the master.
//!
//! The key is `HKDF-SHA256(master, "varta-agent-v1\0" || id_le)` (VLP v0.2 §4), the same
//! derivation the observer applies to a master-key datagram's clear-text pid (§5): an agent
//! that seals with this key and puts its fixed id in the pid field is accepted under
//! `--master-key-file`, and the key speaks for that id only. The file is written as 64 hex
//! characters and a newline, mode 0600, created exclusively (`O_EXCL | O_NOFOLLOW`): an
//! existing file or a symlink at the path is refused, never overwritten.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use zeroize::Zeroizing;

/// `varta-watch key …`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KeyCommand,
}

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write an agent's own key, derived from the master key for its agent id.
    Derive(DeriveArgs),
}

/// `varta-watch key derive`.
#[derive(Debug, Args)]
pub struct DeriveArgs {
    /// The master key file (64 hex, mode 0600, ours).
    #[arg(long, value_name = "FILE")]
    pub master_key_file: PathBuf,
    /// The agent id: the value the agent sends in the datagram's pid field.
    #[arg(long, value_name = "N")]
    pub agent_id: u32,
    /// Write the key here (created, mode 0600; refused if it exists) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Why a key could not be derived or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyToolError {
    /// The master key file was refused.
    #[error("--master-key-file {path}: {source}")]
    Master {
        /// Its path.
        path: String,
        /// Why.
        source: vlp_core::keyfile::KeyFileError,
    },
    /// The output file could not be created or written.
    #[error("--out {path}: {source}")]
    Out {
        /// Its path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The agent key as key-file text: 64 lowercase hex characters and a newline.
#[must_use]
pub fn derive_text(master: &vlp_core::Key, agent_id: u32) -> Zeroizing<String> {
    let key = vlp_core::kdf::derive_agent_key(master, agent_id);
    let mut text = Zeroizing::new(String::with_capacity(65));
    for b in key.as_bytes() {
        use std::fmt::Write as _;
        let _ = write!(text, "{b:02x}");
    }
    text.push('\n');
    text
}

/// Runs `key …`; returns the exit status.
///
/// # Errors
/// [`KeyToolError`] naming the file and the failed rule.
pub fn run(a: &KeyArgs) -> Result<i32, KeyToolError> {
    match &a.command {
        KeyCommand::Derive(d) => derive(d),
    }
}

fn derive(d: &DeriveArgs) -> Result<i32, KeyToolError> {
    let master = vlp_core::keyfile::read_key_file(&d.master_key_file).map_err(|source| {
        KeyToolError::Master {
            path: d.master_key_file.display().to_string(),
            source,
        }
    })?;
    let text = derive_text(&master, d.agent_id);
    match &d.out {
        None => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        Some(p) => {
            let err = |source| KeyToolError::Out {
                path: p.display().to_string(),
                source,
            };
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(p)
                .map_err(err)?;
            f.write_all(text.as_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
            eprintln!(
                "varta-watch: wrote the key of agent id {} to {}",
                d.agent_id,
                p.display()
            );
        }
    }
    Ok(0)
}
