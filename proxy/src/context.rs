//! What every session shares: settings, users, the watched topology and the
//! per-cluster runtime state. Passed as a handle (`Arc<ProxyContext>`), never global.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use baton_control::cluster::Registry;
use baton_control::config::Config;
use baton_control::credentials::PasswordHash;
use baton_control::Topology;
use tokio::sync::watch;

/// A user allowed to connect.
#[derive(Debug, Clone)]
pub struct UserEntry {
    pub hash: PasswordHash,
    pub cluster: String,
}

/// Data-path limits, from `[server]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub backend_connect_timeout: Duration,
    pub max_allowed_packet: usize,
    pub server_version: String,
}

/// Shared by all sessions.
pub struct ProxyContext {
    /// Swapped whole on a config reload; sessions take a copy when they start.
    limits: RwLock<Arc<Limits>>,
    users: RwLock<Arc<HashMap<String, UserEntry>>>,
    pub topology: watch::Receiver<Arc<Topology>>,
    /// Per-cluster gate, acknowledged GTIDs and settings, shared with the control plane.
    pub clusters: Registry,
    pub metrics: Arc<baton_control::metrics::Metrics>,
    /// Client connection ids -> current backend threads (for KILL).
    pub threads: Arc<crate::threads::Threads>,
    /// The cluster whose primary greets a client before its user (and so its
    /// cluster) is known: the first configured.
    pub greeting_cluster: String,
    /// Bounds the backend connections greeted before their client logged in (a
    /// flood of clients that never log in must not use up the server's
    /// connections); beyond it a client's id is baton's own counter.
    pub greetings: Arc<tokio::sync::Semaphore>,
    started: std::time::Instant,
    next_conn_id: AtomicU32,
}

/// Most backend connections greeted ahead of a client login at once.
pub const MAX_PENDING_GREETINGS: usize = 32;

impl ProxyContext {
    /// Build from a validated config and the topology watch.
    pub fn new(config: &Config, topology: watch::Receiver<Arc<Topology>>, clusters: Registry, metrics: Arc<baton_control::metrics::Metrics>) -> Self {
        ProxyContext {
            limits: RwLock::new(Arc::new(limits_of(config))),
            users: RwLock::new(Arc::new(users_of(config))),
            topology,
            clusters,
            metrics,
            threads: Arc::default(),
            greeting_cluster: config.clusters.first().map(|c| c.name.clone()).unwrap_or_default(),
            greetings: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_GREETINGS)),
            started: std::time::Instant::now(),
            next_conn_id: AtomicU32::new(1),
        }
    }

    /// The limits now (a reload swaps them for new sessions).
    pub fn limits(&self) -> Arc<Limits> {
        self.limits.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The users now.
    pub fn users(&self) -> Arc<HashMap<String, UserEntry>> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Apply a reloaded, validated config's users and limits (new sessions see them).
    pub fn reload(&self, config: &Config) {
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(limits_of(config));
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(users_of(config));
    }

    /// How long this proxy has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// baton's own counter, for logs and for a client whose greeting could not
    /// carry a backend thread id (no primary reachable at connect).
    pub fn next_connection_id(&self) -> u32 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The primary the topology names for `cluster` now, with its term.
    pub fn primary_of(&self, cluster: &str) -> Option<(String, u64)> {
        self.topology.borrow().cluster(cluster).map(|c| (c.primary.clone(), c.term))
    }
}

fn limits_of(config: &Config) -> Limits {
    let s = &config.server;
    Limits {
        handshake_timeout: Duration::from_millis(s.handshake_timeout_ms),
        backend_connect_timeout: Duration::from_millis(s.backend_connect_timeout_ms),
        max_allowed_packet: s.max_allowed_packet,
        server_version: s.server_version.clone(),
    }
}

fn users_of(config: &Config) -> HashMap<String, UserEntry> {
    config
        .users
        .iter()
        .map(|u| {
            let hash = u.hash().expect("validated config");
            (u.name.clone(), UserEntry { hash, cluster: config.cluster_of(u).to_string() })
        })
        .collect()
}
