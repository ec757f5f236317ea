//! Configuration errors: one variant per rule, each naming the flag (or TOML key) and value.

use std::path::PathBuf;

use vlp_core::keyfile::KeyFileError;

/// Why the configuration was refused. Every message is one line naming the flag or key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag the parser refused (first line of clap's message).
    #[error("{0}")]
    Args(String),
    /// The `--config` file could not be opened or read.
    #[error("--config {}: cannot read: {source}", path.display())]
    FileRead {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The `--config` file failed an ownership or permission rule.
    #[error("--config {}: {rule}", path.display())]
    FileUnsafe {
        /// The file.
        path: PathBuf,
        /// The failed rule, in words.
        rule: String,
    },
    /// The file is not valid TOML.
    #[error("--config {}: {msg}", path.display())]
    FileSyntax {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message.
        msg: String,
    },
    /// A key that is no flag of the observer.
    #[error("--config {}: unknown key `{key}` (the keys are the flags without `--`; see --help)", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A key whose value has the wrong shape (e.g. an array for a single-valued flag).
    #[error("--config {}: key `{key}`: {why}", path.display())]
    KeyShape {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What was expected.
        why: &'static str,
    },
    /// A value the flag's parser refused.
    #[error("--config {}: {msg}", path.display())]
    FileValue {
        /// The file.
        path: PathBuf,
        /// The parser's first line.
        msg: String,
    },
    /// A number outside its range.
    #[error("--{flag} {value}: must be between {min} and {max}")]
    OutOfRange {
        /// The flag, without `--`.
        flag: &'static str,
        /// The value given.
        value: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// `--workers` is neither a number nor `auto`.
    #[error("--workers {0}: expected a number of receive threads (1 to 64) or `auto`")]
    Workers(String),
    /// `--socket-mode` is not octal permission bits.
    #[error("--socket-mode {0}: expected octal permission bits such as 0600")]
    SocketMode(String),
    /// A key or `--allow-plaintext-udp` without a UDP port.
    #[error(
        "--key-file/--accepted-key-file/--master-key-file/--allow-plaintext-udp need --udp-port"
    )]
    UdpOptionWithoutPort,
    /// A UDP port with neither a key nor the plaintext opt-in.
    #[error("--udp-port {0}: give a key (--key-file, --accepted-key-file, --master-key-file) or opt in to unauthenticated frames with --allow-plaintext-udp")]
    UdpWithoutAuth(u16),
    /// Nothing to listen on.
    #[error("--no-socket without --udp-port leaves nothing to listen on")]
    NothingToListen,
    /// A key file was refused.
    #[error("--{flag} {}: {source}", path.display())]
    KeyFile {
        /// The flag, without `--`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The failed rule.
        source: KeyFileError,
    },
    /// A recovery, audit or shutdown flag failed its rule (the message names the flag).
    #[error("{0}")]
    Recovery(String),
    /// A `[[class]]` / `--class` or `[[name]]` section failed its rule.
    #[error("{0}")]
    Policy(String),
    /// A direct-delivery flag failed its rule (the message names the flag).
    #[error("{0}")]
    Alerting(String),
    /// An empty path.
    #[error("--{0}: empty path")]
    EmptyPath(&'static str),
    /// Secure UDP bound off loopback without the operator's opt-in.
    #[error("--udp-bind-addr: secure UDP on an address other than loopback needs --i-accept-secure-udp-non-loopback")]
    SecureUdpOffLoopback,
    /// A scrape burst without a rate.
    #[error("--prom-rate-limit-burst needs --prom-rate-limit-per-sec")]
    BurstWithoutRate,
}
