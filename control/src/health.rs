//! The health monitor of one cluster: checks every server each `health.interval`.
//!
//! - The primary failing a check makes the gate buffer at once (suspicion); after
//!   `failure_threshold` consecutive failures, clusters with `auto_failover` fail
//!   over ([`crate::failover`]). A primary that answers again before that ends the
//!   suspicion (the supervisor releases a reactive episode whose primary is healthy).
//! - Fencing: a server that is not the named primary but is writable is made
//!   read-only as soon as it answers (an old primary coming back).
//! - On etcd, only the orchestrator fails over, fences and rejoins; every proxy
//!   checks and buffers on suspicion.
//! - Errant servers: a server whose latest GTID in a domain the primary lacks
//!   ([`gtid::errant`]: a transaction only it has, an old primary's last commit
//!   that no replica received, a write made on a replica) is reported errant (status,
//!   `baton_errant_servers`, `baton ctl status`), never rejoined, and left out of
//!   elections and of their split-brain comparison ([`crate::failover`]). The
//!   list is kept while the primary cannot be checked. Repair: README "Errant servers".
//! - Rejoin: a server that does not replicate and is not errant is pointed at the
//!   primary.

use std::sync::Arc;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cluster::ClusterHandle;
use crate::gate::Phase;
use crate::gtid;
use crate::metrics::Metrics;
use crate::server::{AdminLogin, Connect};
use crate::store::Store;

/// One server as the last check saw it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerHealth {
    pub addr: String,
    pub reachable: bool,
    pub read_only: Option<bool>,
    pub source: Option<String>,
    pub gtid_binlog_pos: Option<String>,
    pub gtid_binlog_state: Option<String>,
    /// `@@server_id`.
    #[serde(skip)]
    pub server_id: Option<u32>,
    /// Binlog state merged with `gtid_slave_pos`: everything it has applied.
    #[serde(skip)]
    pub gtid_history: Option<String>,
    /// `Uptime` status variable, in whole seconds: tells a restart (item 7).
    #[serde(skip)]
    pub uptime: Option<u64>,
    pub error: Option<String>,
}

/// The monitor's latest view.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HealthReport {
    pub primary_failures: u32,
    pub servers: Vec<ServerHealth>,
    /// Servers kept out because their history diverged from the primary's, as
    /// "addr: the first GTID the primary lacks".
    pub errant: Vec<String>,
    /// The last fencing, rejoin or failover action, with its outcome.
    pub last_action: Option<String>,
}

/// An errant server stays errant while it still has the transaction it was
/// found with and the primary still lacks it ([`gtid::still_errant`]), even
/// when later transactions hide it from [`gtid::errant`]: an operator who skips
/// the event its replication stopped on (error 1950) and starts it again does
/// not make it safe. A rebuild (its binlog no longer has it) clears it; a server
/// not checked now (down) keeps its entry; the primary and servers no longer in
/// the config drop theirs. Kept in memory only: a restarted baton (or a new
/// orchestrator on etcd) sees a hidden one no more.
/// Known limits: one entry per server (a newer finding replaces an older one);
/// a server wrongly found errant (its own stream, down while the primary was
/// rebuilt) stays so until it is rebuilt too.
fn keep_errant(mut list: Vec<String>, history: &str, primary: &str, servers: &[ServerHealth], cluster: &ClusterHandle) -> Vec<String> {
    let previous = cluster.health.lock().unwrap_or_else(|p| p.into_inner()).errant.clone();
    for e in previous {
        let addr = errant_addr(&e);
        if addr == primary || list.iter().any(|f| errant_addr(f) == addr) {
            continue;
        }
        let kept = match servers.iter().find(|s| s.addr == addr) {
            None => false,
            Some(s) if !s.reachable => true,
            Some(s) => match (&s.gtid_binlog_state, gtid::lacked(&e)) {
                (Some(state), Some(g)) => gtid::still_errant(history, state, g),
                (None, Some(_)) => true,
                // Not a finding of errant(): nothing to keep it by.
                (_, None) => false,
            },
        };
        if kept {
            list.push(e);
        }
    }
    list
}

async fn probe(sql: Arc<dyn Connect>, addr: String, login: AdminLogin) -> ServerHealth {
    match sql.connect(&addr, &login).await {
        Err(e) => {
            // A server that answers with an error is up; only silence or a refused or
            // reset connection counts as down.
            let reachable = matches!(e, crate::server::ServerError::Query { .. });
            ServerHealth {
                addr,
                reachable,
                read_only: None,
                source: None,
                gtid_binlog_pos: None,
                gtid_binlog_state: None,
                gtid_history: None,
                server_id: None,
                uptime: None,
                error: Some(e.to_string()),
            }
        }
        Ok(mut s) => {
            let ro = s.read_only().await;
            let repl = s.replication().await;
            let pos = s.gtid_binlog_pos().await;
            let state = s.gtid_binlog_state().await.ok();
            let history = s.gtid_history().await.ok();
            let server_id = s.variable("server_id").await.ok().and_then(|v| v.parse().ok());
            let uptime = s.status_u64("Uptime").await.ok();
            s.close().await;
            match (ro, repl, pos) {
                (Ok(ro), Ok(repl), Ok(pos)) => ServerHealth {
                    addr,
                    reachable: true,
                    read_only: Some(ro),
                    source: repl.map(|r| r.source),
                    gtid_binlog_pos: Some(pos),
                    gtid_binlog_state: state,
                    gtid_history: history,
                    server_id,
                    uptime,
                    error: None,
                },
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    let reachable = matches!(e, crate::server::ServerError::Query { .. });
                    ServerHealth {
                        addr,
                        reachable,
                        read_only: None,
                        source: None,
                        gtid_binlog_pos: None,
                        gtid_binlog_state: None,
                        gtid_history: None,
                        server_id: None,
                        uptime: None,
                        error: Some(e.to_string()),
                    }
                }
            }
        }
    }
}

/// A primary that came back (restarted during the episode, by its `Uptime`,
/// read-only as the recommended my.cnf has it) while nothing else was promoted: no failover (`auto_failover` off, or
/// refused), the topology still names it at the episode's term. If it contains
/// every GTID baton acknowledged and every other server's history, is not errant
/// and no other server is writable,
/// re-establish it: publish it at term + 1 (the old term's sessions are gone with
/// the crash; they reconnect), then make it writable; the supervisor releases
/// the held requests once every condition holds. Returns the action taken or why
/// not (None when it does not apply).
async fn reestablish(
    cluster: &ClusterHandle,
    store: &Store,
    record: &crate::topology::ClusterRecord,
    primary: Option<&ServerHealth>,
    servers: &[ServerHealth],
    errant: &[String],
    last_writable: Option<Served>,
) -> Option<Result<String, (u64, String)>> {
    let status = cluster.gate.status();
    let p = primary?;
    // Held for it (a reactive episode), or already failing fast because of it.
    let held = (status.phase == Phase::Buffering && !status.planned) || status.no_primary.is_some();
    let applies = held
        && status.start_term == record.term
        && status.old_primary == record.primary
        && p.reachable
        && p.read_only == Some(true)
        && p.source.is_none()
        && store.may_act();
    if !applies {
        return None;
    }
    if let Some(w) = servers.iter().find(|s| s.addr != p.addr && s.read_only == Some(false)) {
        return Some(Err((status.episode, format!("{} is back read-only but not re-established: {} is writable", p.addr, w.addr))));
    }
    if errant.iter().any(|e| errant_addr(e) == p.addr) {
        return Some(Err((status.episode, format!("{} is back read-only but errant: not re-established", p.addr))));
    }
    let acked = cluster.acked.position();
    let pstate = p.gtid_history.as_deref().or(p.gtid_binlog_state.as_deref()).unwrap_or_default();
    if let Err(why) = gtid::contains(pstate, &acked) {
        return Some(Err((
            status.episode,
            format!("{} is back read-only but lacks acknowledged writes ({why}): not re-established; fail over to a replica", p.addr),
        )));
    }
    // A replica ahead of it (a transaction the crash recovery dropped here, e.g.
    // with init_rpl_role=SLAVE) would diverge from it: a failover is the way then.
    // An errant server's extra transactions were never acknowledged: it is out
    // of every election and does not count here either.
    // Nor does one whose extra transaction is its own latest (an old primary's
    // last commit nobody received, back before any check could call it errant).
    for s in servers.iter().filter(|s| s.reachable && s.addr != p.addr && !errant.iter().any(|e| errant_addr(e) == s.addr)) {
        let state = s.gtid_binlog_state.as_deref().unwrap_or_default();
        if gtid::own_latest_lacked(pstate, state, s.server_id).is_some() {
            continue;
        }
        if let Err(why) = gtid::errant(pstate, state, s.server_id) {
            return Some(Err((
                status.episode,
                format!("{} is back read-only but {} is ahead of it ({why}): not re-established; fail over to a replica", p.addr, s.addr),
            )));
        }
    }
    // Only a server that restarted since it was last seen serving as primary:
    // read-only on a live primary may be another tool's revocation (a reparent
    // baton does not know of); making it writable again could give two primaries.
    let Some(seen) = last_writable else {
        return Some(Err((status.episode, format!("{} is read-only and was never seen serving writes: not re-established", p.addr))));
    };
    let uptime = p.uptime?;
    if !seen.restarted(uptime)? {
        return Some(Err((
            status.episode,
            format!("{} is read-only but did not restart since it last served writes (up {uptime} s): not re-established", p.addr),
        )));
    }
    let _lock = cluster.reparent_lock.try_lock().ok()?;
    if status.phase != Phase::Buffering {
        // Failing fast (no episode): hold again while it is re-established, so
        // that the supervisor releases only once every condition holds.
        cluster.gate.begin(record.term, &p.addr, &format!("re-establishing {}", p.addr), true);
    }
    let term = record.term + 1;
    let next = crate::topology::ClusterRecord { primary: p.addr.clone(), term, servers: record.servers.clone() };
    if let Err(e) = store.put_cluster(&cluster.name, next).await {
        return Some(Err((status.episode, format!("re-establishing {}: publishing term {term} failed: {e}", p.addr))));
    }
    let writable = match cluster.connect(&p.addr).await {
        Ok(mut s) => {
            let r = s.set_read_only(false).await;
            s.close().await;
            r.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    Some(match writable {
        Ok(()) => {
            Ok(format!("re-established {} at term {term}: it came back containing every acknowledged write and nothing else was promoted", p.addr))
        }
        Err(e) => Err((status.episode, format!("published {} at term {term} but could not make it writable: {e}", p.addr))),
    })
}

/// When the named primary was last seen serving writes, and its `Uptime` then.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    pub at: tokio::time::Instant,
    /// Whole seconds; None when it could not be read.
    pub uptime: Option<u64>,
}

impl Served {
    /// Whether a server now up `uptime_now` seconds restarted since it was seen
    /// serving writes: had it run on, its uptime would be `uptime_then + elapsed`.
    /// Both readings are truncated to whole seconds (each up to 1 s short), so a
    /// restart is told only when the uptime is more than 2 s behind that.
    /// Without the earlier reading: up for less time than since it was seen,
    /// by more than a second; a server up under 5 s gets no verdict (None) then.
    pub fn restarted(&self, uptime_now: u64) -> Option<bool> {
        let elapsed = self.at.elapsed().as_secs();
        match self.uptime {
            Some(then) => Some(uptime_now + 2 < then + elapsed),
            None if uptime_now < 5 => None,
            None => Some(uptime_now + 1 < elapsed),
        }
    }
}

/// The address of an errant entry ("addr: why").
pub fn errant_addr(entry: &str) -> &str {
    entry.split_once(": ").map_or(entry, |(a, _)| a)
}

/// Run until `stop` is cancelled.
pub async fn monitor(cluster: Arc<ClusterHandle>, store: Store, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut failures = 0u32;
    // When the named primary was last seen writable (item 7: did it restart since?).
    let mut last_writable: Option<(String, Served)> = None;
    loop {
        let settings = cluster.settings();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(settings.health_interval) => {}
        }
        if !settings.admin_configured {
            // Nothing can be checked without the control plane's account (a
            // reload may have removed it): nothing to fail fast for either.
            cluster.gate.primary_back();
            continue;
        }
        let topo = store.current();
        let Some(record) = topo.cluster(&cluster.name).cloned() else { continue };
        let mut login = settings.admin.clone();
        login.timeout = settings.health_timeout;
        let mut set = tokio::task::JoinSet::new();
        for (i, addr) in settings.servers.iter().enumerate() {
            let (addr, login) = (addr.clone(), login.clone());
            let sql = cluster.sql.clone();
            set.spawn(async move { (i, probe(sql, addr, login).await) });
        }
        let mut servers: Vec<(usize, ServerHealth)> = set.join_all().await;
        servers.sort_by_key(|(i, _)| *i);
        let servers: Vec<ServerHealth> = servers.into_iter().map(|(_, s)| s).collect();
        let primary = servers.iter().find(|s| s.addr == record.primary).cloned();
        let primary_health = primary.clone();
        let mut action = None;
        // Errant: recomputed whenever the primary can be checked; kept otherwise
        // (a failover must know them once the primary is gone).
        let mut errant: Option<Vec<String>> = None;

        if primary.as_ref().is_some_and(|p| p.reachable) {
            failures = 0;
        } else {
            failures += 1;
            // Suspect the primary (and hold requests) when it refuses connections, or
            // after a second slow check: one slow answer under load is not a failure.
            let refused = primary.as_ref().and_then(|p| p.error.as_deref()).is_some_and(|e| e.contains("refused"));
            if refused || failures >= 2.min(settings.failure_threshold) {
                cluster.gate.begin(record.term, &record.primary, &format!("primary failed {failures} health check(s)"), false);
            }
            if failures >= settings.failure_threshold && settings.auto_failover && store.may_act() {
                let why = format!("primary {} failed {failures} health checks", record.primary);
                tracing::warn!(cluster = %cluster.name, "{why}: failing over");
                action = Some(match crate::failover::emergency(&cluster, &store, &why).await {
                    Ok(r) => {
                        let steps: Vec<(String, u64)> = r.steps.iter().map(|s| (s.step.to_string(), s.ms)).collect();
                        metrics.failover(&cluster.name, r.outcome.name(), &steps);
                        format!("automatic failover: {} ({} -> {}){}", r.outcome, r.from, r.to, r.error.map(|e| format!(": {e}")).unwrap_or_default())
                    }
                    Err(e) => format!("automatic failover not run: {e}"),
                });
                failures = 0;
            }
        }

        // Fencing and rejoin, only while nothing else is moving the cluster.
        let p = primary.filter(|p| p.reachable && p.read_only == Some(false) && p.source.is_none());
        if let (Some(p), Phase::Idle) = (&p, cluster.gate.phase()) {
            // What the primary has: its binlog state and what it applied as a replica.
            let pstate = p.gtid_history.clone().or_else(|| p.gtid_binlog_state.clone()).unwrap_or_default();
            let suspects: Vec<&ServerHealth> = servers
                .iter()
                .filter(|s| s.reachable && s.addr != p.addr)
                .filter(|s| gtid::errant(&pstate, s.gtid_binlog_state.as_deref().unwrap_or_default(), s.server_id).is_err())
                .collect();
            // The checks ran in parallel: a replica read after the primary may hold
            // transactions the primary wrote in between. Re-read the primary now;
            // only what it still lacks is errant.
            let mut found: Option<(String, Vec<String>)> = None;
            if suspects.is_empty() {
                found = Some((pstate.clone(), Vec::new()));
            } else if let Ok(mut c) = cluster.connect_with(&p.addr, &login).await {
                if let Ok(fresh) = c.gtid_history().await {
                    let list = suspects
                        .iter()
                        .filter_map(|s| {
                            gtid::errant(&fresh, s.gtid_binlog_state.as_deref().unwrap_or_default(), s.server_id)
                                .err()
                                .map(|why| format!("{}: {why}", s.addr))
                        })
                        .collect();
                    found = Some((fresh, list));
                }
                c.close().await;
            }
            errant = found.map(|(history, list)| keep_errant(list, &history, &p.addr, &servers, &cluster));
        }
        let errant_now: Vec<String> = match &errant {
            Some(e) => e.clone(),
            None => cluster.health.lock().unwrap_or_else(|p| p.into_inner()).errant.clone(),
        };
        // An errant server is isolated: replicating, its IO thread would still
        // acknowledge semi-sync writes it cannot apply (its SQL thread stops on
        // the divergence), so the primary would count a durability it lacks.
        if store.may_act() {
            for s in servers.iter().filter(|s| s.reachable && s.source.is_some() && errant_now.iter().any(|e| errant_addr(e) == s.addr)) {
                if let Ok(mut c) = cluster.connect(&s.addr).await {
                    if matches!(c.replication().await, Ok(Some(r)) if r.io_running) {
                        let r = c.stop_io_thread(settings.health_timeout).await;
                        action = Some(format!(
                            "isolated errant {}: IO thread stopped ({}); it no longer acknowledges writes it cannot apply",
                            s.addr,
                            if r.is_ok() { "done" } else { "failed" }
                        ));
                    }
                    c.close().await;
                }
            }
        }
        // The reparent lock only when a server needs fencing or rejoining: taken on
        // every check, it made a reparent requested at that moment fail with 409.
        let needed =
            p.as_ref().is_some_and(|p| servers.iter().any(|s| s.reachable && s.addr != p.addr && (s.read_only == Some(false) || s.source.is_none())));
        let lock = if needed { cluster.reparent_lock.try_lock().ok() } else { None };
        if let (Some(p), true, Some(_guard)) = (p, store.may_act(), lock) {
            if cluster.gate.phase() == Phase::Idle {
                let pstate = p.gtid_history.clone().or_else(|| p.gtid_binlog_state.clone()).unwrap_or_default();
                for s in servers.iter().filter(|s| s.reachable && s.addr != p.addr) {
                    let Ok(mut c) = cluster.connect(&s.addr).await else { continue };
                    if s.read_only == Some(false) {
                        let r = c.set_read_only(true).await;
                        action = Some(format!("fenced {}: read_only=ON ({})", s.addr, if r.is_ok() { "done" } else { "failed" }));
                    }
                    if s.source.is_none() && !errant_now.iter().any(|e| errant_addr(e) == s.addr) {
                        let spos = s.gtid_binlog_pos.clone().unwrap_or_default();
                        // Also its position (the errant list may be from an older check).
                        if gtid::contains(&pstate, &spos).is_ok() {
                            let r = c.replicate_from(&p.addr, &settings.repl_user, &settings.repl_password, true).await;
                            action = Some(format!(
                                "rejoined {} as a replica of {}: {}",
                                s.addr,
                                p.addr,
                                r.map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string())
                            ));
                        }
                    }
                    c.close().await;
                }
            }
        }
        if primary_health.as_ref().is_some_and(|p| p.reachable && p.read_only == Some(false) && p.source.is_none()) {
            let uptime = primary_health.as_ref().and_then(|p| p.uptime);
            last_writable = Some((record.primary.clone(), Served { at: tokio::time::Instant::now(), uptime }));
        }
        let seen = last_writable.as_ref().filter(|(a, _)| *a == record.primary).map(|(_, t)| *t);
        match reestablish(&cluster, &store, &record, primary_health.as_ref(), &servers, &errant_now, seen).await {
            Some(Ok(a)) => action = Some(a),
            Some(Err((episode, why))) => {
                // It answers and cannot be re-established; nothing else was
                // promoted: no primary is coming without an operator. Fail fast.
                let what = format!("{why}. An operator repairs it or fails over: `baton ctl failover {}`", cluster.name);
                cluster.gate.no_primary(episode, &what, false);
                action = Some(why);
            }
            None => {}
        }
        if primary_health.as_ref().is_some_and(|p| p.reachable && p.read_only == Some(false) && p.source.is_none()) {
            cluster.gate.primary_back();
        }
        let repeated = action.is_some() && cluster.health.lock().unwrap_or_else(|p| p.into_inner()).last_action == action;
        if let (Some(a), false) = (&action, repeated) {
            tracing::info!(cluster = %cluster.name, "{a}");
        }
        let mut h = cluster.health.lock().unwrap_or_else(|p| p.into_inner());
        h.primary_failures = failures;
        h.servers = servers;
        if let Some(e) = errant {
            if e != h.errant && !e.is_empty() {
                tracing::warn!(cluster = %cluster.name, errant = ?e, "errant servers: kept out of rejoin and elections");
            }
            h.errant = e;
        }
        if action.is_some() {
            h.last_action = action;
        }
    }
}
