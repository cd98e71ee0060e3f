//! The admin HTTP port (loopback by default).
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the live status page |
//! | `GET /healthz` | alive |
//! | `GET /readyz` | topology loaded and every cluster's primary reachable (else 503) |
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /api/v1/clusters`, `GET /api/v1/clusters/{name}` | status: primary, term, servers, buffer, conditions |
//! | `POST /api/v1/clusters/{name}/reparent` | planned reparent, body `{"to": "host:port"}` optional |
//! | `POST /api/v1/clusters/{name}/failover` | emergency reparent (409 with the reason when refused, e.g. split brain) |
//! | `POST /api/v1/clusters/{name}/cancel` | cancel the reparent or failover in progress: 202, it undoes at its next step; 409 `too_late` once it published the new primary, 409 `not_running` |
//! | `POST /api/v1/config/reload` | re-read and apply the config file |
//! | `GET /api/v1/topology` | the topology store; on etcd: degraded or not, orchestrator, live proxies |
//!
//! On etcd, reparent and failover requests are forwarded to the proxy holding the
//! orchestrator role, and refused (503) while etcd is unreachable.
//!
//! Requests that change state need `Authorization: Bearer <token>` (`[server]
//! admin_token` or BATON_ADMIN_TOKEN); with no token configured they are refused.
//! Errors are JSON `{"error": ..., "detail": ...}`: 400 malformed body, 401 no
//! token, 403 wrong or unconfigured token, 404 unknown cluster or server, 409 a
//! reparent already running or a failover refused, 422 unusable candidate, 503 not ready.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use baton_control::cluster::Registry;
use baton_control::reparent::{self, ReparentError};
use baton_control::run::Outcome;

use baton_control::Store;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::reload::Reloader;

/// What admin handlers can reach.
#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub clusters: Registry,
    pub reloader: Arc<Reloader>,
    pub metrics: Arc<baton_control::metrics::Metrics>,
}

pub(crate) fn error(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    (status, Json(json!({"error": error, "detail": detail.into()}))).into_response()
}

fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let token = state.reloader.token.read().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(token) = token else {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "no admin token is configured ([server] admin_token or BATON_ADMIN_TOKEN); state-changing requests are refused",
        )));
    };
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err(Box::new(error(StatusCode::UNAUTHORIZED, "unauthorized", "missing Authorization: Bearer <token>"))),
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(Box::new(error(StatusCode::FORBIDDEN, "forbidden", "wrong admin token"))),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// On etcd: refuse while etcd is unreachable; forward to the orchestrator when it
/// is another proxy. `None`: run the request here.
async fn coordinate(state: &AdminState, headers: &HeaderMap, path: &str, body: &[u8]) -> Option<Response> {
    if !matches!(state.store, Store::Etcd(_)) {
        return None;
    }
    if let Some(why) = state.store.degraded() {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the topology store (etcd) is unreachable: {why}; reparents and failovers are refused until it is back (this proxy keeps serving with the last known topology)"),
        ));
    }
    let Some(peers) = state.store.peers() else {
        return Some(error(StatusCode::SERVICE_UNAVAILABLE, "no_orchestrator", "this proxy has not registered in etcd yet; retry in a few seconds"));
    };
    if peers.is_orchestrator() {
        return None;
    }
    let Some(o) = peers.orchestrator() else {
        return Some(error(StatusCode::SERVICE_UNAVAILABLE, "no_orchestrator", "no proxy holds the orchestrator role yet; retry in a few seconds"));
    };
    if headers.contains_key("x-baton-forwarded") {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_orchestrator",
            format!("forwarded here, but the orchestrator is now proxy {} at {}; retry", o.id, o.admin),
        ));
    }
    tracing::info!(orchestrator = %o.id, admin = %o.admin, "forwarding {path} to the orchestrator");
    Some(crate::forward::forward(&o.admin, &peers.id, path, headers, body).await)
}

/// `GET /api/v1/topology`: the store, and on etcd this proxy's view of the others.
async fn topology(State(state): State<AdminState>) -> Response {
    let peers = state.store.peers();
    let members = match &peers {
        Some(p) => p.members().await.ok(),
        None => None,
    };
    Json(json!({
        "store": state.store.kind(),
        "degraded": state.store.degraded(),
        "id": peers.as_ref().map(|p| p.id.clone()),
        "orchestrator": peers.as_ref().and_then(|p| p.orchestrator()),
        "is_orchestrator": peers.as_ref().is_some_and(|p| p.is_orchestrator()),
        "members": members,
        "clusters": &state.store.current().clusters,
    }))
    .into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let topo = state.store.current();
    let mut problems = Vec::new();
    for (name, handle) in &state.clusters {
        match topo.cluster(name) {
            None => problems.push(format!("{name}: no topology record")),
            Some(r) => {
                if let Err(e) = handle.connect(&r.primary).await {
                    problems.push(format!("{name}: primary {e}"));
                }
            }
        }
    }
    if problems.is_empty() {
        Json(json!({"ready": true})).into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", problems.join("; "))
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let body = state.metrics.render(&state.clusters, &state.store);
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

async fn clusters(State(state): State<AdminState>) -> Response {
    let topo = state.store.current();
    let mut names: Vec<&String> = state.clusters.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        out.push(crate::status::cluster(&state.clusters[n], &topo).await);
    }
    Json(json!({"clusters": out})).into_response()
}

async fn cluster_status(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    let Some(handle) = state.clusters.get(&name) else {
        return error(StatusCode::NOT_FOUND, "not_found", format!("unknown cluster {name:?}"));
    };
    Json(crate::status::cluster(handle, &state.store.current()).await).into_response()
}

async fn do_reparent(State(state): State<AdminState>, Path(name): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    let Some(handle) = state.clusters.get(&name).cloned() else {
        return error(StatusCode::NOT_FOUND, "not_found", format!("unknown cluster {name:?}"));
    };
    let to = if body.iter().all(|b| b.is_ascii_whitespace()) {
        None
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(v)) => match v.get("to") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(_) => return error(StatusCode::BAD_REQUEST, "bad_request", "\"to\" must be a string \"host:port\""),
            },
            Ok(_) => return error(StatusCode::BAD_REQUEST, "bad_request", "the body must be a JSON object"),
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("malformed JSON body: {e}")),
        }
    };
    if let Some(t) = &to {
        if !handle.settings().servers.contains(t) {
            return error(StatusCode::NOT_FOUND, "not_found", format!("{t} is not a server of cluster {name}"));
        }
    }
    if let Some(r) = coordinate(&state, &headers, &format!("/api/v1/clusters/{name}/reparent"), &body).await {
        return r;
    }
    // baton's own task: a caller that goes away (a client timeout, Ctrl-C on
    // `baton ctl`) stops watching; the reparent runs on to done, undone or held.
    let (store, metrics, cluster) = (state.store.clone(), state.metrics.clone(), name.clone());
    let task = tokio::spawn(async move {
        let result = reparent::planned(&handle, &store, to.as_deref()).await;
        match &result {
            Ok(r) => {
                let steps: Vec<(String, u64)> = r.steps.iter().map(|s| (s.step.to_string(), s.ms)).collect();
                metrics.reparent(&cluster, r.outcome.name(), &steps);
            }
            Err(ReparentError::AlreadyRunning(_)) => {}
            Err(_) => metrics.reparent(&cluster, "refused", &[]),
        }
        result
    });
    let Ok(result) = task.await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the reparent task failed; see GET /api/v1/clusters/{name}"));
    };
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

async fn failover(State(state): State<AdminState>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    let Some(handle) = state.clusters.get(&name).cloned() else {
        return error(StatusCode::NOT_FOUND, "not_found", format!("unknown cluster {name:?}"));
    };
    if let Some(r) = coordinate(&state, &headers, &format!("/api/v1/clusters/{name}/failover"), b"").await {
        return r;
    }
    // baton's own task, as a planned reparent: the caller only watches it.
    let (store, metrics, cluster) = (state.store.clone(), state.metrics.clone(), name.clone());
    let task = tokio::spawn(async move {
        let result = baton_control::failover::emergency(&handle, &store, "requested through the admin API").await;
        if let Ok(report) = &result {
            let steps: Vec<(String, u64)> = report.steps.iter().map(|s| (s.step.to_string(), s.ms)).collect();
            metrics.failover(&cluster, report.outcome.name(), &steps);
        }
        result
    });
    let Ok(result) = task.await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the failover task failed; see GET /api/v1/clusters/{name}"));
    };
    match result {
        Ok(report) => {
            let status = match report.outcome {
                Outcome::Ok => StatusCode::OK,
                Outcome::Refused => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, Json(report)).into_response()
        }
        Err(ReparentError::AlreadyRunning(c)) => error(StatusCode::CONFLICT, "conflict", format!("a reparent of cluster {c} is already running")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()),
    }
}

/// Ask the reparent or failover in progress to stop and undo (only before its
/// publish step; after it the new primary is established and it runs to its end).
async fn cancel(State(state): State<AdminState>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    let Some(handle) = state.clusters.get(&name).cloned() else {
        return error(StatusCode::NOT_FOUND, "not_found", format!("unknown cluster {name:?}"));
    };
    if let Some(r) = coordinate(&state, &headers, &format!("/api/v1/clusters/{name}/cancel"), b"").await {
        return r;
    }
    match handle.cancel.request(&name) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({"cancel": "requested", "detail": format!("the procedure undoes at its next step; follow it with GET /api/v1/clusters/{name}")})),
        )
            .into_response(),
        Err(e @ ReparentError::TooLate(..)) => error(StatusCode::CONFLICT, "too_late", e.to_string()),
        Err(e) => error(StatusCode::CONFLICT, "not_running", e.to_string()),
    }
}

async fn reload(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    match state.reloader.reload() {
        Ok(summary) => Json(json!({"reloaded": true, "detail": summary})).into_response(),
        Err(e) => {
            tracing::error!("reload through the admin API: config refused: {e}");
            error(StatusCode::BAD_REQUEST, "invalid_config", format!("{e}; the running config is kept"))
        }
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(|| async { Html(crate::admin::STATUS_PAGE) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/topology", get(topology))
        .route("/api/v1/clusters", get(clusters))
        .route("/api/v1/clusters/{name}", get(cluster_status))
        .route("/api/v1/clusters/{name}/reparent", post(do_reparent))
        .route("/api/v1/clusters/{name}/failover", post(failover))
        .route("/api/v1/clusters/{name}/cancel", post(cancel))
        .route("/api/v1/config/reload", post(reload))
        .with_state(state)
}

/// The status page: one self-contained HTML file polling the status API.
pub const STATUS_PAGE: &str = include_str!("status.html");

/// Serve until `stop` is cancelled.
pub async fn serve(listener: TcpListener, state: AdminState, stop: CancellationToken) {
    let app = router(state);
    let r = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    if let Err(e) = r {
        tracing::error!(error = %e, "admin port failed");
    }
}
