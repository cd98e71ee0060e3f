//! baton: wiring of the data path ([`baton_proxy`]) and the control plane
//! ([`baton_control`]) into one process, plus the admin HTTP port.
//!
//! [`start`] binds both listeners and returns a [`Running`] handle; `main.rs` only
//! parses the command line and turns signals into [`Running::shutdown`] calls.
//! Tests start baton in-process the same way, on port 0.

pub mod admin;
pub mod ctl;
pub mod forward;
pub mod reload;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use baton_control::{Config, Store};
use baton_proxy::{ProxyContext, Shutdown};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running baton.
pub struct Running {
    /// Where applications connect (MySQL protocol).
    pub mysql_addr: SocketAddr,
    /// The admin HTTP port.
    pub admin_addr: SocketAddr,
    /// The topology store (for the control plane and tests).
    pub store: Store,
    /// Shared data-path state.
    pub proxy: Arc<ProxyContext>,
    /// Applies config reloads (SIGHUP, the admin API).
    pub reloader: Arc<reload::Reloader>,
    shutdown: Shutdown,
    background: CancellationToken,
    grace: Duration,
}

/// `baton --check-config --probe`: log in to every server of every cluster with
/// the control plane's admin account and with the replication account (as a
/// replica being repointed would), and as each user that has a
/// `backend_password_file` on its cluster's seed primary. One line per login:
/// what, and Ok or why not. With the admin account it also reads
/// `@@gtid_strict_mode` and `@@log_slave_updates`, which errant detection and
/// promotion rely on (README "Errant servers"): OFF is a failed line.
pub async fn probe(config: &Config) -> Vec<(String, Result<(), String>)> {
    use baton_control::server::{AdminLogin, Connect, MariaDb, MariaDbConnect};
    let mut out = Vec::new();
    for c in &config.clusters {
        let settings = baton_control::cluster::cluster_settings(config, c);
        let repl = AdminLogin { user: settings.repl_user.clone(), password: settings.repl_password.clone(), ..settings.admin.clone() };
        for addr in &c.servers {
            if let Ok(mut s) = MariaDb::connect(addr, &settings.admin).await {
                for (var, why) in [
                    ("gtid_strict_mode", "an errant transaction could hide behind later ones"),
                    ("log_slave_updates", "a replica's binlog would not have what it applied; promoted, its replicas could not follow it"),
                ] {
                    let r = match s.scalar(&format!("SELECT @@{var}")).await {
                        Ok(v) if v == "1" => Ok(()),
                        Ok(_) => Err(format!("OFF: set {var} = ON ({why})")),
                        Err(e) => Err(e.to_string()),
                    };
                    out.push((format!("cluster {} server {addr}: {var}", c.name), r));
                }
            }
            for (role, login) in [("admin", &settings.admin), ("replication", &repl)] {
                let r = match MariaDbConnect.connect(addr, login).await {
                    Ok(s) => {
                        s.close().await;
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                };
                out.push((format!("cluster {} server {addr}: {role} account {:?}", c.name, login.user), r));
            }
        }
    }
    // Users whose backend login uses backend_password_file: that password, on
    // their cluster's primary (a wrong one shows only as 1045 at login).
    for u in &config.users {
        let Ok(Some(password)) = u.backend_password() else { continue };
        let Some(c) = config.clusters.iter().find(|c| c.name == config.cluster_of(u)) else { continue };
        let settings = baton_control::cluster::cluster_settings(config, c);
        let login = AdminLogin { user: u.name.clone(), password, ..settings.admin.clone() };
        let r = match MariaDbConnect.connect(&c.primary, &login).await {
            Ok(s) => {
                s.close().await;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        };
        out.push((format!("cluster {} server {}: user {:?} with its backend_password_file", c.name, c.primary, u.name), r));
    }
    out
}

/// Bind the listeners and start serving (no config file: reload is unavailable).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with_path(config, None).await
}

/// Bind the listeners and start serving; `path` is re-read on reload.
pub async fn start_with_path(config: Config, path: Option<std::path::PathBuf>) -> anyhow::Result<Running> {
    let background = CancellationToken::new();
    let store = Store::open(&config.topology, &config.clusters, background.clone()).await.context("opening the topology store")?;
    let clusters = baton_control::cluster::registry(&config);
    let names: Vec<String> = config.clusters.iter().map(|c| c.name.clone()).collect();
    let metrics = Arc::new(baton_control::metrics::Metrics::new(&names));
    {
        let (metrics, stop) = (metrics.clone(), background.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(baton_control::metrics::UPKEEP_INTERVAL) => metrics.upkeep(),
                }
            }
        });
    }
    for handle in clusters.values() {
        tokio::spawn(baton_control::supervisor::supervise(handle.clone(), store.watch(), background.clone()));
        tokio::spawn(baton_control::health::monitor(handle.clone(), store.clone(), metrics.clone(), background.clone()));
    }
    let proxy = Arc::new(ProxyContext::new(&config, store.watch(), clusters.clone(), metrics.clone()).map_err(anyhow::Error::msg)?);
    let listener =
        TcpListener::bind(&config.server.listen).await.with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    let admin = TcpListener::bind(&config.server.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.admin_listen)", config.server.admin_listen))?;
    let mysql_addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    if let Store::Etcd(etcd) = &store {
        baton_control::peers::Peers::start(etcd, admin_addr, clusters.clone(), background.clone());
    }
    let shutdown = Shutdown::default();
    // Sessions run on their own threads, one runtime each (see baton_proxy::workers).
    let threads = match config.server.worker_threads {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    };
    let workers = Arc::new(baton_proxy::Workers::start(threads, background.clone()).context("starting session threads")?);
    tokio::spawn(baton_proxy::serve(listener, proxy.clone(), config.server.max_connections, shutdown.clone(), workers));
    let reloader = Arc::new(reload::Reloader::new(path, config.clone(), proxy.clone(), clusters.clone()));
    let admin_state = admin::AdminState { store: store.clone(), clusters, reloader: reloader.clone(), metrics };
    tokio::spawn(admin::serve(admin, admin_state, background.clone()));
    tracing::info!(%mysql_addr, %admin_addr, "baton serving");
    Ok(Running {
        mysql_addr,
        admin_addr,
        store,
        proxy,
        reloader,
        shutdown,
        background,
        grace: Duration::from_millis(config.server.shutdown_grace_ms),
    })
}

impl Running {
    /// Stop accepting, give sessions `grace` to finish, then close the rest with
    /// ERR 1053. Returns once every session has ended.
    pub async fn shutdown(self, grace: Option<Duration>) {
        let grace = grace.unwrap_or(self.grace);
        self.shutdown.stop_accepting.cancel();
        self.shutdown.sessions.close();
        if tokio::time::timeout(grace, self.shutdown.sessions.wait()).await.is_err() {
            tracing::info!(open = self.shutdown.sessions.len(), "grace period over; closing sessions");
            self.shutdown.close_sessions.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.shutdown.sessions.wait()).await;
        }
        self.background.cancel();
    }

    /// Number of client sessions open now.
    pub fn sessions(&self) -> usize {
        self.shutdown.sessions.len()
    }
}
