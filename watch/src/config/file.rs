//! The TOML configuration file, read as more command-line arguments.
//!
//! A file holds the flags without their leading `--` (`threshold-ms = 500`). Rather than a
//! second definition of every setting, each key becomes synthetic arguments for the same clap
//! definition ([`super::RunArgs`]): `key = v` → `--key=v`, an array → the flag repeated,
//! `true` → `--key`, `false` → nothing. The file's arguments go first and the command line's
//! after them, with `args_override_self`, so a flag on the command line wins and repeatable
//! flags add up. A key that is no flag is refused by name.
//!
//! Like key files, a configuration file must be a regular file (no symlink), owned by us or
//! root, not writable by group or others: it names programs the observer runs.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::ConfigError;

/// Largest configuration file read.
pub const MAX_CONFIG_LEN: u64 = 1 << 20;

/// Reads `path` after the ownership and permission checks.
///
/// # Errors
/// [`ConfigError::FileRead`], [`ConfigError::FileUnsafe`].
pub fn read_checked(path: &Path) -> Result<String, ConfigError> {
    let unsafe_file = |rule: String| ConfigError::FileUnsafe {
        path: path.to_path_buf(),
        rule,
    };
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| {
        if e == rustix::io::Errno::LOOP {
            unsafe_file("is a symbolic link (refused)".into())
        } else {
            ConfigError::FileRead {
                path: path.to_path_buf(),
                source: e.into(),
            }
        }
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| ConfigError::FileRead {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let ftype = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if ftype != rustix::fs::FileType::RegularFile {
        return Err(unsafe_file("is not a regular file".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me && st.st_uid != 0 {
        return Err(unsafe_file(format!(
            "owned by uid {}, not by us ({me}) or root",
            st.st_uid
        )));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_file(format!(
            "mode {mode:04o} lets group/others write it; chmod go-w it"
        )));
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_CONFIG_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|e| ConfigError::FileRead {
            path: path.to_path_buf(),
            source: e,
        })?;
    if text.len() as u64 > MAX_CONFIG_LEN {
        return Err(unsafe_file(format!("larger than {MAX_CONFIG_LEN} bytes")));
    }
    Ok(text)
}

/// Whether `value` is an array of tables: a `[[class]]` or `[[name]]` section list, which is
/// policy, not a flag.
fn is_sections(value: &toml::Value) -> bool {
    matches!(value, toml::Value::Array(items) if items.first().is_some_and(toml::Value::is_table))
}

/// The `[[class]]` and `[[name]]` sections of the TOML `text` ([`crate::policy::PolicyConfig`]);
/// `class = ["NAME:..."]` strings are the `--class` flag instead, read by [`to_args`].
///
/// # Errors
/// [`ConfigError::FileSyntax`] for a malformed section.
pub fn policy_sections(
    path: &Path,
    text: &str,
) -> Result<crate::policy::PolicyConfig, ConfigError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::FileSyntax {
        path: path.to_path_buf(),
        msg: e.message().replace('\n', " "),
    })?;
    table.retain(|k, v| matches!(k, "class" | "name") && is_sections(v));
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::FileSyntax {
            path: path.to_path_buf(),
            msg: e.message().replace('\n', " "),
        })
}

/// Turns the TOML `text` into arguments for `cmd` (the observer's flags).
///
/// # Errors
/// [`ConfigError::FileSyntax`], [`ConfigError::UnknownKey`], [`ConfigError::KeyShape`].
pub fn to_args(path: &Path, text: &str, cmd: &clap::Command) -> Result<Vec<OsString>, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::FileSyntax {
        path: path.to_path_buf(),
        msg: e.message().replace('\n', " "),
    })?;
    let shape = |key: &str, why: &'static str| ConfigError::KeyShape {
        path: path.to_path_buf(),
        key: key.to_string(),
        why,
    };
    let mut args = Vec::new();
    for (key, value) in &table {
        // `[[class]]` / `[[name]]` sections are policy, read by `policy_sections`.
        if matches!(key.as_str(), "class" | "name") && is_sections(value) {
            continue;
        }
        // `config` itself is no key: files do not include files.
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && a.get_id() != "config")
            .ok_or_else(|| ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
            })?;
        if !arg.get_action().takes_values() {
            match value {
                toml::Value::Boolean(true) => args.push(OsString::from(format!("--{key}"))),
                toml::Value::Boolean(false) => {}
                _ => return Err(shape(key, "is a switch: write true or false")),
            }
            continue;
        }
        let many = matches!(arg.get_action(), clap::ArgAction::Append);
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(items) if many => items.iter().collect(),
            toml::Value::Array(_) => return Err(shape(key, "takes one value, not an array")),
            v => vec![v],
        };
        for v in values {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => return Err(shape(key, "expects a string or a number")),
            };
            // `--key=value`: a value starting with `-` stays a value.
            args.push(OsString::from(format!("--{key}={text}")));
        }
    }
    Ok(args)
}
