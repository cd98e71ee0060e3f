//! One cluster's shared control state: its gate, the GTIDs baton acknowledged on
//! it, the latest leadership-condition report, and the settings the supervisor
//! and the orchestrator need. Built from config; shared by the data path, the
//! supervisor, the orchestrator and the admin port.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Mutex};

use crate::conditions::ConditionsReport;
use crate::config::{ClusterConfig, Config};
use crate::gate::{BufferLimits, Gate};
use crate::gtid::AckedGtids;
use crate::server::{AdminLogin, Connect, MariaDbConnect, Server, ServerError};

/// Per-cluster settings from config (swappable on reload).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub servers: Vec<String>,
    pub durability: String,
    pub admin: AdminLogin,
    pub repl_user: String,
    pub repl_password: String,
    pub prepare_timeout: Duration,
    pub transaction_grace: Duration,
    pub catchup_timeout: Duration,
    pub check_interval: Duration,
    pub max_failover_duration: Duration,
    pub auto_failover: bool,
    /// Whether `admin_user` is configured: without it the control plane cannot
    /// check or change servers (no health checks, no reparents).
    pub admin_configured: bool,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub failure_threshold: u32,
}

/// The shared state of one cluster.
pub struct ClusterHandle {
    pub name: String,
    pub gate: Arc<Gate>,
    pub acked: AckedGtids,
    pub conditions: watch::Sender<ConditionsReport>,
    settings: RwLock<ClusterSettings>,
    /// Held by the reparent in progress (one at a time per cluster).
    pub reparent_lock: Mutex<()>,
    /// The running or last reparent's report, updated at each step (progress).
    pub last_reparent: std::sync::Mutex<Option<crate::reparent::ReparentReport>>,
    /// The health monitor's latest view of every server.
    pub health: std::sync::Mutex<crate::health::HealthReport>,
    /// How the control plane reaches this cluster's servers (the seam: MariaDB in
    /// production, an in-memory cluster in unit tests).
    pub sql: Arc<dyn Connect>,
    /// The operator's cancel switch for the reparent or failover in progress.
    pub cancel: crate::run::CancelSwitch,
    /// The data path's backend connections, closed when a failover begins.
    pub fence: Arc<crate::fence::BackendFence>,
    /// (episode, address) of an old primary a failover could not revoke and
    /// fenced instead: the supervisor revokes it if it answers again, writable,
    /// during that episode (a hung primary that wakes).
    pub fenced_primary: std::sync::Mutex<Option<(u64, String)>>,
    /// Transaction replay's outcomes (the data path counts them).
    pub replay: crate::replay::ReplayCounters,
    /// Replays running now: new work waits for them (bounded).
    pub replaying: crate::replay::ReplayPriority,
}

/// All clusters by name.
pub type Registry = HashMap<String, Arc<ClusterHandle>>;

pub fn buffer_limits(config: &Config) -> BufferLimits {
    let b = &config.buffer;
    BufferLimits {
        window: Duration::from_millis(b.window_ms),
        size: b.size,
        max_failover_duration: Duration::from_millis(b.max_failover_duration_ms),
        min_time_between_failovers: Duration::from_millis(b.min_time_between_failovers_ms),
        drain_concurrency: b.drain_concurrency,
    }
}

/// The control plane's TLS to a cluster's servers, as its `tls` mode says
/// (`verify_ca` trusts `tls_ca` and skips the name check; `required` checks nothing).
pub fn admin_tls(c: &ClusterConfig) -> Option<mysql_async::SslOpts> {
    use crate::config::BackendTls;
    let roots = || c.tls_ca.clone().map(|p| vec![p.into()]).unwrap_or_default();
    let base = mysql_async::SslOpts::default().with_disable_built_in_roots(true);
    match c.tls {
        BackendTls::Disabled => None,
        BackendTls::Required => Some(base.with_danger_accept_invalid_certs(true).with_danger_skip_domain_validation(true)),
        BackendTls::VerifyCa => Some(base.with_root_certs(roots()).with_danger_skip_domain_validation(true)),
        BackendTls::VerifyIdentity => Some(base.with_root_certs(roots())),
    }
}

pub fn cluster_settings(config: &Config, c: &ClusterConfig) -> ClusterSettings {
    let r = &config.reparent;
    ClusterSettings {
        servers: c.servers.clone(),
        durability: c.durability.clone(),
        admin: AdminLogin {
            user: c.admin_user.clone().unwrap_or_else(|| "admin".into()),
            password: c.admin_password().unwrap_or_default(),
            timeout: Duration::from_millis(r.admin_timeout_ms),
            tls: admin_tls(c),
        },
        repl_user: c.repl_user.clone(),
        repl_password: c.repl_password().unwrap_or_default(),
        prepare_timeout: Duration::from_millis(r.prepare_timeout_ms),
        transaction_grace: Duration::from_millis(r.transaction_grace_ms),
        catchup_timeout: Duration::from_millis(r.catchup_timeout_ms),
        check_interval: Duration::from_millis(r.check_interval_ms),
        max_failover_duration: Duration::from_millis(config.buffer.max_failover_duration_ms),
        auto_failover: c.auto_failover,
        admin_configured: c.admin_user.is_some(),
        health_interval: Duration::from_millis(config.health.interval_ms),
        health_timeout: Duration::from_millis(config.health.timeout_ms),
        failure_threshold: config.health.failure_threshold,
    }
}

impl ClusterHandle {
    pub fn settings(&self) -> ClusterSettings {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_settings(&self, s: ClusterSettings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// A control-plane connection to `addr` with the cluster's admin login.
    pub async fn connect(&self, addr: &str) -> Result<Server, ServerError> {
        self.sql.connect(addr, &self.settings().admin).await
    }

    /// Like [`ClusterHandle::connect`] with another login (a shorter timeout).
    pub async fn connect_with(&self, addr: &str, login: &AdminLogin) -> Result<Server, ServerError> {
        self.sql.connect(addr, login).await
    }

    /// One cluster's handle with `sql` behind the seam (unit tests pass a fake).
    pub fn new(config: &Config, c: &ClusterConfig, sql: Arc<dyn Connect>) -> ClusterHandle {
        let (tx, _) = watch::channel(ConditionsReport::default());
        ClusterHandle {
            name: c.name.clone(),
            gate: Gate::new(buffer_limits(config)),
            acked: AckedGtids::default(),
            conditions: tx,
            settings: RwLock::new(cluster_settings(config, c)),
            reparent_lock: Mutex::new(()),
            last_reparent: std::sync::Mutex::new(None),
            health: std::sync::Mutex::new(Default::default()),
            sql,
            cancel: Default::default(),
            fence: Default::default(),
            fenced_primary: Default::default(),
            replay: Default::default(),
            replaying: Default::default(),
        }
    }
}

/// Build the registry from a validated config.
pub fn registry(config: &Config) -> Registry {
    config.clusters.iter().map(|c| (c.name.clone(), Arc::new(ClusterHandle::new(config, c, Arc::new(MariaDbConnect))))).collect()
}
