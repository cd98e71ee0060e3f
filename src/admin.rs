//! The admin HTTP port (loopback by default): `GET /healthz` for now.

use axum::routing::get;
use axum::Router;
use baton_control::FileStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What admin handlers can reach.
#[derive(Clone)]
pub struct AdminState {
    pub store: FileStore,
}

pub fn router(state: AdminState) -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" })).with_state(state)
}

/// Serve until `stop` is cancelled.
pub async fn serve(listener: TcpListener, state: AdminState, stop: CancellationToken) {
    let app = router(state);
    let r = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    if let Err(e) = r {
        tracing::error!(error = %e, "admin port failed");
    }
}
