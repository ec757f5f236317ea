//! The status page's routes on the observer's HTTP side, kept apart from `/metrics` so the
//! metrics router merges them in one line (and its layers, a bearer token for instance, wrap
//! them with the rest; the token guard lets `/`, the page without data, through so that it can
//! ask for the token, and wants it on `/api/*`). `POST /api/control` takes the control socket's
//! requests (one JSON object: `status`, `silence_add`, `silence_list`, `silence_expire`) and
//! answers as the socket does, so silences can be managed over HTTP behind the token.

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::{agents_json, events_json, parse_since, EventRing, JSON_CONTENT_TYPE};
use super::{STATUS_HTML, STATUS_HTML_CONTENT_TYPE};
use crate::control::server::{SilenceCommander, SNAPSHOT_WAIT};
use crate::control::snapshot::SnapshotHub;

/// What the status routes read: the loop's snapshot hub and its ring of recent events.
#[derive(Debug, Clone)]
pub struct StatusState {
    /// Snapshots published by the loop on request.
    pub hub: Arc<SnapshotHub>,
    /// Recent event lines.
    pub events: Arc<Mutex<EventRing>>,
    /// Silence commands to the loop (the same channel the control socket uses).
    pub commander: SilenceCommander,
}

/// `/` (the page), `/api/agents`, `/api/events?since=SEQ`. Waiting for a snapshot and
/// serialising run on tokio's blocking pool, never on the HTTP thread's executor.
pub fn routes(state: StatusState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/agents", get(agents))
        .route("/api/events", get(events))
        .route("/api/control", post(control))
        .with_state(state)
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, STATUS_HTML_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        STATUS_HTML,
    )
        .into_response()
}

fn json(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, JSON_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn agents(State(state): State<StatusState>) -> Response {
    let hub = Arc::clone(&state.hub);
    match tokio::task::spawn_blocking(move || agents_json(&hub.fresh(SNAPSHOT_WAIT))).await {
        Ok(body) => json(body),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "observer busy\n").into_response(),
    }
}

async fn events(State(state): State<StatusState>, RawQuery(query): RawQuery) -> Response {
    let since = match parse_since(query.as_deref()) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let ring = Arc::clone(&state.events);
    let body = tokio::task::spawn_blocking(move || {
        events_json(&ring.lock().unwrap_or_else(PoisonError::into_inner), since)
    })
    .await;
    match body {
        Ok(body) => json(body),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "observer busy\n").into_response(),
    }
}

/// One control request (the control socket's protocol) in the body; the answer as JSON, with
/// 400 for a request that does not parse or is refused.
async fn control(State(state): State<StatusState>, body: Bytes) -> Response {
    let req: crate::control::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let r = crate::control::Response::error(format!("bad request: {e}"));
            return (StatusCode::BAD_REQUEST, json_of(&r)).into_response();
        }
    };
    let answer = tokio::task::spawn_blocking(move || {
        crate::control::server::handle(req, &state.hub, &state.commander)
    })
    .await;
    match answer {
        Ok(r) if r.ok => json(json_of(&r)),
        Ok(r) => (StatusCode::BAD_REQUEST, json_of(&r)).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "observer busy\n").into_response(),
    }
}

fn json_of(r: &crate::control::Response) -> String {
    serde_json::to_string(r).unwrap_or_else(|_| "{\"ok\":false}".into())
}
