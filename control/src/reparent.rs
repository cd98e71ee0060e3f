//! The planned reparent: prepare, announce, grace, revoke, catch up, promote,
//! publish, repoint, verify. Revocation strictly precedes establishment; a failure
//! before the new primary is published is undone (old primary writable again at
//! the same term, held requests released to it); after it, the supervisor keeps
//! holding requests until every condition holds or the max failover duration ends.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::cluster::ClusterHandle;
use crate::gate::Phase;
use crate::gtid;
use crate::server::Server;
use crate::store::Store;
use crate::topology::ClusterRecord;

/// Prepare ends once the candidate reaches a fresh snapshot of the primary's
/// position within this long, i.e. its replication lag is about this small.
const PREPARE_LAG: std::time::Duration = std::time::Duration::from_millis(100);

/// How long the revoke's `SET GLOBAL read_only=ON` may wait behind running
/// writes before their statements are ended.
const REVOKE_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// Commands outside transactions allowed at once while the prepare step throttles.
const PREPARE_THROTTLE: usize = 2;

/// One step's outcome and duration.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: &'static str,
    pub ms: u64,
    pub detail: String,
}

/// What a reparent did.
#[derive(Debug, Clone, Serialize)]
pub struct ReparentReport {
    pub cluster: String,
    /// "running" while in progress; then "ok", "undone" (failed before establishment;
    /// the old primary serves again) or "held" (established, but not every condition
    /// held before the max failover duration).
    pub outcome: &'static str,
    pub from: String,
    pub to: String,
    pub term: u64,
    pub steps: Vec<Step>,
    pub error: Option<String>,
    pub total_ms: u64,
    /// Requests held by the gate during this reparent.
    pub buffered: u64,
    /// Servers that do not replicate from the new primary after the repoint
    /// step ("addr: why", with the server's own `Last_IO_Error`); empty when all do.
    pub not_following: Vec<String>,
}

/// Point each target (address, connection, reset its slave position first) at
/// `primary`, then wait (up to the catch-up timeout, at most 10 s) until each one's
/// IO and SQL threads run against it. The step and `not_following` say which do not.
/// The gate does not wait for this: the supervisor releases it when the
/// conditions hold, so a replica that cannot follow does not extend the pause.
pub(crate) async fn repoint(run: &mut Run<'_>, primary: &str, mut targets: Vec<(String, &mut Server, bool)>, mut not_following: Vec<String>) {
    let s = run.cluster.settings();
    let mut pointed = Vec::new();
    for (addr, server, reset) in targets.iter_mut() {
        match server.replicate_from(primary, &s.repl_user, &s.repl_password, *reset).await {
            Ok(()) => pointed.push(addr.clone()),
            Err(e) => not_following.push(format!("{addr}: {e}")),
        }
    }
    let wait = s.catchup_timeout.min(std::time::Duration::from_secs(10));
    let mut following = 0;
    for (addr, server, _) in targets.iter_mut().filter(|(a, _, _)| pointed.contains(a)) {
        match server.wait_following(primary, wait).await {
            Ok(()) => following += 1,
            Err(why) => not_following.push(format!("{addr}: {why}")),
        }
    }
    let detail = if not_following.is_empty() {
        format!("{following} server(s) replicate from {primary} (IO and SQL threads running)")
    } else {
        format!("{following} server(s) replicate from {primary}; NOT following: {}", not_following.join("; "))
    };
    if !not_following.is_empty() {
        tracing::warn!(cluster = %run.cluster.name, %detail, "replicas not following the new primary");
    }
    run.report.not_following = not_following;
    run.step("repoint", detail);
}

/// Wait (up to the max failover duration) for the supervisor to release `episode`.
pub(crate) async fn verify(run: &mut Run<'_>, episode: u64) -> bool {
    let cluster = run.cluster;
    let mut rx = cluster.gate.watch();
    let deadline = cluster.settings().max_failover_duration;
    let left = tokio::time::timeout(deadline, rx.wait_for(|s| s.episode != episode || s.phase != Phase::Buffering)).await;
    let report = cluster.conditions.borrow().clone();
    match left {
        Ok(_) if report.episode == episode && report.all_hold => {
            run.step("verify", "every leadership condition holds; draining");
            true
        }
        _ => {
            let failing = report.failing().join("; ");
            run.step("verify", format!("not every condition held: {failing}"));
            run.report.error = Some(format!("conditions not met: {failing}"));
            false
        }
    }
}

/// Why a reparent was refused before it started.
#[derive(Debug, thiserror::Error)]
pub enum ReparentError {
    #[error("a reparent of cluster {0} is already running")]
    AlreadyRunning(String),
    #[error("cluster {0} has no topology record")]
    NoRecord(String),
    #[error("{0}")]
    BadCandidate(String),
}

pub(crate) struct Run<'a> {
    pub(crate) report: ReparentReport,
    started: Instant,
    step_started: Instant,
    pub(crate) cluster: &'a ClusterHandle,
}

impl<'a> Run<'a> {
    pub(crate) fn new(cluster: &'a ClusterHandle, from: &str, to: &str, term: u64) -> Run<'a> {
        let now = Instant::now();
        let run = Run {
            report: ReparentReport {
                cluster: cluster.name.clone(),
                outcome: "running",
                from: from.to_string(),
                to: to.to_string(),
                term,
                steps: Vec::new(),
                error: None,
                total_ms: 0,
                buffered: 0,
                not_following: Vec::new(),
            },
            started: now,
            step_started: now,
            cluster,
        };
        run.publish();
        run
    }

    pub(crate) fn step(&mut self, step: &'static str, detail: impl Into<String>) {
        let detail = detail.into();
        let ms = self.step_started.elapsed().as_millis() as u64;
        tracing::info!(cluster = %self.cluster.name, step, ms, %detail, "reparent step");
        self.report.steps.push(Step { step, ms, detail });
        self.step_started = Instant::now();
        self.publish();
    }

    fn publish(&self) {
        *self.cluster.last_reparent.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.report.clone());
    }

    pub(crate) fn finish(mut self, outcome: &'static str, error: Option<String>, buffered_before: u64) -> ReparentReport {
        self.report.outcome = outcome;
        self.report.error = error;
        self.report.total_ms = self.started.elapsed().as_millis() as u64;
        self.report.buffered = self.cluster.gate.counters.buffered.load(std::sync::atomic::Ordering::Relaxed) - buffered_before;
        self.publish();
        self.report
    }
}

/// The servers the health monitor reports errant ("addr: why").
fn errant_servers(cluster: &ClusterHandle) -> Vec<String> {
    cluster.health.lock().unwrap_or_else(|p| p.into_inner()).errant.clone()
}

/// Pick the most advanced reachable, non-errant replica of `old` (by GTID position).
async fn pick_candidate(cluster: &ClusterHandle, old: &str) -> Result<String, ReparentError> {
    let settings = cluster.settings();
    let mut best: Option<(u64, String)> = None;
    let mut why = Vec::new();
    let errant = errant_servers(cluster);
    for addr in settings.servers.iter().filter(|s| *s != old) {
        if let Some(e) = errant.iter().find(|e| crate::health::errant_addr(e) == addr) {
            why.push(format!("{addr} is errant ({e})"));
            continue;
        }
        match Server::connect(addr, &settings.admin).await {
            Ok(mut s) => {
                let pos = s.gtid_current_pos().await.unwrap_or_default();
                let repl = s.replication().await.ok().flatten();
                s.close().await;
                if repl.as_ref().is_none_or(|r| r.source != old) {
                    why.push(format!("{addr} does not replicate from {old}"));
                    continue;
                }
                let score = gtid::advance(&pos);
                if best.as_ref().is_none_or(|(b, _)| score > *b) {
                    best = Some((score, addr.clone()));
                }
            }
            Err(e) => why.push(e.to_string()),
        }
    }
    best.map(|(_, a)| a).ok_or_else(|| ReparentError::BadCandidate(format!("no healthy replica to promote: {}", why.join("; "))))
}

/// Run a planned reparent of `cluster` to `to` (or the most advanced replica).
pub async fn planned(cluster: &Arc<ClusterHandle>, store: &Store, to: Option<&str>) -> Result<ReparentReport, ReparentError> {
    let _lock = cluster.reparent_lock.try_lock().map_err(|_| ReparentError::AlreadyRunning(cluster.name.clone()))?;
    let settings = cluster.settings();
    let topo = store.current();
    let record = topo.cluster(&cluster.name).cloned().ok_or_else(|| ReparentError::NoRecord(cluster.name.clone()))?;
    let old = record.primary.clone();
    let candidate = match to {
        Some(t) if t == old => return Err(ReparentError::BadCandidate(format!("{t} is already the primary"))),
        Some(t) if !settings.servers.iter().any(|s| s == t) => {
            return Err(ReparentError::BadCandidate(format!("{t} is not a server of cluster {}", cluster.name)))
        }
        Some(t) => {
            // The same rule as the emergency path: an errant server is never promoted.
            if let Some(e) = errant_servers(cluster).iter().find(|e| crate::health::errant_addr(e) == t) {
                return Err(ReparentError::BadCandidate(format!("{t} is errant ({e}): repair it first (README \"Errant servers\")")));
            }
            t.to_string()
        }
        None => pick_candidate(cluster, &old).await?,
    };
    let buffered_before = cluster.gate.counters.buffered.load(std::sync::atomic::Ordering::Relaxed);
    let mut run = Run::new(cluster, &old, &candidate, record.term);

    // 0. Prepare, while the old primary still serves.
    let mut cand = Server::connect(&candidate, &settings.admin).await.map_err(|e| ReparentError::BadCandidate(format!("candidate {e}")))?;
    let mut oldc = Server::connect(&old, &settings.admin).await.map_err(|e| ReparentError::BadCandidate(format!("current primary {e}")))?;
    match cand.replication().await {
        Ok(Some(r)) if r.source == old => {}
        Ok(Some(r)) => return Err(ReparentError::BadCandidate(format!("{candidate} replicates from {}, not {old}", r.source))),
        Ok(None) => return Err(ReparentError::BadCandidate(format!("{candidate} is not a replica"))),
        Err(e) => return Err(ReparentError::BadCandidate(e.to_string())),
    }
    // Catch up with the live primary until a fresh snapshot is reached quickly: then
    // the lag left for the pause is small.
    let prepare_deadline = Instant::now() + settings.prepare_timeout;
    let throttle_at = Instant::now() + (settings.prepare_timeout / 2).min(std::time::Duration::from_secs(2));
    let mut throttled = false;
    let mut caught = None;
    let mut snapshot = String::new();
    while Instant::now() < prepare_deadline {
        if !throttled && Instant::now() >= throttle_at {
            // The candidate does not converge under the full write load: slow
            // writers down (still serving, no errors) so it can.
            cluster.gate.set_throttle(Some(PREPARE_THROTTLE));
            throttled = true;
        }
        snapshot = oldc.gtid_binlog_pos().await.unwrap_or_default();
        let t = Instant::now();
        let limit = prepare_deadline.saturating_duration_since(t).min(std::time::Duration::from_secs(1));
        if cand.wait_for_gtid(&snapshot, limit).await.unwrap_or(false) && t.elapsed() <= PREPARE_LAG {
            caught = Some(t.elapsed());
            break;
        }
    }
    let how = if throttled { format!(" (writers throttled to {PREPARE_THROTTLE} at a time)") } else { String::new() };
    run.step(
        "prepare",
        match caught {
            Some(lag) => format!("{candidate} within {} ms of {old} ({snapshot}){how}", lag.as_millis()),
            None => format!("{candidate} still behind {old} after {} ms{how}; continuing", settings.prepare_timeout.as_millis()),
        },
    );

    // 1. Announce: the gate holds new requests from here on.
    let Some(episode) = cluster.gate.begin(record.term, &old, &format!("planned reparent to {candidate}"), true) else {
        unreachable!("planned episodes are never skipped")
    };
    run.step("announce", format!("buffering at term {} (episode {episode})", record.term));
    // Other proxies (etcd) buffer and end their transactions too.
    let announcement = match store.peers() {
        None => None,
        Some(p) => match p.announce(&cluster.name, record.term, &old, settings.transaction_grace).await {
            Ok(a) => Some((p, a)),
            Err(e) => {
                let err = format!("announcing the reparent to the other proxies failed: {e}");
                cluster.gate.release(episode);
                run.step("undo", format!("{old} was never revoked; held requests released to it"));
                return Ok(run.finish("undone", Some(err), buffered_before));
            }
        },
    };

    // 2. Grace: open transactions may finish.
    let left = cluster.gate.wait_inactive(settings.transaction_grace).await;
    run.step("grace", if left == 0 { "no open transactions".to_string() } else { format!("{left} session(s) still active; ending them") });
    if let Some((p, a)) = &announcement {
        let (acked, expected) = p.wait_acks(a, settings.transaction_grace + std::time::Duration::from_secs(2)).await;
        let missing: Vec<&String> = expected.iter().filter(|e| !acked.contains(e)).collect();
        run.step(
            "acks",
            if missing.is_empty() {
                format!("{} other proxy(ies) buffering with their transactions ended", expected.len())
            } else {
                format!("no acknowledgement from {missing:?}: the revocation stops them instead (they see 1290 and buffer)")
            },
        );
    }
    let announced = announcement.as_ref();

    // Undo: the old primary writable again at the same term; release the held requests to it.
    type Announced<'a> = Option<&'a (Arc<crate::peers::Peers>, crate::peers::Announcement)>;
    async fn undo(run: &mut Run<'_>, oldc: &mut Server, cand: &mut Server, reset: bool, old: &str, episode: u64, announced: Announced<'_>) {
        let s = run.cluster.settings();
        let mut notes = Vec::new();
        if reset {
            if let Err(e) = cand.replicate_from(old, &s.repl_user, &s.repl_password, false).await {
                notes.push(format!("candidate not repointed: {e}"));
            }
            let _ = cand.exec("SET GLOBAL read_only=ON").await;
        }
        match oldc.exec("SET GLOBAL read_only=OFF").await {
            Ok(()) => notes.push(format!("{old} writable again")),
            Err(e) => notes.push(format!("{old} could not be made writable: {e}")),
        }
        run.cluster.gate.release(episode);
        if let Some((p, a)) = announced {
            p.settle(a, "undone").await;
        }
        run.step("undo", notes.join("; "));
    }

    // 3. Revoke: read-only (ending what still runs if a running write holds it
    // back past REVOKE_PATIENCE), verified; end the sessions left; final position.
    let revoke = async {
        // read_only first: other proxies' sessions (etcd) then see 1290 and hold
        // their requests. A write still running holds `SET GLOBAL read_only=ON`
        // back; if it has not gone through within REVOKE_PATIENCE, end the client
        // statements (from a second connection) so it can.
        let mut running = 0;
        {
            let set = oldc.exec("SET GLOBAL read_only=ON");
            tokio::pin!(set);
            tokio::select! {
                r = &mut set => r?,
                _ = tokio::time::sleep(REVOKE_PATIENCE) => {
                    let mut killer = Server::connect(&old, &settings.admin).await?;
                    running = killer.kill_clients(&settings.admin.user).await?;
                    killer.close().await;
                    set.await?;
                }
            }
        }
        if !oldc.read_only().await? {
            return Err(crate::server::ServerError::Query { addr: old.clone(), why: "read_only did not stick".into() });
        }
        let killed = oldc.kill_clients(&settings.admin.user).await?;
        let pos = oldc.gtid_binlog_pos().await?;
        Ok((running, killed, pos))
    };
    let final_pos = match revoke.await {
        Ok((running, killed, pos)) => {
            run.step(
                "revoke",
                format!(
                    "{old} read_only=ON ({running} client statement(s) still running after the grace period ended first); {killed} client connection(s) killed; final position {pos}"
                ),
            );
            pos
        }
        Err(e) => {
            let err = format!("revoke failed: {e}");
            undo(&mut run, &mut oldc, &mut cand, false, &old, episode, announced).await;
            return Ok(run.finish("undone", Some(err), buffered_before));
        }
    };

    // 4. Establish: catch up, promote, publish at term + 1.
    match cand.wait_for_gtid(&final_pos, settings.catchup_timeout).await {
        Ok(true) => run.step("catch_up", format!("{candidate} applied {final_pos}")),
        other => {
            let err = match other {
                Ok(_) => format!("{candidate} did not reach {final_pos} within {} ms", settings.catchup_timeout.as_millis()),
                Err(e) => format!("catch-up failed: {e}"),
            };
            undo(&mut run, &mut oldc, &mut cand, false, &old, episode, announced).await;
            return Ok(run.finish("undone", Some(err), buffered_before));
        }
    }
    let promote = async {
        cand.exec("STOP SLAVE").await?;
        cand.exec("RESET SLAVE ALL").await?;
        cand.exec("SET GLOBAL read_only=OFF").await
    };
    if let Err(e) = promote.await {
        let err = format!("promote failed: {e}");
        undo(&mut run, &mut oldc, &mut cand, true, &old, episode, announced).await;
        return Ok(run.finish("undone", Some(err), buffered_before));
    }
    run.step("promote", format!("{candidate} stopped replicating and is writable"));
    let term = record.term + 1;
    let new_record = ClusterRecord { primary: candidate.clone(), term, servers: record.servers.clone() };
    if let Err(e) = store.put_cluster(&cluster.name, new_record).await {
        let err = format!("publishing the new primary failed: {e}");
        if matches!(e, crate::error::ControlError::OutcomeUnknown(_)) {
            // The store may name the candidate already: making the old primary
            // writable again could give two leaders. Go on as if published; the
            // conditions (C2 needs the new term) release the requests only if it was.
            run.step("publish", format!("{err}; carrying on: the leadership conditions decide"));
        } else {
            undo(&mut run, &mut oldc, &mut cand, true, &old, episode, announced).await;
            return Ok(run.finish("undone", Some(err), buffered_before));
        }
    } else {
        run.step("publish", format!("topology names {candidate} at term {term}"));
    }
    run.report.term = term;

    // 5. Repoint the old primary and the other replicas at the new primary, and
    // wait (bounded) until each follows it.
    let mut others = Vec::new();
    let mut unreachable = Vec::new();
    for addr in settings.servers.iter().filter(|s| **s != old && **s != candidate) {
        match Server::connect(addr, &settings.admin).await {
            Ok(s) => others.push((addr.clone(), s)),
            Err(e) => unreachable.push(format!("{addr}: {e}")),
        }
    }
    let mut targets = vec![(old.clone(), &mut oldc, true)];
    targets.extend(others.iter_mut().map(|(a, s)| (a.clone(), s, false)));
    repoint(&mut run, &candidate, targets, unreachable).await;
    for (_, s) in others {
        s.close().await;
    }
    oldc.close().await;
    cand.close().await;

    // 6. Verify: the supervisor releases the gate once every condition holds.
    let held = !verify(&mut run, episode).await;
    if let Some((p, a)) = announced {
        p.settle(a, "done").await;
    }
    if !held {
        Ok(run.finish("ok", None, buffered_before))
    } else {
        let err = run.report.error.clone();
        Ok(run.finish("held", err, buffered_before))
    }
}
