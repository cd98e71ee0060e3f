//! The MySQL listener: accepts clients, caps their number, runs the handshake
//! under a timeout, then hands each one to its [`Session`].
//!
//! Shutdown: `stop_accepting` ends the accept loop; `close_sessions` (fired after
//! the grace period) makes every idle session send ERR 1053 and close.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::backend::{Backend, Greeted};
use crate::context::ProxyContext;
use crate::error::{MysqlError, ProxyError};
use crate::handshake;
use crate::packet::PacketIo;
use crate::proto;
use crate::session::Session;
use crate::stream::Stream;
use crate::threads::{Registration, Thread};

/// Shutdown signals and the set of running sessions.
#[derive(Clone)]
pub struct Shutdown {
    pub stop_accepting: CancellationToken,
    pub close_sessions: CancellationToken,
    pub sessions: TaskTracker,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { stop_accepting: CancellationToken::new(), close_sessions: CancellationToken::new(), sessions: TaskTracker::new() }
    }
}

/// Accept clients until `shutdown.stop_accepting` is cancelled. Each session runs
/// on one of the `workers` threads.
pub async fn serve(listener: TcpListener, ctx: Arc<ProxyContext>, max_connections: usize, shutdown: Shutdown, workers: Arc<crate::workers::Workers>) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.stop_accepting.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let close = shutdown.close_sessions.clone();
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shutdown.sessions.spawn(async move {
                let mut io = PacketIo::new(stream);
                let _ = io.send(0, &proto::err_payload(&MysqlError::too_many_connections())).await;
            });
            continue;
        };
        let conn_id = ctx.next_connection_id();
        ctx.metrics.client_connections_total.increment(1);
        let span = tracing::debug_span!("conn", id = conn_id, client = %peer);
        let metrics = ctx.metrics.clone();
        metrics.client_connections.increment(1.0);
        // Re-registered with the session thread's own reactor.
        let std = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand the connection to a session thread");
                metrics.client_connections.decrement(1.0);
                continue;
            }
        };
        shutdown.sessions.spawn_on(
            async move {
                if let Ok(stream) = TcpStream::from_std(std) {
                    handle(stream, peer, ctx, conn_id, close).await;
                }
                metrics.client_connections.decrement(1.0);
                drop(permit);
            }
            .instrument(span),
            workers.pick(),
        );
    }
    shutdown.sessions.close();
}

async fn handle(stream: TcpStream, peer: SocketAddr, ctx: Arc<ProxyContext>, conn_id: u32, close: CancellationToken) {
    let mut io = PacketIo::new(Stream::Plain(stream));
    // Greet the primary first: its thread id is the client's connection id.
    let (greeted, registration) = greet_primary(&ctx, conn_id).await;
    let client_id = registration.client_id();
    // Held for a client that logs in promptly; a slow one (or one that never
    // does) gives it up, so idle peers cannot hold the primary's connections.
    let held = Arc::new(std::sync::Mutex::new(greeted));
    let release = {
        let held = held.clone();
        tokio::spawn(async move {
            tokio::time::sleep(GREETING_HOLD).await;
            drop(held.lock().unwrap_or_else(|p| p.into_inner()).take());
        })
    };
    let hello = tokio::time::timeout(ctx.limits().handshake_timeout, handshake::accept(&mut io, &ctx, client_id, peer)).await;
    release.abort();
    let greeted = held.lock().unwrap_or_else(|p| p.into_inner()).take();
    let hello = match hello {
        Err(_) => {
            tracing::debug!("handshake timed out");
            let e = MysqlError::bad_handshake("handshake timed out");
            let _ = io.send(2, &proto::err_payload(&e)).await;
            return;
        }
        Ok(Err(e)) => {
            if let Some(err) = e.client_error() {
                tracing::debug!(error = %err, "handshake refused");
                // Answers the client's last packet (after TLS and auth switches, not 2).
                let seq = io.last_seq().wrapping_add(1);
                let _ = io.send(seq, &proto::err_payload(&err)).await;
            }
            return;
        }
        Ok(Ok(h)) => h,
    };
    let session = match Session::establish(ctx, io, peer, hello, greeted, registration).await {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(error = %e, "client left during login");
            return;
        }
    };
    match session.run(close).await {
        Ok(()) => tracing::debug!("session ended"),
        Err(ProxyError::Io(e)) => tracing::debug!(error = %e, "client gone"),
        Err(e) => tracing::info!(error = %e, "session closed"),
    }
}

/// How long the client's greeting waits for the primary's (then baton's own id).
const GREETING_WAIT: std::time::Duration = std::time::Duration::from_millis(250);
/// How long a backend connection greeted for a client waits for its login.
const GREETING_HOLD: std::time::Duration = std::time::Duration::from_millis(1000);

/// Open a connection to the greeting cluster's primary and read its greeting
/// (with its term), and claim its thread id as the client's connection id. When
/// the id is taken (a live session's id from another server) a new connection
/// is tried; when no primary answers, baton's own counter serves as the id and
/// the session connects after the client logged in (and reports the error then).
async fn greet_primary(ctx: &ProxyContext, fallback_id: u32) -> (Option<(Greeted, u64)>, Registration) {
    const ATTEMPTS: usize = 3;
    let slot = ctx.greetings.clone().try_acquire_owned().ok();
    if let (Some(slot), Some((addr, term))) = (slot, ctx.primary_of(&ctx.greeting_cluster)) {
        // A primary slow to greet must not hold the client's own greeting long.
        let timeout = ctx.limits().backend_connect_timeout.min(GREETING_WAIT);
        let mut slot = Some(slot);
        for _ in 0..ATTEMPTS {
            let Ok(mut g) = Backend::greet(&addr, ctx.backend_tls(&ctx.greeting_cluster).as_ref(), timeout).await else { break };
            let thread = Thread { addr: addr.clone(), id: g.connection_id() };
            if let Some(r) = ctx.threads.register(g.connection_id(), thread) {
                g.slot = slot.take();
                return (Some((g, term)), r);
            }
        }
    }
    // baton's counter is far below thread ids only when the server restarted;
    // step past any live id.
    let mut id = fallback_id;
    loop {
        if let Some(r) = ctx.threads.register(id, Thread { addr: String::new(), id: 0 }) {
            return (None, r);
        }
        id = ctx.next_connection_id();
    }
}
