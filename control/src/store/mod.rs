//! The topology store: where each cluster's {primary, term, servers} lives.
//!
//! - [`file`]: the embedded default, one JSON file on one machine.
//! - [`etcd`]: shared by several proxies; compare-and-swap writes, a watch with
//!   re-list, and the connection the [`crate::peers`] coordination runs on.
//!
//! Readers never see the difference: [`Store::watch`] is the latest whole
//! [`Topology`], never a stream of events.

pub mod etcd;
pub mod file;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use etcd::EtcdStore;
pub use file::FileStore;

use crate::config::{ClusterConfig, TopologyConfig};
use crate::error::ControlError;
use crate::peers::Peers;
use crate::topology::{ClusterRecord, Topology};

/// The configured store. Cheap to clone.
#[derive(Clone)]
pub enum Store {
    File(FileStore),
    Etcd(EtcdStore),
}

impl Store {
    /// Open the configured store and start following it until `stop`. An etcd that
    /// cannot be reached here is an error (baton does not start on a guess).
    pub async fn open(cfg: &TopologyConfig, clusters: &[ClusterConfig], stop: CancellationToken) -> Result<Store, ControlError> {
        match cfg.store.as_str() {
            "etcd" => Ok(Store::Etcd(EtcdStore::connect(cfg, clusters, stop).await?)),
            _ => {
                let store = FileStore::open(&cfg.path, clusters)?;
                let poll = Duration::from_millis(cfg.poll_interval_ms);
                tokio::spawn(store.clone().poll(poll, async move { stop.cancelled().await }));
                Ok(Store::File(store))
            }
        }
    }

    /// The latest topology, as watched state.
    pub fn watch(&self) -> watch::Receiver<Arc<Topology>> {
        match self {
            Store::File(s) => s.watch(),
            Store::Etcd(s) => s.watch(),
        }
    }

    /// The latest topology now.
    pub fn current(&self) -> Arc<Topology> {
        match self {
            Store::File(s) => s.current(),
            Store::Etcd(s) => s.current(),
        }
    }

    /// Replace one cluster's record; the term must be newer than the stored one.
    pub async fn put_cluster(&self, name: &str, record: ClusterRecord) -> Result<(), ControlError> {
        match self {
            Store::File(s) => s.put_cluster(name, record).await,
            Store::Etcd(s) => s.put_cluster(name, record).await,
        }
    }

    /// "file" or "etcd".
    pub fn kind(&self) -> &'static str {
        match self {
            Store::File(_) => "file",
            Store::Etcd(_) => "etcd",
        }
    }

    /// Why the store cannot be trusted with a change now (etcd unreachable), if so.
    /// A degraded proxy keeps serving with the last known topology.
    pub fn degraded(&self) -> Option<String> {
        match self {
            Store::File(_) => None,
            Store::Etcd(s) => s.degraded(),
        }
    }

    /// The other proxies sharing this store (etcd only, once registered).
    pub fn peers(&self) -> Option<Arc<Peers>> {
        match self {
            Store::File(_) => None,
            Store::Etcd(s) => s.peers(),
        }
    }

    /// Whether this proxy holds the orchestrator role: always on the file store.
    pub fn is_orchestrator(&self) -> bool {
        match self {
            Store::File(_) => true,
            Store::Etcd(s) => s.peers().is_some_and(|p| p.is_orchestrator()),
        }
    }

    /// Whether this proxy may change servers on its own initiative (automatic
    /// failover, fencing, rejoin): the orchestrator, and only while its store answers.
    pub fn may_act(&self) -> bool {
        self.degraded().is_none() && self.is_orchestrator()
    }
}
