//! Config reload (`POST /api/v1/config/reload`, SIGHUP): parse, validate, and swap
//! what can change at run time; a bad file is refused and the running config kept.
//!
//! Changes at run time: users (and their secret files), data-path limits (new
//! sessions), `[server.tls]` certificates and the clusters' TLS (new connections),
//! buffer limits, reparent timings, cluster settings (servers, credentials,
//! durability), the admin token. Needs a restart: listeners, worker threads, the topology store, the set of clusters.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use baton_control::cluster::{buffer_limits, cluster_settings, Registry};
use baton_control::Config;
use baton_proxy::ProxyContext;

/// Everything a reload touches.
pub struct Reloader {
    pub path: Option<PathBuf>,
    current: Mutex<Config>,
    proxy: Arc<ProxyContext>,
    clusters: Registry,
    pub token: Arc<RwLock<Option<Arc<str>>>>,
}

/// The admin token: BATON_ADMIN_TOKEN, else `[server] admin_token`.
pub fn admin_token(config: &Config) -> Option<Arc<str>> {
    std::env::var("BATON_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()).or(config.server.admin_token.clone()).map(Arc::from)
}

impl Reloader {
    pub fn new(path: Option<PathBuf>, config: Config, proxy: Arc<ProxyContext>, clusters: Registry) -> Reloader {
        let token = Arc::new(RwLock::new(admin_token(&config)));
        Reloader { path, current: Mutex::new(config), proxy, clusters, token }
    }

    /// Re-read the config file and apply it. Err (with the reason) leaves everything as it was.
    pub fn reload(&self) -> Result<String, String> {
        let path = self.path.as_ref().ok_or("baton was started without a config file; nothing to reload")?;
        let new = Config::load(path).map_err(|e| e.to_string())?;
        self.apply(new)
    }

    /// Apply an already parsed and validated config.
    pub fn apply(&self, new: Config) -> Result<String, String> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let restart = |what: &str| Err(format!("{what} changed: that needs a restart; nothing was applied"));
        if new.server.listen != current.server.listen {
            return restart("server.listen");
        }
        if new.server.admin_listen != current.server.admin_listen {
            return restart("server.admin_listen");
        }
        if new.server.worker_threads != current.server.worker_threads {
            return restart("server.worker_threads");
        }
        let t = |c: &Config| {
            (
                c.topology.store.clone(),
                c.topology.path.clone(),
                c.topology.endpoints.clone(),
                c.topology.prefix.clone(),
                c.topology.lease_ttl_s,
                c.topology.timeout_ms,
            )
        };
        if t(&new) != t(&current) {
            return restart("[topology]");
        }
        let names = |c: &Config| c.clusters.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        if names(&new) != names(&current) {
            return restart("the set of [[clusters]]");
        }
        self.proxy.reload(&new)?;
        for c in &new.clusters {
            if let Some(h) = self.clusters.get(&c.name) {
                h.set_settings(cluster_settings(&new, c));
                h.gate.set_limits(buffer_limits(&new));
            }
        }
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = admin_token(&new);
        let summary = format!("reloaded: {} user(s), {} cluster(s)", new.users.len(), new.clusters.len());
        tracing::info!("{summary}");
        *current = new;
        Ok(summary)
    }
}
