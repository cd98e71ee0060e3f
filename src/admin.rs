//! The admin HTTP port (loopback by default).
//!
//! - `GET /healthz`: alive.
//! - `GET /api/v1/clusters/{name}`: primary, term, buffer state, leadership conditions.
//! - `POST /api/v1/clusters/{name}/reparent` (body `{"to": "host:port"}`, optional):
//!   a planned reparent; answers with its outcome and each step's duration.
//!
//! Requests that change state need `Authorization: Bearer <token>` (`[server]
//! admin_token` or BATON_ADMIN_TOKEN); without a configured token they are refused.
//! Errors are JSON `{"error": ..., "detail": ...}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use baton_control::cluster::Registry;
use baton_control::reparent::{self, ReparentError};
use baton_control::FileStore;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What admin handlers can reach.
#[derive(Clone)]
pub struct AdminState {
    pub store: FileStore,
    pub clusters: Registry,
    pub token: Option<Arc<str>>,
    pub metrics: Arc<baton_control::metrics::Metrics>,
}

fn error(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    (status, Json(json!({"error": error, "detail": detail.into()}))).into_response()
}

fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &state.token else {
        return Err(error(StatusCode::FORBIDDEN, "forbidden", "no admin token is configured ([server] admin_token or BATON_ADMIN_TOKEN); state-changing requests are refused"));
    };
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err(error(StatusCode::UNAUTHORIZED, "unauthorized", "missing Authorization: Bearer <token>")),
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(error(StatusCode::FORBIDDEN, "forbidden", "wrong admin token")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn cluster_status(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    let Some(handle) = state.clusters.get(&name) else {
        return error(StatusCode::NOT_FOUND, "not_found", format!("unknown cluster {name:?}"));
    };
    let topo = state.store.current();
    let record = topo.cluster(&name);
    let gate = handle.gate.status();
    let waited_ms = gate.since.filter(|_| gate.phase != baton_control::gate::Phase::Idle).map(|t| t.elapsed().as_millis() as u64);
    let conditions = handle.conditions.borrow().clone();
    Json(json!({
        "name": name,
        "primary": record.map(|r| r.primary.clone()),
        "term": record.map(|r| r.term),
        "servers": record.map(|r| r.servers.clone()),
        "buffer": {
            "phase": gate.phase,
            "episode": gate.episode,
            "reason": gate.reason,
            "queued": gate.queued,
            "active": gate.active,
            "buffering_for_ms": waited_ms,
        },
        "acknowledged_gtids": handle.acked.position(),
        "conditions": conditions,
    }))
    .into_response()
}

async fn do_reparent(State(state): State<AdminState>, Path(name): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return r;
    }
    let Some(handle) = state.clusters.get(&name).cloned() else {
        return error(StatusCode::NOT_FOUND, "not_found", format!("unknown cluster {name:?}"));
    };
    let to = if body.iter().all(|b| b.is_ascii_whitespace()) {
        None
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => match v.get("to") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(_) => return error(StatusCode::BAD_REQUEST, "bad_request", "\"to\" must be a string \"host:port\""),
            },
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("malformed JSON body: {e}")),
        }
    };
    if let Some(t) = &to {
        if !handle.settings().servers.contains(t) {
            return error(StatusCode::NOT_FOUND, "not_found", format!("{t} is not a server of cluster {name}"));
        }
    }
    let result = reparent::planned(&handle, &state.store, to.as_deref()).await;
    match &result {
        Ok(r) => {
            let steps: Vec<(String, u64)> = r.steps.iter().map(|s| (s.step.to_string(), s.ms)).collect();
            state.metrics.reparent(&name, r.outcome, &steps);
        }
        Err(ReparentError::AlreadyRunning(_)) => {}
        Err(_) => state.metrics.reparent(&name, "refused", &[]),
    }
    match result {
        Ok(report) => {
            let status = if report.outcome == "ok" { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
            (status, Json(report)).into_response()
        }
        Err(ReparentError::AlreadyRunning(c)) => error(StatusCode::CONFLICT, "conflict", format!("a reparent of cluster {c} is already running")),
        Err(e @ ReparentError::BadCandidate(_)) => error(StatusCode::UNPROCESSABLE_ENTITY, "bad_candidate", e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let topo = state.store.current();
    let terms = topo.clusters.iter().map(|(n, r)| (n.clone(), r.term)).collect();
    let body = state.metrics.render(&state.clusters, &terms);
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/clusters/{name}", get(cluster_status))
        .route("/api/v1/clusters/{name}/reparent", post(do_reparent))
        .with_state(state)
}

/// Serve until `stop` is cancelled.
pub async fn serve(listener: TcpListener, state: AdminState, stop: CancellationToken) {
    let app = router(state);
    let r = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    if let Err(e) = r {
        tracing::error!(error = %e, "admin port failed");
    }
}
