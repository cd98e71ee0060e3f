//! Several proxies on one etcd: who is alive, who orchestrates, and reparents
//! announced to all of them.
//!
//! - Registration: each proxy holds a lease (`topology.lease_ttl_s`) and a key
//!   `{prefix}/members/{id}` under it, renewed every second. A proxy that dies
//!   disappears when its lease expires.
//! - Orchestrator: `{prefix}/orchestrator` is created under the holder's lease by
//!   whoever finds it free (a compare-and-swap on its version), so at most one proxy
//!   runs reparents; when it dies, the key expires and another takes the role.
//!   Other proxies forward reparent requests to it (the admin port does).
//! - Announcements: before revoking the old primary, the orchestrator writes
//!   `{prefix}/announce/{cluster}`; every proxy that sees it starts buffering,
//!   waits for its open transactions (the grace period), and acknowledges under
//!   `{prefix}/acks/{announcement}/{id}`. The orchestrator waits for every live
//!   proxy's acknowledgement (bounded); a proxy that missed the announcement is
//!   still stopped by the server-side revocation (it sees 1290 and buffers).
//!   An undone reparent is announced too, so the others release to the old primary.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cluster::Registry;
use crate::error::ControlError;
use crate::store::EtcdStore;

/// One registered proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    /// Its admin port, where forwarded reparent requests go.
    pub admin: String,
}

/// A reparent announced to every proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Announcement {
    pub id: String,
    /// The announcing proxy (the orchestrator).
    pub by: String,
    pub cluster: String,
    /// The term being left: proxies buffer until the topology names a newer one.
    pub term: u64,
    pub old_primary: String,
    /// "buffering", then "undone" (release to the old primary) or "done".
    pub state: String,
    /// How long each proxy waits for its open transactions before acknowledging.
    pub grace_ms: u64,
}

/// This proxy's membership. Shared; see the module docs.
pub struct Peers {
    store: EtcdStore,
    pub id: String,
    admin: String,
    lease: AtomicI64,
    orchestrator: std::sync::Mutex<Option<Member>>,
}

impl Peers {
    /// Register this proxy (admin port `admin`) and start following announcements
    /// for `clusters`, until `stop`.
    pub fn start(store: &EtcdStore, admin: SocketAddr, clusters: Registry, stop: CancellationToken) -> Arc<Peers> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let id = format!("{:08x}{:04x}", nanos as u32, std::process::id() as u16);
        let peers = Arc::new(Peers {
            store: store.clone(),
            id,
            admin: admin.to_string(),
            lease: AtomicI64::new(0),
            orchestrator: std::sync::Mutex::new(None),
        });
        store.set_peers(peers.clone());
        tokio::spawn(peers.clone().keep_registered(stop.clone()));
        tokio::spawn(peers.clone().follow_announcements(clusters, stop));
        peers
    }

    /// Whether this proxy holds the orchestrator role.
    pub fn is_orchestrator(&self) -> bool {
        self.orchestrator.lock().unwrap().as_ref().is_some_and(|m| m.id == self.id)
    }

    /// The orchestrator as last seen.
    pub fn orchestrator(&self) -> Option<Member> {
        self.orchestrator.lock().unwrap().clone()
    }

    /// Every registered proxy.
    pub async fn members(&self) -> Result<Vec<Member>, ControlError> {
        let prefix = self.store.key("members/");
        let resp = self.store.timed(self.store.client().get(prefix, Some(GetOptions::new().with_prefix()))).await?;
        Ok(resp.kvs().iter().filter_map(|kv| serde_json::from_slice(kv.value()).ok()).collect())
    }

    fn me(&self) -> Member {
        Member { id: self.id.clone(), admin: self.admin.clone() }
    }

    async fn keep_registered(self: Arc<Self>, stop: CancellationToken) {
        let tick = Duration::from_millis((self.store.lease_ttl() as u64 * 1000 / 3).clamp(200, 1000));
        let mut keeper = None;
        loop {
            let r = self.renew(&mut keeper).await;
            if let Err(e) = &r {
                keeper = None;
                tracing::debug!(error = %e, "etcd registration not renewed");
            }
            self.store.set_health(r.map_err(|e| e.to_string()));
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
        }
        // Leaving: give up the lease so the orchestrator role moves at once.
        let lease = self.lease.load(Ordering::SeqCst);
        if lease != 0 {
            let _ = self.store.timed(self.store.client().lease_revoke(lease)).await;
        }
    }

    /// Renew (or take again) the lease, and take the orchestrator role if free.
    async fn renew(&self, keeper: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>) -> Result<(), ControlError> {
        let store = &self.store;
        let mut lease = self.lease.load(Ordering::SeqCst);
        if lease != 0 {
            if keeper.is_none() {
                *keeper = Some(store.timed(store.client().lease_keep_alive(lease)).await?);
            }
            let (k, s) = keeper.as_mut().expect("set above");
            store.timed(k.keep_alive()).await?;
            let ttl = store.timed(s.message()).await?.map_or(0, |r| r.ttl());
            if ttl <= 0 {
                tracing::warn!(id = %self.id, "registration lease expired; registering again");
                lease = 0;
                *keeper = None;
            }
        }
        if lease == 0 {
            lease = store.timed(store.client().lease_grant(store.lease_ttl(), None)).await?.id();
            let me = serde_json::to_vec(&self.me()).expect("member serialises");
            store.timed(store.client().put(store.key(&format!("members/{}", self.id)), me, Some(PutOptions::new().with_lease(lease)))).await?;
            self.lease.store(lease, Ordering::SeqCst);
            tracing::info!(id = %self.id, admin = %self.admin, "registered in etcd");
        }
        let key = store.key("orchestrator");
        let me = serde_json::to_vec(&self.me()).expect("member serialises");
        let txn = Txn::new().when([Compare::version(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
            key.clone(),
            me,
            Some(PutOptions::new().with_lease(lease)),
        )]);
        let holder = if store.timed(store.client().txn(txn)).await?.succeeded() {
            Some(self.me())
        } else {
            let resp = store.timed(store.client().get(key, None)).await?;
            resp.kvs().first().and_then(|kv| serde_json::from_slice::<Member>(kv.value()).ok())
        };
        let mut cur = self.orchestrator.lock().unwrap();
        if *cur != holder {
            tracing::info!(me = %self.id, orchestrator = ?holder.as_ref().map(|m| &m.id), "orchestrator role");
            *cur = holder;
        }
        Ok(())
    }

    /// Announce a reparent of `cluster` leaving `term`; every proxy starts buffering.
    pub async fn announce(&self, cluster: &str, term: u64, old_primary: &str, grace: Duration) -> Result<Announcement, ControlError> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let a = Announcement {
            id: format!("{}.{term}.{:x}", self.id, nanos as u64),
            by: self.id.clone(),
            cluster: cluster.to_string(),
            term,
            old_primary: old_primary.to_string(),
            state: "buffering".into(),
            grace_ms: grace.as_millis() as u64,
        };
        self.put_announcement(&a).await?;
        Ok(a)
    }

    /// Mark an announcement "undone" or "done" (best effort: a proxy that misses it
    /// still converges through the conditions or the max failover duration).
    pub async fn settle(&self, a: &Announcement, state: &str) {
        let a = Announcement { state: state.to_string(), ..a.clone() };
        if let Err(e) = self.put_announcement(&a).await {
            tracing::warn!(error = %e, announcement = %a.id, "could not mark the announcement {state}");
        }
    }

    /// Write an announcement; one retry (a put is idempotent) rides over a reconnect.
    async fn put_announcement(&self, a: &Announcement) -> Result<(), ControlError> {
        let body = serde_json::to_vec(a).expect("announcement serialises");
        let key = self.store.key(&format!("announce/{}", a.cluster));
        if self.store.timed(self.store.client().put(key.clone(), body.clone(), None)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.store.timed(self.store.client().put(key, body, None)).await?;
        Ok(())
    }

    /// Wait until every other live proxy acknowledged `a` (buffering, open
    /// transactions finished or ended), at most `timeout`. Returns (acknowledged, expected).
    pub async fn wait_acks(&self, a: &Announcement, timeout: Duration) -> (Vec<String>, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let prefix = self.store.key(&format!("acks/{}/", a.id));
        let (mut acked, mut expected) = (Vec::new(), Vec::new());
        loop {
            if let Ok(members) = self.members().await {
                expected = members.into_iter().map(|m| m.id).filter(|id| *id != self.id).collect();
            }
            if let Ok(resp) = self.store.timed(self.store.client().get(prefix.clone(), Some(GetOptions::new().with_prefix()))).await {
                acked = resp.kvs().iter().map(|kv| String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned()).collect();
            }
            if expected.iter().all(|e| acked.contains(e)) || Instant::now() >= deadline {
                return (acked, expected);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ack(&self, a: &Announcement, active_left: usize) {
        let key = self.store.key(&format!("acks/{}/{}", a.id, self.id));
        let lease = self.lease.load(Ordering::SeqCst);
        let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        let body = format!("{{\"active_left\":{active_left}}}");
        if let Err(e) = self.store.timed(self.store.client().put(key, body, opts)).await {
            tracing::warn!(error = %e, announcement = %a.id, "could not acknowledge the announcement");
        }
    }

    /// Act on other proxies' announcements: list, then watch; list again on any break.
    async fn follow_announcements(self: Arc<Self>, clusters: Registry, stop: CancellationToken) {
        let prefix = self.store.key("announce/");
        let mut held: HashMap<String, (Arc<crate::cluster::ClusterHandle>, u64)> = HashMap::new();
        let mut seen: HashSet<String> = HashSet::new();
        loop {
            let listed = self.store.timed(self.store.client().get(prefix.clone(), Some(GetOptions::new().with_prefix()))).await;
            let revision = match listed {
                Ok(resp) => {
                    for kv in resp.kvs() {
                        if let Ok(a) = serde_json::from_slice::<Announcement>(kv.value()) {
                            self.handle(&clusters, a, &mut held, &mut seen);
                        }
                    }
                    resp.header().map_or(0, |h| h.revision())
                }
                Err(_) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            let opts = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
            let Ok(mut stream) = self.store.timed(self.store.client().watch(prefix.clone(), Some(opts))).await else {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            };
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = stream.message() => m,
                };
                let Ok(Some(resp)) = msg else { break };
                if resp.canceled() || resp.compact_revision() > 0 {
                    break;
                }
                for ev in resp.events() {
                    if ev.event_type() != EventType::Put {
                        continue;
                    }
                    if let Some(a) = ev.kv().and_then(|kv| serde_json::from_slice::<Announcement>(kv.value()).ok()) {
                        self.handle(&clusters, a, &mut held, &mut seen);
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    fn handle(
        self: &Arc<Self>,
        clusters: &Registry,
        a: Announcement,
        held: &mut HashMap<String, (Arc<crate::cluster::ClusterHandle>, u64)>,
        seen: &mut HashSet<String>,
    ) {
        if a.by == self.id {
            return;
        }
        let Some(cluster) = clusters.get(&a.cluster).cloned() else { return };
        match a.state.as_str() {
            "buffering" if !seen.contains(&a.id) => {
                seen.insert(a.id.clone());
                let term_now = self.store.current().cluster(&a.cluster).map_or(0, |r| r.term);
                if term_now != a.term {
                    return; // an announcement from a term already left
                }
                let reason = format!("reparent announced by proxy {}", a.by);
                if let Some(episode) = cluster.gate.begin(a.term, &a.old_primary, &reason, true) {
                    held.insert(a.id.clone(), (cluster.clone(), episode));
                }
                let me = self.clone();
                tokio::spawn(async move {
                    let left = cluster.gate.wait_inactive(Duration::from_millis(a.grace_ms)).await;
                    me.ack(&a, left).await;
                });
            }
            "undone" => {
                if let Some((c, episode)) = held.remove(&a.id) {
                    tracing::info!(cluster = %a.cluster, announcement = %a.id, "reparent undone by the orchestrator; releasing to the old primary");
                    c.gate.release(episode, crate::gate::Release::Undone);
                }
            }
            "done" => {
                held.remove(&a.id);
            }
            _ => {}
        }
    }
}
