//! The body of Alertmanager's `POST /api/v2/alerts`: a JSON array of
//! `{labels, annotations, startsAt, endsAt, generatorURL}`, times in RFC 3339.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::book::Alert;

/// One element of the posted array (Alertmanager's `postableAlert`).
#[derive(Debug, Serialize)]
struct Postable<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<&'a str>,
}

/// `t` in RFC 3339 with milliseconds, UTC; times before 1970 (a wall clock set wrong) are
/// written as 1970-01-01T00:00:00.000Z.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t.max(UNIX_EPOCH)).to_string()
}

/// Encodes `alerts` as the JSON body of `POST /api/v2/alerts`; `generator_url` (e.g. the
/// observer's status page) is set on every alert when given.
#[must_use]
pub fn encode(alerts: &[Alert], generator_url: Option<&str>) -> Vec<u8> {
    let body: Vec<Postable<'_>> = alerts
        .iter()
        .map(|a| Postable {
            labels: &a.labels,
            annotations: &a.annotations,
            starts_at: rfc3339(a.starts_at),
            ends_at: rfc3339(a.ends_at),
            generator_url,
        })
        .collect();
    // Maps of strings and strings: serialisation cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn body_is_alertmanagers_postable_alerts() {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), "VartaAgentStalled".to_string());
        labels.insert("agent".to_string(), "unix:42".to_string());
        let mut annotations = BTreeMap::new();
        annotations.insert("observer".to_string(), "h\"1".to_string());
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let a = Alert {
            labels,
            annotations,
            starts_at: t,
            ends_at: t + Duration::from_secs(120),
        };
        let body = encode(&[a], None);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"[{"labels":{"agent":"unix:42","alertname":"VartaAgentStalled"},"annotations":{"observer":"h\"1"},"startsAt":"2023-11-14T22:13:20.123Z","endsAt":"2023-11-14T22:15:20.123Z"}]"#
        );
        let with_url = encode(&[], Some("http://h:9465/"));
        assert_eq!(with_url, b"[]");
        let before_1970 = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(rfc3339(before_1970), "1970-01-01T00:00:00.000Z");
    }
}
