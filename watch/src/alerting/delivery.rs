//! The delivery thread: posts batches of alerts to every configured Alertmanager, off the
//! receive loop.
//!
//! The loop hands a batch over with [`Delivery::try_send`], which never blocks: the queue is
//! bounded ([`AlertingConfig::queue_capacity`]) and a batch that does not fit is dropped and
//! counted (`varta_alerts_sent_total{outcome="dropped"}`); the next resend of the active alerts
//! repairs the loss. The thread runs a current-thread tokio runtime with a hyper client; each
//! batch is posted to every Alertmanager concurrently, each post retried with exponential backoff
//! up to [`AlertingConfig::max_attempts`], so one unreachable Alertmanager of an HA pair neither
//! delays the others nor, ever, detection.
//!
//! Shutdown is bounded: dropping the [`Delivery`] stops the retries, gives what is queued one
//! attempt, and waits at most [`SHUTDOWN_WAIT`] for the thread (an Alertmanager that accepts
//! connections and never answers must not hold the observer's exit past its service manager's
//! stop timeout); a thread still posting after that is left to the process's exit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{
    channel, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError,
};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::book::Alert;
use super::{wire, AlertingConfig};

/// Counters of [`Delivery`], readable from any thread (the metrics code reads them for
/// `varta_alerts_sent_total{outcome}`). Posts are counted per Alertmanager: a batch posted to
/// two Alertmanagers counts twice.
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    /// Posts an Alertmanager accepted (2xx).
    pub sent: AtomicU64,
    /// Failed attempts that were retried.
    pub retried: AtomicU64,
    /// Posts given up after the last attempt, or refused with a 4xx other than 429.
    pub failed: AtomicU64,
    /// Batches dropped because the queue was full (or the thread was gone).
    pub dropped: AtomicU64,
}

impl DeliveryCounters {
    /// Every `outcome` label value, in a fixed order, with its count (all present from the
    /// start, at zero).
    #[must_use]
    pub fn outcomes(&self) -> [(&'static str, u64); 4] {
        [
            ("sent", self.sent.load(Ordering::Relaxed)),
            ("retried", self.retried.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
            ("dropped", self.dropped.load(Ordering::Relaxed)),
        ]
    }
}

/// The batch did not fit in the queue; it is dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("alert delivery queue full: batch dropped")]
pub struct QueueFull;

/// The longest [`Delivery`]'s drop waits for the thread.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Handle of the running delivery thread. Dropping it closes the queue, stops retries, lets
/// the thread try what is queued once, and joins it (waiting at most [`SHUTDOWN_WAIT`]).
#[derive(Debug)]
pub struct Delivery {
    tx: Option<SyncSender<Vec<Alert>>>,
    counters: Arc<DeliveryCounters>,
    thread: Option<JoinHandle<()>>,
    /// Raised at drop: no more retries.
    closing: Arc<AtomicBool>,
    /// Disconnected when the thread ends.
    done: Receiver<()>,
}

impl Delivery {
    /// Starts the delivery thread.
    ///
    /// # Errors
    /// Creating the runtime or the thread.
    pub fn start(cfg: AlertingConfig) -> std::io::Result<Delivery> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = sync_channel(cfg.queue_capacity.max(1));
        let counters = Arc::new(DeliveryCounters::default());
        let c = Arc::clone(&counters);
        let closing = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&closing);
        let (done_tx, done) = channel::<()>();
        let thread = std::thread::Builder::new()
            .name("varta-alerts".into())
            .spawn(move || {
                // Dropped when the thread ends, however it ends.
                let _done: Sender<()> = done_tx;
                run(&rt, &cfg, &rx, &c, &stop);
            })?;
        Ok(Delivery {
            tx: Some(tx),
            counters,
            thread: Some(thread),
            closing,
            done,
        })
    }

    /// Queues a batch without blocking.
    ///
    /// # Errors
    /// [`QueueFull`] when the queue is full (the batch is dropped and counted).
    pub fn try_send(&self, batch: Vec<Alert>) -> Result<(), QueueFull> {
        let Some(tx) = &self.tx else {
            return Err(QueueFull);
        };
        match tx.try_send(batch) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                Err(QueueFull)
            }
        }
    }

    /// The counters, to share with the metrics code.
    #[must_use]
    pub fn counters(&self) -> Arc<DeliveryCounters> {
        Arc::clone(&self.counters)
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        self.tx = None;
        // Disconnected once the thread has ended; a timeout leaves it to the process's exit.
        if self.done.recv_timeout(SHUTDOWN_WAIT) != Err(RecvTimeoutError::Timeout) {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn run(
    rt: &tokio::runtime::Runtime,
    cfg: &AlertingConfig,
    rx: &Receiver<Vec<Alert>>,
    counters: &DeliveryCounters,
    closing: &Arc<AtomicBool>,
) {
    let client: HttpClient = {
        let _guard = rt.enter();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.timeout));
        http.set_nodelay(true);
        Client::builder(TokioExecutor::new()).build(http)
    };
    while let Ok(batch) = rx.recv() {
        let body = Bytes::from(wire::encode(&batch, cfg.generator_url.as_deref()));
        rt.block_on(async {
            let posts = cfg
                .endpoints
                .iter()
                .map(|uri| {
                    tokio::spawn(post(
                        client.clone(),
                        uri.clone(),
                        body.clone(),
                        cfg.clone(),
                        Arc::clone(closing),
                    ))
                })
                .collect::<Vec<_>>();
            for p in posts {
                match p.await {
                    Ok(outcome) => outcome.count(counters),
                    Err(_) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
}

/// How one post to one Alertmanager ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    retries: u64,
    sent: bool,
}

impl Outcome {
    fn count(self, c: &DeliveryCounters) {
        c.retried.fetch_add(self.retries, Ordering::Relaxed);
        if self.sent {
            c.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            c.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Whether an answer is worth another attempt: no answer, a server error or 429.
fn retryable(status: Option<StatusCode>) -> bool {
    status.map_or(true, |s| {
        s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS
    })
}

async fn post(
    client: HttpClient,
    uri: Uri,
    body: Bytes,
    cfg: AlertingConfig,
    closing: Arc<AtomicBool>,
) -> Outcome {
    let mut backoff = cfg.backoff_initial;
    let mut retries = 0;
    for attempt in 1..=cfg.max_attempts.max(1) {
        let status = attempt_once(&client, &uri, &body, cfg.timeout).await;
        if status.is_some_and(|s| s.is_success()) {
            return Outcome {
                retries,
                sent: true,
            };
        }
        if !retryable(status)
            || attempt == cfg.max_attempts.max(1)
            || closing.load(Ordering::Relaxed)
        {
            break;
        }
        retries += 1;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
    Outcome {
        retries,
        sent: false,
    }
}

/// One POST; the answer's status, or `None` when there was none in time.
async fn attempt_once(
    client: &HttpClient,
    uri: &Uri,
    body: &Bytes,
    timeout: Duration,
) -> Option<StatusCode> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "varta-watch")
        .body(Full::new(body.clone()))
        .ok()?;
    let exchange = async {
        let resp = client.request(req).await.ok()?;
        let status = resp.status();
        // Read (and drop) the answer so the connection can be reused.
        let _ = resp.into_body().collect().await;
        Some(status)
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_only_what_may_succeed_later() {
        assert!(retryable(None));
        assert!(retryable(Some(StatusCode::SERVICE_UNAVAILABLE)));
        assert!(retryable(Some(StatusCode::TOO_MANY_REQUESTS)));
        assert!(!retryable(Some(StatusCode::BAD_REQUEST)));
    }
}
