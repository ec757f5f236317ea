//! The HTTP side's guard, one layer around every route ([`super::router`]): a bearer token
//! (`--prom-token-file`) required on every path but the status page itself ([`OPEN_PATHS`]),
//! and a per-source-IP token bucket on scrapes (`--prom-rate-limit-per-sec`,
//! `--prom-rate-limit-burst`).
//!
//! The token is compared in constant time (as a [`Key`], whose equality is `subtle`'s). The
//! bucket table is bounded ([`MAX_SOURCES`]): when it is full, sources whose bucket has
//! refilled are forgotten (they would start full anyway), then the one seen longest ago.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use vlp_core::Key;

use super::HttpCounters;
use crate::compat::RateLimit;

/// The paths served without the token: the status page (`/`), static HTML holding no data, so
/// that a browser can load the form that asks for the token. Every data path (`/metrics`,
/// `/api/*`) and every unknown path still needs it.
pub const OPEN_PATHS: [&str; 1] = ["/"];

/// Whether a request for `path` must carry the bearer token (when one is configured).
#[must_use]
pub fn needs_token(path: &str) -> bool {
    !OPEN_PATHS.contains(&path)
}

/// Source addresses whose buckets are remembered at most.
pub const MAX_SOURCES: usize = 4096;

/// The source address of a connection, set on each of its requests.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

/// Per-source token buckets, time as an input.
#[derive(Debug)]
pub struct ScrapeLimiter {
    limit: RateLimit,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl ScrapeLimiter {
    /// Buckets of `limit.burst` tokens refilled at `limit.rate` per second.
    #[must_use]
    pub fn new(limit: RateLimit) -> ScrapeLimiter {
        ScrapeLimiter {
            limit,
            buckets: HashMap::new(),
        }
    }

    fn refilled(&self, tokens: f64, last: Instant, now: Instant) -> f64 {
        let add = now.saturating_duration_since(last).as_secs_f64() * f64::from(self.limit.rate);
        (tokens + add).min(f64::from(self.limit.burst))
    }

    /// Takes a token of `ip`'s bucket at `now`; `false` when it is empty.
    pub fn try_take(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_SOURCES {
            self.make_room(now);
        }
        let burst = f64::from(self.limit.burst);
        let (tokens, last) = self.buckets.get(&ip).copied().unwrap_or((burst, now));
        let tokens = self.refilled(tokens, last, now);
        let (left, ok) = if tokens >= 1.0 {
            (tokens - 1.0, true)
        } else {
            (tokens, false)
        };
        self.buckets.insert(ip, (left, now));
        ok
    }

    fn make_room(&mut self, now: Instant) {
        let burst = f64::from(self.limit.burst);
        let limit = self.limit;
        let full = |(t, last): &(f64, Instant)| {
            let add = now.saturating_duration_since(*last).as_secs_f64() * f64::from(limit.rate);
            t + add >= burst
        };
        self.buckets.retain(|_, b| !full(b));
        if self.buckets.len() >= MAX_SOURCES {
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.1)
                .map(|(k, _)| *k)
            {
                self.buckets.remove(&oldest);
            }
        }
    }

    /// Sources remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// No source remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The guard's settings and state, shared by the HTTP thread's tasks.
#[derive(Debug, Default)]
pub struct Guard {
    token: Option<Key>,
    limiter: Option<Mutex<ScrapeLimiter>>,
}

impl Guard {
    /// A guard requiring `token` (if any) and limiting scrapes by `limit` (if any).
    #[must_use]
    pub fn new(token: Option<Key>, limit: Option<RateLimit>) -> Guard {
        Guard {
            token,
            limiter: limit.map(|l| Mutex::new(ScrapeLimiter::new(l))),
        }
    }

    fn authorized(&self, req: &Request) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        if !needs_token(req.uri().path()) {
            return true;
        }
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|hex| Key::from_hex(hex.trim()).ok());
        // Constant-time comparison of the 32 bytes.
        given.is_some_and(|k| k == *token)
    }

    fn admitted(&self, req: &Request) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        if !matches!(req.uri().path(), "/metrics" | "/") {
            return true;
        }
        let Some(Peer(ip)) = req.extensions().get::<Peer>().copied() else {
            return true;
        };
        let mut l = limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        l.try_take(ip, Instant::now())
    }
}

/// The middleware: 401 without the token, 429 over the scrape rate, both counted.
pub async fn check(
    State((guard, counters)): State<(Arc<Guard>, Arc<HttpCounters>)>,
    req: Request,
    next: Next,
) -> Response {
    if !guard.authorized(&req) {
        counters.auth_failures.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "bearer token required\n",
        )
            .into_response();
    }
    if !guard.admitted(&req) {
        counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::TOO_MANY_REQUESTS, "scrape rate limit\n").into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_the_page_itself_is_open() {
        assert!(!needs_token("/"));
        for path in [
            "/metrics",
            "/api/agents",
            "/api/events",
            "/other",
            "//",
            "/index.html",
        ] {
            assert!(needs_token(path), "{path}");
        }
    }

    #[test]
    fn a_bucket_refills_at_the_rate_and_the_table_stays_bounded() {
        let mut l = ScrapeLimiter::new(RateLimit { rate: 2, burst: 3 });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..3).all(|_| l.try_take(ip, t0)));
        assert!(!l.try_take(ip, t0), "burst spent");
        assert!(
            l.try_take(ip, t0 + Duration::from_millis(500)),
            "one token after 0.5 s at 2/s"
        );
        assert!(!l.try_take(ip, t0 + Duration::from_millis(500)));
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(l.try_take(other, t0), "buckets are per source");
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.try_take(a, t0);
        }
        assert!(l.len() <= MAX_SOURCES);
    }
}
