//! The control API: a local Unix stream socket for `varta-watch status` and
//! `varta-watch silence ...`.
//!
//! # Where
//!
//! At the agent socket's path plus `.ctl` ([`control_path`]): `--socket /run/varta/varta.sock`
//! gives `/run/varta/varta.sock.ctl`, so a client given the same `--socket` finds it. Mode 0600
//! from the moment it exists (the socket's inode mode is set before `bind`), so only the
//! observer's owner (and root) can connect.
//!
//! # Protocol
//!
//! Line-delimited JSON ([`Request`], [`Response`]): one request object per line, one response
//! line each, as many as the client likes on one connection. Requests are at most
//! [`server::MAX_REQUEST_BYTES`]; a connection idle for [`server::IDLE_TIMEOUT`] is closed; at
//! most [`server::MAX_CONNECTIONS`] are served at once (more get a `busy` error).
//!
//! ```text
//! {"cmd":"status"}
//! {"cmd":"silence_add","matchers":["unit=backup.service"],"duration":"2h","comment":"disk swap"}
//! {"cmd":"silence_list"}
//! {"cmd":"silence_expire","id":3}
//! ```
//!
//! # Threads
//!
//! The server has its own thread (and one per connection) and never touches the observer's
//! state: `status` is answered from the latest [`snapshot::StatusSnapshot`] in the shared
//! [`snapshot::SnapshotHub`] (the loop publishes a fresh one when asked, through the hub's
//! eventfd), and silence commands travel through a bounded channel to the loop, which owns the
//! [`crate::policy::silence::SilenceSet`] ([`server::ControlLink::apply_silence_commands`]). The
//! receive loop never waits on a client.

pub mod client;
pub mod server;
pub mod snapshot;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::silence::Silence;
use snapshot::StatusSnapshot;

/// The control socket for an agent socket path: the same path plus `.ctl`.
#[must_use]
pub fn control_path(agent_socket: &Path) -> PathBuf {
    let mut s = agent_socket.as_os_str().to_owned();
    s.push(".ctl");
    PathBuf::from(s)
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The current status of every agent.
    Status,
    /// Add a silence.
    SilenceAdd {
        /// `KEY=VALUE` matchers, all must hold; none = everything.
        #[serde(default)]
        matchers: Vec<String>,
        /// How long: `90s`, `15m`, `2h`, `1d`, `1h30m`.
        duration: String,
        /// Why.
        #[serde(default)]
        comment: String,
    },
    /// The silences in force.
    SilenceList,
    /// End a silence now.
    SilenceExpire {
        /// Its id.
        id: u64,
    },
}

/// One response line. `ok` tells success; exactly one of the other fields is present.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Why it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<StatusSnapshot>,
    /// `silence_add` and `silence_expire`: the silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<Silence>,
    /// `silence_list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silences: Option<Vec<Silence>>,
}

impl Response {
    /// A failure.
    #[must_use]
    pub fn error(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(msg.into()),
            ..Response::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_path_appends_ctl() {
        assert_eq!(
            control_path(Path::new("/run/varta/varta.sock")),
            PathBuf::from("/run/varta/varta.sock.ctl")
        );
    }

    #[test]
    fn requests_have_one_spelling() {
        let r: Request = serde_json::from_str(
            r#"{"cmd":"silence_add","matchers":["unit=a.service"],"duration":"2h","comment":"x"}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::SilenceAdd {
                matchers: vec!["unit=a.service".into()],
                duration: "2h".into(),
                comment: "x".into()
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::SilenceExpire { id: 3 }).unwrap(),
            r#"{"cmd":"silence_expire","id":3}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
        assert!(
            serde_json::from_str::<Request>(r#"{"cmd":"silence_expire","id":1,"x":1}"#).is_err()
        );
        assert_eq!(
            serde_json::to_string(&Response::error("nope")).unwrap(),
            r#"{"ok":false,"error":"nope"}"#
        );
    }
}
