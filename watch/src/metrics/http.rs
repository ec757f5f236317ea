//! The HTTP side: axum routes served by hyper on a current-thread tokio runtime, on a thread
//! of its own, so nothing a client does can delay the receive loop.
//!
//! Every connection holds a permit of a semaphore sized `--http-max-connections`; a connection
//! arriving when none is left is closed at once and counted. hyper bounds the request head
//! ([`super::MAX_REQUEST_HEAD`]) and the time to receive it (`--http-header-timeout-ms`: a
//! client sending a byte a second is cut off); a connection silent both ways for
//! `--http-idle-timeout-ms` is closed.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Semaphore};

use super::link::{Published, Shared};
use super::{
    Guard, HttpCounters, HttpLimits, Peer, Publisher, FRESH, MAX_REQUEST_BODY, MAX_REQUEST_HEAD,
};

/// How long a scrape waits for the loop's fresh snapshot before it is answered from the last
/// one.
pub const SNAPSHOT_WAIT: Duration = Duration::from_millis(500);

/// What every route can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    shared: Arc<Shared>,
    snapshots: watch::Receiver<Option<Arc<Published>>>,
    counters: Arc<HttpCounters>,
    guard: Arc<Guard>,
}

/// The routes, declared in one place. A new page or API is one more `.route` here, reading
/// the same published snapshot; an authentication or rate-limit layer wraps them all here.
/// `status` holds the status page's routes ([`crate::http_assets::routes`]); the guard
/// (bearer token, scrape rate limit) wraps them with the rest, and lets the page itself (`/`,
/// no data) through without the token (the guard's `OPEN_PATHS`).
pub fn router(state: AppState, status: Router) -> Router {
    let guard = (Arc::clone(&state.guard), Arc::clone(&state.counters));
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(status)
        .fallback(|| async { (StatusCode::NOT_FOUND, "try /metrics\n") })
        .layer(axum::middleware::from_fn_with_state(
            guard,
            super::guard::check,
        ))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
}

/// A snapshot no older than [`FRESH`], asking the loop for one when needed; the last one if
/// the loop does not answer within [`SNAPSHOT_WAIT`].
async fn fresh_snapshot(state: &AppState) -> Option<Arc<Published>> {
    let mut rx = state.snapshots.clone();
    let last = rx.borrow_and_update().clone();
    if matches!(&last, Some(p) if p.taken.elapsed() < FRESH) {
        return last;
    }
    state.shared.request();
    match tokio::time::timeout(SNAPSHOT_WAIT, rx.changed()).await {
        Ok(Ok(())) => rx.borrow().clone(),
        _ => last,
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match fresh_snapshot(&state).await {
        Some(p) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            p.snapshot.encode(&state.counters),
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "observer busy\n").into_response(),
    }
}

/// Binds `addr` and starts the HTTP thread. Returns the loop's [`Publisher`] and the bound
/// address.
///
/// # Errors
/// Binding the listener, creating the eventfd, the runtime or the thread.
/// `status` holds the status page's routes ([`crate::http_assets::routes`]), merged in by
/// [`router`].
pub fn serve(
    addr: SocketAddr,
    limits: HttpLimits,
    guard: Guard,
    status: Router,
) -> io::Result<(Publisher, SocketAddr)> {
    let listener = bind(addr)?;
    let bound = listener.local_addr()?;
    let (publisher, snapshots) = Publisher::new()?;
    let state = AppState {
        shared: Arc::clone(&publisher.shared),
        snapshots,
        counters: Arc::new(HttpCounters::default()),
        guard: Arc::new(guard),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("varta-http".into())
        .spawn(move || runtime.block_on(accept_loop(listener, limits, state, status)))?;
    Ok((publisher, bound))
}

/// Pending connections the kernel queues before we accept them: a burst of clients (hundreds
/// of scrapers, or hostile ones) waits there rather than in SYN retries.
pub const BACKLOG: i32 = 1024;

/// A non-blocking, close-on-exec TCP listener with a [`BACKLOG`]-deep accept queue (`std`
/// asks for 128).
fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, BACKLOG)?;
    Ok(std::net::TcpListener::from(fd))
}

async fn accept_loop(
    listener: std::net::TcpListener,
    limits: HttpLimits,
    state: AppState,
    status: Router,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let counters = Arc::clone(&state.counters);
    let app = router(state, status);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                // Out of descriptors or a reset before accept: back off briefly, never spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            counters.dropped_capacity.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let app = app.clone().layer(axum::Extension(Peer(peer.ip())));
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            serve_connection(stream, app, limits, &counters).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    limits: HttpLimits,
    counters: &HttpCounters,
) {
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched {
        inner: stream,
        start,
        last: Arc::clone(&last),
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        // One request per connection, closed after the answer (as the observer always did):
        // clients that read to the end of the stream are answered at once.
        .keep_alive(false)
        .serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    loop {
        let idle_since = start + Duration::from_nanos(last.load(Ordering::Relaxed));
        let deadline = tokio::time::Instant::from_std(idle_since + limits.idle_timeout);
        tokio::select! {
            res = conn.as_mut() => {
                if matches!(&res, Err(e) if e.is_timeout()) {
                    counters.dropped_header_timeout.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                let quiet = Duration::from_nanos(last.load(Ordering::Relaxed));
                if start.elapsed().saturating_sub(quiet) >= limits.idle_timeout {
                    counters.dropped_idle.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

/// A TCP stream that notes the time of its last read or write (ns since `start`), for the
/// idle timeout.
struct Watched {
    inner: tokio::net::TcpStream,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl Watched {
    fn touch(&self) {
        let ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(ns, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
