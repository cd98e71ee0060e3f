//! An in-memory MariaDB cluster behind the control plane's seam
//! ([`crate::server::Connect`] / [`crate::server::ServerSql`]), for unit tests of
//! the decision logic (conditions, election, fencing, reparent steps) with
//! injected faults and paused time. Not a database: it models only what the
//! control plane reads and changes. The real path has its own tests against
//! MariaDB (`tests/`).
//!
//! Model: each server has `read_only`, a GTID binlog state (last sequence per
//! (domain, server_id)) with the last GTID per domain, and a replication source
//! with IO/SQL threads. Replication is instant: before every call, each replica
//! whose threads run and whose source is up copies the source's history if its
//! own is contained in it (else its SQL thread stops with an error, as a
//! diverged MariaDB replica does). Faults: `down` (connect refused), `hung`
//! (every call waits out the caller's timeout), `io_blocked` (a replica receives
//! nothing), `running_write` (a client write holds `read_only=ON` back until its
//! connection is killed), `fail` (named calls answer with an error).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::server::{AdminLogin, Connect, Replication, Server, ServerError, ServerSql};

/// One fake server's state.
#[derive(Debug, Clone, Default)]
pub struct FakeServer {
    pub server_id: u32,
    pub down: bool,
    pub hung: bool,
    pub read_only: bool,
    /// (domain, server_id) -> last sequence number.
    pub state: BTreeMap<(u32, u32), u64>,
    /// domain -> (server_id, seq) of the last GTID written or applied.
    pub last: BTreeMap<u32, (u32, u64)>,
    pub source: Option<String>,
    pub io_running: bool,
    pub sql_running: bool,
    pub last_error: String,
    pub io_blocked: bool,
    pub running_write: bool,
    pub clients: usize,
    /// Up `up_before` seconds when `up_since` was (None: since the fake was made).
    pub up_since: Option<tokio::time::Instant>,
    pub up_before: u64,
    pub semi_sync: bool,
    /// Calls (by trait method name) that answer with an error.
    pub fail: HashSet<&'static str>,
}

impl FakeServer {
    fn state_text(&self) -> String {
        self.state.iter().map(|((d, s), n)| format!("{d}-{s}-{n}")).collect::<Vec<_>>().join(",")
    }

    /// A restart as `Uptime` tells it: up 0 s from now.
    pub fn restart(&mut self) {
        self.up_since = Some(tokio::time::Instant::now());
        self.up_before = 0;
    }

    fn pos_text(&self) -> String {
        self.last.iter().map(|(d, (s, n))| format!("{d}-{s}-{n}")).collect::<Vec<_>>().join(",")
    }
}

/// The fake cluster; clones share it.
#[derive(Clone, Default)]
pub struct FakeCluster {
    inner: Arc<Mutex<BTreeMap<String, FakeServer>>>,
}

impl FakeCluster {
    /// `addrs[0]` primary (writable), the others replicating from it, all in sync.
    pub fn new(addrs: &[&str]) -> FakeCluster {
        let f = FakeCluster::default();
        {
            let mut m = f.lock();
            for (i, a) in addrs.iter().enumerate() {
                let replica = i > 0;
                m.insert(
                    a.to_string(),
                    FakeServer {
                        server_id: i as u32 + 1,
                        read_only: replica,
                        source: replica.then(|| addrs[0].to_string()),
                        io_running: replica,
                        sql_running: replica,
                        up_since: Some(tokio::time::Instant::now()),
                        up_before: 1000,
                        semi_sync: true,
                        ..Default::default()
                    },
                );
            }
        }
        f
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, FakeServer>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change one server.
    pub fn with<R>(&self, addr: &str, f: impl FnOnce(&mut FakeServer) -> R) -> R {
        let mut m = self.lock();
        sync(&mut m);
        f(m.get_mut(addr).expect("a fake server"))
    }

    /// A copy of one server's state (after replication ran).
    pub fn get(&self, addr: &str) -> FakeServer {
        self.with(addr, |s| s.clone())
    }

    /// A client transaction committed on `addr` (domain 0): its GTID.
    pub fn write(&self, addr: &str) -> String {
        let gtid = self.with(addr, |s| {
            let seq = s.state.iter().filter(|((d, _), _)| *d == 0).map(|(_, n)| *n).max().unwrap_or(0) + 1;
            s.state.insert((0, s.server_id), seq);
            s.last.insert(0, (s.server_id, seq));
            format!("0-{}-{seq}", s.server_id)
        });
        let mut m = self.lock();
        sync(&mut m);
        gtid
    }

    /// The servers that are up, answering and writable.
    pub fn writable(&self) -> Vec<String> {
        self.lock().iter().filter(|(_, s)| !s.down && !s.hung && !s.read_only).map(|(a, _)| a.clone()).collect()
    }
}

/// Instant replication: every replica with running threads and a live source
/// takes the source's history when its own is contained in it.
fn sync(m: &mut BTreeMap<String, FakeServer>) {
    for _ in 0..m.len() {
        let addrs: Vec<String> = m.keys().cloned().collect();
        for a in addrs {
            let r = m[&a].clone();
            let Some(src) = r.source.clone() else { continue };
            let Some(s) = m.get(&src).cloned() else { continue };
            if !(r.io_running && r.sql_running) || r.io_blocked || s.down || s.hung {
                continue;
            }
            let contained = r.state.iter().all(|(k, n)| s.state.get(k).is_some_and(|m| m >= n));
            let rm = m.get_mut(&a).expect("present");
            if contained {
                rm.state = s.state.clone();
                rm.last = s.last.clone();
            } else {
                rm.sql_running = false;
                rm.last_error = format!("diverged from {src}");
            }
        }
    }
}

#[async_trait::async_trait]
impl Connect for FakeCluster {
    async fn connect(&self, addr: &str, login: &AdminLogin) -> Result<Server, ServerError> {
        let s = self.lock().get(addr).cloned();
        match s {
            None => Err(ServerError::Unreachable { addr: addr.into(), why: "no such server".into() }),
            Some(s) if s.down => Err(ServerError::Unreachable { addr: addr.into(), why: "Connection refused".into() }),
            Some(s) if s.hung => {
                tokio::time::sleep(login.timeout).await;
                Err(ServerError::Unreachable { addr: addr.into(), why: format!("no answer within {} ms", login.timeout.as_millis()) })
            }
            Some(_) => Ok(Box::new(FakeConn { cluster: self.clone(), addr: addr.into(), timeout: login.timeout })),
        }
    }
}

/// One open connection to a fake server.
pub struct FakeConn {
    cluster: FakeCluster,
    addr: String,
    timeout: Duration,
}

impl FakeConn {
    /// Run `f` on the server as one call named `op`, with the faults applied.
    async fn call<T>(&self, op: &'static str, f: impl FnOnce(&mut FakeServer) -> T) -> Result<T, ServerError> {
        tokio::task::yield_now().await;
        let s = self.cluster.get(&self.addr);
        if s.down {
            return Err(ServerError::Unreachable { addr: self.addr.clone(), why: "Connection reset".into() });
        }
        if s.hung {
            tokio::time::sleep(self.timeout).await;
            return Err(ServerError::Unreachable { addr: self.addr.clone(), why: format!("{op}: no answer within {} ms", self.timeout.as_millis()) });
        }
        if s.fail.contains(op) {
            return Err(ServerError::Query { addr: self.addr.clone(), why: format!("{op}: injected failure") });
        }
        Ok(self.cluster.with(&self.addr, f))
    }
}

#[async_trait::async_trait]
impl ServerSql for FakeConn {
    fn addr(&self) -> &str {
        &self.addr
    }
    async fn read_only(&mut self) -> Result<bool, ServerError> {
        self.call("read_only", |s| s.read_only).await
    }
    async fn set_read_only(&mut self, on: bool) -> Result<(), ServerError> {
        // read_only=ON waits behind a running write, up to the call's timeout.
        let deadline = tokio::time::Instant::now() + self.timeout;
        while on && self.call("set_read_only", |s| s.running_write).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(ServerError::Unreachable { addr: self.addr.clone(), why: "set_read_only: no answer in time".into() });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.call("set_read_only", |s| s.read_only = on).await
    }
    async fn gtid_binlog_pos(&mut self) -> Result<String, ServerError> {
        self.call("gtid_binlog_pos", |s| s.pos_text()).await
    }
    async fn gtid_binlog_state(&mut self) -> Result<String, ServerError> {
        self.call("gtid_binlog_state", |s| s.state_text()).await
    }
    async fn gtid_history(&mut self) -> Result<String, ServerError> {
        self.call("gtid_history", |s| s.state_text()).await
    }
    async fn gtid_current_pos(&mut self) -> Result<String, ServerError> {
        self.call("gtid_current_pos", |s| s.pos_text()).await
    }
    async fn variable(&mut self, name: &str) -> Result<String, ServerError> {
        let name = name.to_string();
        self.call("variable", move |s| match name.as_str() {
            "server_id" => s.server_id.to_string(),
            "rpl_semi_sync_master_enabled" => if s.semi_sync { "1" } else { "0" }.to_string(),
            _ => String::new(),
        })
        .await
    }
    async fn status_u64(&mut self, name: &str) -> Result<u64, ServerError> {
        let name = name.to_string();
        let addr = self.addr.clone();
        let followers = self.cluster.lock().values().filter(|r| r.source.as_deref() == Some(addr.as_str()) && r.io_running && !r.down).count();
        self.call("status_u64", move |s| match name.as_str() {
            "Uptime" => s.up_before + s.up_since.map_or(0, |t| t.elapsed().as_secs()),
            "Rpl_semi_sync_master_clients" => followers as u64,
            _ => 0,
        })
        .await
    }
    async fn replication(&mut self) -> Result<Option<Replication>, ServerError> {
        self.call("replication", |s| {
            s.source.clone().map(|source| Replication {
                source,
                io_running: s.io_running,
                sql_running: s.sql_running,
                lag_seconds: Some(0),
                last_error: s.last_error.clone(),
                gtid_io_pos: s.pos_text(),
            })
        })
        .await
    }
    async fn wait_for_gtid(&mut self, pos: &str, timeout: Duration) -> Result<bool, ServerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let state = self.call("wait_for_gtid", |s| s.state_text()).await?;
            if crate::gtid::contains(&state, pos).is_ok() {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    async fn kill_clients(&mut self, _keep_user: &str) -> Result<usize, ServerError> {
        self.call("kill_clients", |s| {
            let n = s.clients + usize::from(s.running_write);
            s.clients = 0;
            s.running_write = false;
            n
        })
        .await
    }
    async fn replicate_from(&mut self, source: &str, _user: &str, _password: &str, reset_slave_pos: bool) -> Result<(), ServerError> {
        let source = source.to_string();
        self.call("replicate_from", move |s| {
            let _ = reset_slave_pos;
            s.source = Some(source);
            s.io_running = true;
            s.sql_running = true;
            s.last_error.clear();
        })
        .await
    }
    async fn stop_replicating(&mut self) -> Result<(), ServerError> {
        self.call("stop_replicating", |s| {
            s.source = None;
            s.io_running = false;
            s.sql_running = false;
        })
        .await
    }
    async fn stop_io_thread(&mut self, _patience: Duration) -> Result<(), ServerError> {
        self.call("stop_io_thread", |s| s.io_running = false).await
    }
    async fn start_io_thread(&mut self) -> Result<(), ServerError> {
        self.call("start_io_thread", |s| s.io_running = s.source.is_some()).await
    }
    async fn close(self: Box<Self>) {}
}
