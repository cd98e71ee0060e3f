//! The etcd topology store: several proxies share one record per cluster.
//!
//! - Key `{prefix}/clusters/{name}` holds the [`ClusterRecord`] as JSON.
//! - Every write is a compare-and-swap on the key's `mod_revision` (and the term
//!   must grow), so two writers can never both win, and nothing changes without
//!   the etcd majority that commits the transaction.
//! - Reads are watched state: list the prefix, then watch from the next revision;
//!   on compaction, cancellation or a lost connection, list again. A record never
//!   goes back to an older term.
//! - While etcd does not answer, the last known topology keeps serving and the
//!   store reports itself degraded ([`EtcdStore::degraded`]).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions};
use tokio::sync::{watch, Mutex};
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterConfig, TopologyConfig};
use crate::error::ControlError;
use crate::peers::Peers;
use crate::topology::{ClusterRecord, Topology};

/// Handle to the etcd store. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    prefix: String,
    endpoints: String,
    timeout: Duration,
    lease_ttl: i64,
    tx: watch::Sender<Arc<Topology>>,
    health: std::sync::Mutex<Health>,
    write_lock: Mutex<()>,
    peers: OnceLock<Arc<Peers>>,
}

impl EtcdStore {
    /// Connect, create a record (term 1) for every configured cluster etcd does not
    /// know yet, read the topology, and follow it until `stop`.
    pub async fn connect(cfg: &TopologyConfig, clusters: &[ClusterConfig], stop: CancellationToken) -> Result<EtcdStore, ControlError> {
        let endpoints: Vec<String> = cfg.endpoints.iter().map(|e| if e.starts_with("http://") { e.clone() } else { format!("http://{e}") }).collect();
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let unreachable = |message: String| ControlError::EtcdUnreachable { endpoints: cfg.endpoints.join(", "), message };
        let opts = ConnectOptions::new().with_connect_timeout(timeout).with_keep_alive(Duration::from_secs(1), timeout);
        let client = tokio::time::timeout(timeout, Client::connect(&endpoints, Some(opts)))
            .await
            .map_err(|_| unreachable(format!("no answer within {} ms", cfg.timeout_ms)))?
            .map_err(|e| unreachable(e.to_string()))?;
        let (tx, _) = watch::channel(Arc::new(Topology::default()));
        let health = std::sync::Mutex::new(Health { last_ok: Instant::now(), last_error: None, reported: false });
        let store = EtcdStore {
            inner: Arc::new(Inner {
                client,
                prefix: cfg.prefix.clone(),
                endpoints: cfg.endpoints.join(", "),
                timeout,
                lease_ttl: cfg.lease_ttl_s as i64,
                tx,
                health,
                write_lock: Mutex::new(()),
                peers: OnceLock::new(),
            }),
        };
        for c in clusters {
            let record = ClusterRecord { primary: c.primary.clone(), term: 1, servers: c.servers.clone() };
            let key = store.record_key(&c.name);
            let txn = Txn::new().when([Compare::version(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
                key,
                serde_json::to_vec(&record).expect("record serialises"),
                None,
            )]);
            store.timed(store.client().txn(txn)).await.map_err(|e| unreachable(e.to_string()))?;
        }
        let (topo, revision) = store.list().await.map_err(|e| unreachable(e.to_string()))?;
        store.inner.tx.send_replace(Arc::new(topo));
        tokio::spawn(store.clone().follow(revision, stop));
        Ok(store)
    }

    /// A client on the shared connection.
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// `{prefix}/{rest}`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.inner.prefix)
    }

    fn record_key(&self, cluster: &str) -> String {
        self.key(&format!("clusters/{cluster}"))
    }

    /// The registration lease's TTL, in seconds.
    pub fn lease_ttl(&self) -> i64 {
        self.inner.lease_ttl
    }

    /// Each etcd request's deadline.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Run one etcd request with the configured deadline.
    pub async fn timed<T>(&self, f: impl std::future::Future<Output = Result<T, etcd_client::Error>>) -> Result<T, ControlError> {
        match tokio::time::timeout(self.inner.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ControlError::Etcd(e.to_string())),
            Err(_) => Err(ControlError::Etcd(format!("no answer from {} within {} ms", self.inner.endpoints, self.inner.timeout.as_millis()))),
        }
    }

    /// The latest topology, as watched state.
    pub fn watch(&self) -> watch::Receiver<Arc<Topology>> {
        self.inner.tx.subscribe()
    }

    /// The latest topology now.
    pub fn current(&self) -> Arc<Topology> {
        self.inner.tx.borrow().clone()
    }

    /// Why etcd cannot be used now, if it cannot: the last request failed and none
    /// succeeded for at least one request timeout (one failed request after a
    /// reconnect is not an outage).
    pub fn degraded(&self) -> Option<String> {
        self.inner.health.lock().unwrap().degraded(self.inner.timeout)
    }

    /// Record whether etcd answered a request (watch, lease renewal).
    pub fn set_health(&self, result: Result<(), String>) {
        let mut h = self.inner.health.lock().unwrap();
        match result {
            Ok(()) => {
                h.last_ok = Instant::now();
                h.last_error = None;
            }
            Err(e) => h.last_error = Some((Instant::now(), e)),
        }
        let now = h.degraded(self.inner.timeout);
        if now.is_some() != h.reported {
            h.reported = now.is_some();
            match now {
                Some(why) => tracing::warn!(endpoints = %self.inner.endpoints, "etcd unavailable, serving with the last known topology: {why}"),
                None => tracing::info!(endpoints = %self.inner.endpoints, "etcd available again"),
            }
        }
    }

    /// The coordination with other proxies, once started.
    pub fn peers(&self) -> Option<Arc<Peers>> {
        self.inner.peers.get().cloned()
    }

    /// Attach the coordination (done once, at startup).
    pub fn set_peers(&self, peers: Arc<Peers>) {
        let _ = self.inner.peers.set(peers);
    }

    /// Compare-and-swap one cluster's record to a newer term.
    pub async fn put_cluster(&self, name: &str, record: ClusterRecord) -> Result<(), ControlError> {
        let _guard = self.inner.write_lock.lock().await;
        let key = self.record_key(name);
        let resp = self.timed(self.client().get(key.clone(), None)).await?;
        let kv = resp.kvs().first().ok_or_else(|| ControlError::UnknownCluster(name.into()))?;
        let current = parse(kv.value(), &key)?;
        if record.term <= current.term {
            return Err(ControlError::StaleTerm { cluster: name.into(), attempted: record.term, current: current.term });
        }
        let txn = Txn::new().when([Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision())]).and_then([TxnOp::put(
            key.clone(),
            serde_json::to_vec(&record).expect("record serialises"),
            None,
        )]);
        let sent = self.timed(self.client().txn(txn)).await;
        if !matches!(&sent, Ok(r) if r.succeeded()) {
            // Refused (someone else wrote in between) or no answer (it may have been
            // applied): what is stored now decides.
            let now = match self.timed(self.client().get(key.clone(), None)).await {
                Ok(now) => now,
                Err(e) => {
                    return Err(match sent {
                        Ok(_) => e,
                        Err(first) => ControlError::OutcomeUnknown(format!("{first}; then {e}")),
                    })
                }
            };
            let stored = now.kvs().first().map(|kv| parse(kv.value(), &key)).transpose()?;
            if stored.as_ref() != Some(&record) {
                let term = stored.map_or(0, |r| r.term);
                return Err(ControlError::StaleTerm { cluster: name.into(), attempted: record.term, current: term });
            }
        }
        self.merge(name, record);
        Ok(())
    }

    /// Every cluster record and the revision they were read at.
    async fn list(&self) -> Result<(Topology, i64), ControlError> {
        let prefix = self.key("clusters/");
        let resp = self.timed(self.client().get(prefix.clone(), Some(GetOptions::new().with_prefix()))).await?;
        let mut topo = Topology::default();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match parse(kv.value(), &key) {
                Ok(r) => {
                    topo.clusters.insert(key[prefix.len()..].to_string(), r);
                }
                Err(e) => tracing::warn!("ignoring {e}"),
            }
        }
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok((topo, revision))
    }

    /// Publish `record` unless the topology already holds a newer term.
    fn merge(&self, name: &str, record: ClusterRecord) {
        self.inner.tx.send_if_modified(|cur| match cur.clusters.get(name) {
            Some(r) if r.term > record.term || *r == record => false,
            _ => {
                let mut t = (**cur).clone();
                t.clusters.insert(name.to_string(), record.clone());
                *cur = Arc::new(t);
                true
            }
        });
    }

    /// Follow the records: watch from `revision + 1`; list again whenever the watch
    /// breaks (compaction, cancellation, connection lost).
    async fn follow(self, mut revision: i64, stop: CancellationToken) {
        let prefix = self.key("clusters/");
        let mut listed = true;
        loop {
            if !listed {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                match self.list().await {
                    Ok((topo, rev)) => {
                        for (name, r) in topo.clusters {
                            self.merge(&name, r);
                        }
                        revision = rev;
                        self.set_health(Ok(()));
                    }
                    Err(e) => {
                        self.set_health(Err(e.to_string()));
                        continue;
                    }
                }
            }
            listed = false;
            let opts = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
            let mut stream = match self.timed(self.client().watch(prefix.clone(), Some(opts))).await {
                Ok(s) => s,
                Err(e) => {
                    self.set_health(Err(e.to_string()));
                    continue;
                }
            };
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = stream.message() => m,
                };
                match msg {
                    Ok(Some(resp)) => {
                        if resp.canceled() || resp.compact_revision() > 0 {
                            tracing::info!("etcd watch ended ({}); listing again", resp.cancel_reason());
                            break;
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            revision = revision.max(kv.mod_revision());
                            if ev.event_type() != EventType::Put {
                                continue;
                            }
                            let key = String::from_utf8_lossy(kv.key()).into_owned();
                            match parse(kv.value(), &key) {
                                Ok(r) => self.merge(&key[prefix.len()..], r),
                                Err(e) => tracing::warn!("ignoring {e}"),
                            }
                        }
                    }
                    Ok(None) => {
                        self.set_health(Err("etcd closed the watch".into()));
                        break;
                    }
                    Err(e) => {
                        self.set_health(Err(e.to_string()));
                        break;
                    }
                }
            }
        }
    }
}

/// When etcd last answered, and the last failure since.
struct Health {
    last_ok: Instant,
    last_error: Option<(Instant, String)>,
    reported: bool,
}

impl Health {
    fn degraded(&self, grace: Duration) -> Option<String> {
        match &self.last_error {
            Some((_, why)) if self.last_ok.elapsed() >= grace => Some(why.clone()),
            _ => None,
        }
    }
}

fn parse(bytes: &[u8], key: &str) -> Result<ClusterRecord, ControlError> {
    serde_json::from_slice(bytes).map_err(|e| ControlError::Etcd(format!("record {key} is not valid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_after_a_success_is_not_an_outage() {
        let grace = Duration::from_millis(200);
        let mut h = Health { last_ok: Instant::now(), last_error: None, reported: false };
        assert_eq!(h.degraded(grace), None);
        h.last_error = Some((Instant::now(), "connection reset".into()));
        assert_eq!(h.degraded(grace), None, "within the grace after a success");
        h.last_ok = Instant::now() - Duration::from_secs(1);
        assert_eq!(h.degraded(grace).as_deref(), Some("connection reset"));
    }
}
