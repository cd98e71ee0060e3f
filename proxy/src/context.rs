//! What every session shares: settings, users, the watched topology and the
//! per-cluster runtime state. Passed as a handle (`Arc<ProxyContext>`), never global.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use baton_control::cluster::Registry;
use baton_control::config::{Config, Credential};
use baton_control::Topology;
use tokio::sync::watch;

use crate::auth::{BackendSecret, Password};
use crate::tls::{BackendTls, ServerTls};

/// A user allowed to connect.
#[derive(Debug, Clone)]
pub struct UserEntry {
    /// What the client must prove, in its method's format.
    pub credential: Credential,
    pub cluster: String,
    /// From `backend_password_file`: used for backend logins instead of what the
    /// client's proof gives.
    pub backend_password: Option<Password>,
    /// Logins without TLS are refused.
    pub require_tls: bool,
}

/// A `caching_sha2_password` fast-path entry: made by a full authentication,
/// dropped on reload (the server's cache works the same way).
#[derive(Debug, Clone)]
pub struct Sha2Cached {
    /// SHA256(SHA256(password)).
    pub double_hash: [u8; 32],
    /// What the full authentication gave for backend logins.
    pub secret: BackendSecret,
    /// The credential the password was checked against: the entry serves only
    /// while the user still has it (a reload that changes it retires the entry,
    /// also one written back by an exchange that straddled the reload).
    pub credential: Credential,
}

/// Data-path limits, from `[server]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub backend_connect_timeout: Duration,
    pub max_allowed_packet: usize,
    pub server_version: String,
    /// `[transaction_replay]`, when enabled.
    pub replay: Option<ReplayLimits>,
}

/// `[transaction_replay]` as the data path uses it.
#[derive(Debug, Clone)]
pub struct ReplayLimits {
    pub max_bytes: usize,
    pub max_attempts: u32,
    pub timeout: Duration,
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
    /// `[server.tls]` now (swapped by reload).
    pub tls: ServerTls,
    /// Each cluster's backend TLS now.
    backend_tls: RwLock<Arc<HashMap<String, BackendTls>>>,
    /// `caching_sha2_password` fast-path cache, by user.
    pub sha2_cache: Mutex<HashMap<String, Sha2Cached>>,
    started: std::time::Instant,
    next_conn_id: AtomicU32,
}

/// Most backend connections greeted ahead of a client login at once.
pub const MAX_PENDING_GREETINGS: usize = 32;

impl ProxyContext {
    /// Build from a validated config and the topology watch. Err: a certificate,
    /// key or secret file that does not load (the message names it).
    pub fn new(
        config: &Config,
        topology: watch::Receiver<Arc<Topology>>,
        clusters: Registry,
        metrics: Arc<baton_control::metrics::Metrics>,
    ) -> Result<Self, String> {
        let loaded = Loaded::from(config)?;
        Ok(ProxyContext {
            limits: RwLock::new(Arc::new(limits_of(config))),
            users: RwLock::new(Arc::new(loaded.users)),
            tls: loaded.server_tls,
            backend_tls: RwLock::new(Arc::new(loaded.backend_tls)),
            sha2_cache: Mutex::default(),
            topology,
            clusters,
            metrics,
            threads: Arc::default(),
            greeting_cluster: config.clusters.first().map(|c| c.name.clone()).unwrap_or_default(),
            greetings: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_GREETINGS)),
            started: std::time::Instant::now(),
            next_conn_id: AtomicU32::new(1),
        })
    }

    /// Load everything `config` names that lives in files (certificates, keys,
    /// secrets), as start and reload would: what `baton --check-config` runs.
    pub fn check(config: &Config) -> Result<(), String> {
        Loaded::from(config).map(|_| ())
    }

    /// The TLS settings towards `cluster`'s servers (None: plaintext).
    pub fn backend_tls(&self, cluster: &str) -> Option<BackendTls> {
        self.backend_tls.read().unwrap_or_else(|p| p.into_inner()).get(cluster).cloned()
    }

    /// The limits now (a reload swaps them for new sessions).
    pub fn limits(&self) -> Arc<Limits> {
        self.limits.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The users now.
    pub fn users(&self) -> Arc<HashMap<String, UserEntry>> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Apply a reloaded, validated config's users, limits and TLS settings (new
    /// sessions and connections see them). Err: nothing was applied.
    pub fn reload(&self, config: &Config) -> Result<(), String> {
        let loaded = Loaded::from(config)?;
        self.tls.adopt(loaded.server_tls);
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(limits_of(config));
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded.users);
        *self.backend_tls.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded.backend_tls);
        self.sha2_cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(())
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
        replay: config.transaction_replay.enabled.then(|| ReplayLimits {
            max_bytes: config.transaction_replay.max_bytes,
            max_attempts: config.transaction_replay.max_attempts,
            timeout: Duration::from_millis(config.transaction_replay.timeout_ms),
        }),
    }
}

/// What a config names in files, loaded and checked.
struct Loaded {
    users: HashMap<String, UserEntry>,
    server_tls: ServerTls,
    backend_tls: HashMap<String, BackendTls>,
}

impl Loaded {
    fn from(config: &Config) -> Result<Loaded, String> {
        config.check_secret_files()?;
        let mut users = HashMap::new();
        for u in &config.users {
            let credential = u.credential().map_err(|e| format!("user {:?}: {e}", u.name))?;
            let backend_password =
                u.backend_password().map_err(|e| format!("user {:?}: backend_password_file: {e}", u.name))?.map(|p| Password::new(p.into_bytes()));
            let entry = UserEntry { credential, cluster: config.cluster_of(u).to_string(), backend_password, require_tls: u.require_tls };
            users.insert(u.name.clone(), entry);
        }
        let server_tls = ServerTls::new(config.server.tls.as_ref()).map_err(|e| format!("server.tls: {e}"))?;
        let mut backend_tls = HashMap::new();
        for c in &config.clusters {
            if let Some(t) = BackendTls::from_cluster(c).map_err(|e| format!("cluster {:?}: tls: {e}", c.name))? {
                backend_tls.insert(c.name.clone(), t);
            }
        }
        Ok(Loaded { users, server_tls, backend_tls })
    }
}
