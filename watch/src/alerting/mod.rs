//! Direct Alertmanager delivery: the observer posts an alert to every configured Alertmanager
//! (`--alertmanager-url`, repeatable: one per instance of an HA cluster) the moment an agent
//! stalls or crashes, re-sends active alerts periodically, and resolves them when the agent
//! recovers or exits.
//!
//! A sans-I/O core and thin shells, in the observer's usual shape:
//!
//! * [`book`]: sans-I/O. [`AlertBook`] takes the tracker's events and the time, keeps one
//!   active alert per agent (bounded) and yields batches of [`Alert`]s to post.
//! * [`delivery`]: the I/O. [`Delivery`] owns a thread with a bounded queue (the loop's
//!   [`Delivery::try_send`] never blocks), posting to every Alertmanager with retries and
//!   backoff, counted by outcome in [`DeliveryCounters`]; its shutdown is bounded.
//! * [`wire`]: the JSON body of `POST /api/v2/alerts`.
//! * [`settings`]: the flags (`--alertmanager-url`, repeatable; `--alert-resend-ms`, default
//!   30 s) into an [`AlertingConfig`].
//! * [`shell`]: what the receive loop holds, an [`AlertShell`]: it feeds each tracker event
//!   with the tracker's view of the agent ([`AgentFacts::from_view`]) to the book, includes
//!   the book's resend deadline in the loop's sleep, and hands every batch to the delivery
//!   thread without blocking. [`DeliveryCounters::outcomes`] is exported as
//!   `varta_alerts_sent_total{outcome}` (`sent`, `retried`, `failed`, `dropped`: a batch the
//!   full queue refused).
//!
//! Labels name the agent, not the observer, so several observers reporting one agent make one
//! alert in Alertmanager, and its grouping by `alertname` and `agent` (see
//! `deploy/alertmanager/alertmanager.yml`) and an HA cluster's de-duplication make one
//! notification.

pub mod book;
pub mod delivery;
pub mod settings;
pub mod shell;
pub mod wire;

use std::time::Duration;

use hyper::Uri;

pub use book::{AgentFacts, Alert, AlertBook, Now, ALERT_CRASHED, ALERT_STALLED};
pub use delivery::{Delivery, DeliveryCounters, QueueFull};
pub use shell::AlertShell;

/// Path of Alertmanager's alert API, appended to each base URL.
pub const ALERTS_PATH: &str = "/api/v2/alerts";

/// A refused `--alertmanager-url`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertingConfigError {
    /// No URL given.
    #[error("--alertmanager-url: at least one Alertmanager URL is needed")]
    NoUrl,
    /// Not a URL.
    #[error("--alertmanager-url {url:?}: not a URL ({reason})")]
    BadUrl {
        /// The value given.
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// Not `http://HOST[:PORT][/PREFIX]`.
    #[error("--alertmanager-url {url:?}: must be http://HOST[:PORT][/PATH-PREFIX] (https, query strings and user info are not supported)")]
    Unsupported {
        /// The value given.
        url: String,
    },
}

/// Settings of direct delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertingConfig {
    /// `BASE/api/v2/alerts` of every Alertmanager.
    pub endpoints: Vec<Uri>,
    /// Name of this observer in the alerts' `observer` annotation.
    pub observer: String,
    /// Active alerts are re-sent this often.
    pub resend_interval: Duration,
    /// Active alerts at most (one per agent).
    pub max_active: usize,
    /// Batches queued for the delivery thread at most.
    pub queue_capacity: usize,
    /// Connect and answer timeout of one post.
    pub timeout: Duration,
    /// Attempts per post and Alertmanager.
    pub max_attempts: u32,
    /// First pause before a retry; doubled each time up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest pause between retries.
    pub backoff_max: Duration,
    /// `generatorURL` of every alert (e.g. the observer's status page).
    pub generator_url: Option<String>,
}

impl AlertingConfig {
    /// Settings for the Alertmanagers at `urls` (base URLs such as `http://127.0.0.1:9093`),
    /// reported as observer `observer`, with defaults: resend every 30 s, 65,536 active alerts,
    /// a queue of 1,024 batches, 2 s timeout, 4 attempts with backoff from 100 ms to 2 s.
    ///
    /// # Errors
    /// No URL, or one that is not `http://HOST[:PORT][/PREFIX]`.
    pub fn new<S: AsRef<str>>(
        urls: &[S],
        observer: impl Into<String>,
    ) -> Result<AlertingConfig, AlertingConfigError> {
        if urls.is_empty() {
            return Err(AlertingConfigError::NoUrl);
        }
        let endpoints = urls
            .iter()
            .map(|u| endpoint(u.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AlertingConfig {
            endpoints,
            observer: observer.into(),
            resend_interval: Duration::from_secs(30),
            max_active: 65_536,
            queue_capacity: 1024,
            timeout: Duration::from_secs(2),
            max_attempts: 4,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            generator_url: None,
        })
    }

    /// An empty [`AlertBook`] with these settings.
    #[must_use]
    pub fn book(&self) -> AlertBook {
        AlertBook::new(self.observer.clone(), self.resend_interval, self.max_active)
    }
}

/// `BASE` + [`ALERTS_PATH`].
fn endpoint(url: &str) -> Result<Uri, AlertingConfigError> {
    let uri: Uri =
        url.parse().map_err(
            |e: hyper::http::uri::InvalidUri| AlertingConfigError::BadUrl {
                url: url.into(),
                reason: e.to_string(),
            },
        )?;
    let unsupported = || AlertingConfigError::Unsupported { url: url.into() };
    let authority = uri.authority().ok_or_else(unsupported)?;
    if uri.scheme_str() != Some("http")
        || authority.as_str().contains('@')
        || uri.query().is_some()
        || authority.host().is_empty()
    {
        return Err(unsupported());
    }
    let prefix = uri.path().trim_end_matches('/');
    format!("http://{authority}{prefix}{ALERTS_PATH}")
        .parse()
        .map_err(|_| unsupported())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_become_the_alerts_endpoint() {
        let c = AlertingConfig::new(
            &[
                "http://127.0.0.1:9093",
                "http://am-2.example:9093/",
                "http://[::1]:9093/prefix/",
            ],
            "h",
        )
        .unwrap();
        let e: Vec<String> = c.endpoints.iter().map(ToString::to_string).collect();
        assert_eq!(
            e,
            [
                "http://127.0.0.1:9093/api/v2/alerts",
                "http://am-2.example:9093/api/v2/alerts",
                "http://[::1]:9093/prefix/api/v2/alerts",
            ]
        );
        assert_eq!(c.book().active(), 0);
    }

    #[test]
    fn bad_urls_are_refused_by_rule() {
        let none: [&str; 0] = [];
        assert_eq!(
            AlertingConfig::new(&none, "h"),
            Err(AlertingConfigError::NoUrl)
        );
        assert!(matches!(
            AlertingConfig::new(&["http://a b"], "h"),
            Err(AlertingConfigError::BadUrl { .. })
        ));
        for bad in [
            "https://am:9093",
            "127.0.0.1:9093",
            "/api",
            "http://u:p@am:9093",
            "http://am:9093/?x=1",
        ] {
            assert_eq!(
                AlertingConfig::new(&[bad], "h"),
                Err(AlertingConfigError::Unsupported { url: bad.into() }),
                "{bad}"
            );
        }
    }
}
