//! The planned reparent, one method per [`Step`]: prepare, announce, grace,
//! (acks), revoke, catch up, then the shared tail ([`crate::establish`]):
//! promote, publish, repoint, verify. Revocation strictly precedes
//! establishment. A failure (or an operator's cancel) before the new primary is
//! published is undone ([`Planned::undo`]: the old primary writable again at the
//! same term, held requests released to it); after it, the supervisor keeps
//! holding requests until every condition holds or the max failover duration ends.
//!
//! What each step waits for and its timeout: README "Planned reparent".

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::ClusterHandle;
use crate::establish::{establish, Failed};
use crate::gate::Release;
use crate::gtid;
use crate::peers::{Announcement, Peers};
use crate::run::{Outcome, Run};
use crate::server::Server;
use crate::store::Store;
use crate::topology::ClusterRecord;

pub use crate::run::{ReparentError, ReparentReport, Step, StepRecord};

/// Prepare ends once the candidate reaches a fresh snapshot of the primary's
/// position within this long, i.e. its replication lag is about this small.
const PREPARE_LAG: Duration = Duration::from_millis(100);

/// How long the revoke's `SET GLOBAL read_only=ON` may wait behind running
/// writes before their statements are ended.
const REVOKE_PATIENCE: Duration = Duration::from_millis(500);

/// Commands outside transactions allowed at once while the prepare step throttles.
const PREPARE_THROTTLE: usize = 2;

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
        match cluster.connect(addr).await {
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

/// A planned reparent in progress: the connections and state its steps share.
struct Planned<'a> {
    run: Run<'a>,
    store: &'a Store,
    record: ClusterRecord,
    old: String,
    candidate: String,
    oldc: Server,
    cand: Server,
    episode: u64,
    announced: Option<(Arc<Peers>, Announcement)>,
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
    let mut cand = cluster.connect(&candidate).await.map_err(|e| ReparentError::BadCandidate(format!("candidate {e}")))?;
    let oldc = cluster.connect(&old).await.map_err(|e| ReparentError::BadCandidate(format!("current primary {e}")))?;
    match cand.replication().await {
        Ok(Some(r)) if r.source == old => {}
        Ok(Some(r)) => return Err(ReparentError::BadCandidate(format!("{candidate} replicates from {}, not {old}", r.source))),
        Ok(None) => return Err(ReparentError::BadCandidate(format!("{candidate} is not a replica"))),
        Err(e) => return Err(ReparentError::BadCandidate(e.to_string())),
    }
    let run = Run::new(cluster, &old, &candidate, record.term);
    let mut p = Planned { run, store, record, old, candidate, oldc, cand, episode: 0, announced: None };
    let outcome = p.steps().await;
    let Planned { run, oldc, cand, .. } = p;
    oldc.close().await;
    cand.close().await;
    let (outcome, error) = outcome;
    Ok(run.finish(outcome, error))
}

impl Planned<'_> {
    /// Every step in order; the outcome and its error.
    async fn steps(&mut self) -> (Outcome, Option<String>) {
        self.prepare().await;
        self.announce();
        if let Err(e) = self.announce_peers().await {
            return self.undo(false, e).await;
        }
        if self.run.cancel_requested() {
            return self.undo(false, "cancelled by an operator".into()).await;
        }
        self.grace().await;
        if self.run.cancel_requested() {
            return self.undo(false, "cancelled by an operator".into()).await;
        }
        let final_pos = match self.revoke().await {
            Ok(p) => p,
            Err(e) => return self.undo(false, e).await,
        };
        if let Err(e) = self.catch_up(&final_pos).await {
            return self.undo(false, e).await;
        }
        if self.run.cancel_requested() {
            return self.undo(false, "cancelled by an operator".into()).await;
        }
        let outcome = self.establish().await;
        if let Some((p, a)) = &self.announced {
            p.settle(a, "done").await;
        }
        match outcome {
            Ok(Outcome::Ok) => (Outcome::Ok, None),
            Ok(o) => (o, self.run.report.error.clone()),
            Err(Failed::Cancelled) => self.undo(false, Failed::Cancelled.message()).await,
            Err(f) => self.undo(true, f.message()).await,
        }
    }

    /// Prepare, while the old primary still serves: catch up with the live
    /// primary until a fresh snapshot is reached quickly (then the lag left for
    /// the pause is small); after half the prepare timeout (at most 2 s), throttle
    /// writers to [`PREPARE_THROTTLE`] at a time. Never fails: a candidate still
    /// behind at `prepare_timeout_ms` is caught up after the revoke.
    async fn prepare(&mut self) {
        let settings = self.run.cluster.settings();
        let gate = &self.run.cluster.gate;
        let prepare_deadline = Instant::now() + settings.prepare_timeout;
        let throttle_at = Instant::now() + (settings.prepare_timeout / 2).min(Duration::from_secs(2));
        let mut throttled = false;
        let mut caught = None;
        let mut snapshot = String::new();
        while Instant::now() < prepare_deadline {
            if !throttled && Instant::now() >= throttle_at {
                gate.set_throttle(Some(PREPARE_THROTTLE));
                throttled = true;
            }
            snapshot = self.oldc.gtid_binlog_pos().await.unwrap_or_default();
            let t = Instant::now();
            let limit = prepare_deadline.saturating_duration_since(t).min(Duration::from_secs(1));
            if self.cand.wait_for_gtid(&snapshot, limit).await.unwrap_or(false) && t.elapsed() <= PREPARE_LAG {
                caught = Some(t.elapsed());
                break;
            }
        }
        let how = if throttled { format!(" (writers throttled to {PREPARE_THROTTLE} at a time)") } else { String::new() };
        let (old, candidate) = (&self.old, &self.candidate);
        let detail = match caught {
            Some(lag) => format!("{candidate} within {} ms of {old} ({snapshot}){how}", lag.as_millis()),
            None => format!("{candidate} still behind {old} after {} ms{how}; continuing", settings.prepare_timeout.as_millis()),
        };
        self.run.step(Step::Prepare, detail);
    }

    /// Announce: the gate holds new requests from here on.
    fn announce(&mut self) {
        let reason = format!("planned reparent to {}", self.candidate);
        let Some(episode) = self.run.cluster.gate.begin(self.record.term, &self.old, &reason, true) else {
            unreachable!("planned episodes are never skipped")
        };
        self.episode = episode;
        self.run.step(Step::Announce, format!("buffering at term {} (episode {episode})", self.record.term));
    }

    /// On etcd, tell the other proxies to buffer and end their transactions too.
    async fn announce_peers(&mut self) -> Result<(), String> {
        let Some(p) = self.store.peers() else { return Ok(()) };
        let grace = self.run.cluster.settings().transaction_grace;
        match p.announce(&self.run.cluster.name, self.record.term, &self.old, grace).await {
            Ok(a) => {
                self.announced = Some((p, a));
                Ok(())
            }
            Err(e) => Err(format!("announcing the reparent to the other proxies failed: {e}")),
        }
    }

    /// Grace: open transactions may finish (`transaction_grace_ms`); then, on
    /// etcd, the other proxies' acknowledgements (grace + 2 s).
    async fn grace(&mut self) {
        let grace = self.run.cluster.settings().transaction_grace;
        let left = self.run.cluster.gate.wait_inactive(grace).await;
        self.run
            .step(Step::Grace, if left == 0 { "no open transactions".to_string() } else { format!("{left} session(s) still active; ending them") });
        if let Some((p, a)) = &self.announced {
            let (acked, expected) = p.wait_acks(a, grace + Duration::from_secs(2)).await;
            let missing: Vec<&String> = expected.iter().filter(|e| !acked.contains(e)).collect();
            self.run.step(
                Step::Acks,
                if missing.is_empty() {
                    format!("{} other proxy(ies) buffering with their transactions ended", expected.len())
                } else {
                    format!("no acknowledgement from {missing:?}: the revocation stops them instead (they see 1290 and buffer)")
                },
            );
        }
    }

    /// Revoke: `read_only=ON` first (other proxies' sessions then see 1290 and
    /// hold); a running write holds that back: past [`REVOKE_PATIENCE`] the client
    /// statements still running are ended from a second connection so it can go
    /// through. Then read_only verified, the client connections ended, the final
    /// position read. Ok: the final position.
    async fn revoke(&mut self) -> Result<String, String> {
        let cluster = self.run.cluster;
        let user = cluster.settings().admin.user;
        let old = self.old.clone();
        let oldc = &mut self.oldc;
        let r = async {
            let mut running = 0;
            {
                let set = oldc.set_read_only(true);
                tokio::pin!(set);
                tokio::select! {
                    r = &mut set => r?,
                    _ = tokio::time::sleep(REVOKE_PATIENCE) => {
                        let mut killer = cluster.connect(&old).await?;
                        running = killer.kill_clients(&user).await?;
                        killer.close().await;
                        set.await?;
                    }
                }
            }
            if !oldc.read_only().await? {
                return Err(crate::server::ServerError::Query { addr: old.clone(), why: "read_only did not stick".into() });
            }
            let killed = oldc.kill_clients(&user).await?;
            let pos = oldc.gtid_binlog_pos().await?;
            Ok((running, killed, pos))
        }
        .await;
        match r {
            Ok((running, killed, pos)) => {
                self.run.step(
                    Step::Revoke,
                    format!(
                        "{old} read_only=ON ({running} client statement(s) still running after the grace period ended first); {killed} client connection(s) killed; final position {pos}"
                    ),
                );
                Ok(pos)
            }
            Err(e) => Err(format!("revoke failed: {e}")),
        }
    }

    /// Catch up: the candidate applies the old primary's final position
    /// (`catchup_timeout_ms`).
    async fn catch_up(&mut self, final_pos: &str) -> Result<(), String> {
        let timeout = self.run.cluster.settings().catchup_timeout;
        match self.cand.wait_for_gtid(final_pos, timeout).await {
            Ok(true) => {
                self.run.step(Step::CatchUp, format!("{} applied {final_pos}", self.candidate));
                Ok(())
            }
            Ok(false) => Err(format!("{} did not reach {final_pos} within {} ms", self.candidate, timeout.as_millis())),
            Err(e) => Err(format!("catch-up failed: {e}")),
        }
    }

    /// The shared tail: promote, publish, repoint (the old primary, resetting its
    /// slave position, and every other server), verify.
    async fn establish(&mut self) -> Result<Outcome, Failed> {
        let cluster = self.run.cluster;
        let mut others = Vec::new();
        let mut unreachable = Vec::new();
        let errant = errant_servers(cluster);
        for addr in cluster.settings().servers.iter().filter(|s| **s != self.old && **s != self.candidate) {
            if let Some(e) = errant.iter().find(|e| crate::health::errant_addr(e) == addr) {
                // Not rejoined: replicating, it would count as a semi-sync
                // acknowledger while unable to apply.
                unreachable.push(format!("{addr}: errant, left alone ({e})"));
                continue;
            }
            match cluster.connect(addr).await {
                Ok(s) => others.push((addr.clone(), s)),
                Err(e) => unreachable.push(format!("{addr}: {e}")),
            }
        }
        let mut targets = vec![(self.old.clone(), &mut self.oldc, true)];
        targets.extend(others.iter_mut().map(|(a, s)| (a.clone(), s, false)));
        let r = establish(&mut self.run, self.store, self.episode, &self.record, (&self.candidate, &mut self.cand), targets, unreachable).await;
        for (_, s) in others {
            s.close().await;
        }
        r
    }

    /// Undo, before anything was published: the candidate back to replicating
    /// from the old primary and read-only (if it was promoted; confirmed over a
    /// fresh connection, since a statement that timed out may still apply), the
    /// old primary writable again at the same term, the held requests released to
    /// it, the other proxies told. If either cannot be made so, nothing is
    /// released (two writable servers, or a drain into 1290s): requests fail fast
    /// (9109) with what is left to repair, and the outcome is `held`.
    async fn undo(&mut self, promoted: bool, error: String) -> (Outcome, Option<String>) {
        let cluster = self.run.cluster;
        let s = cluster.settings();
        let mut notes = Vec::new();
        let mut candidate_safe = true;
        if promoted {
            if let Err(e) = self.cand.replicate_from(&self.old, &s.repl_user, &s.repl_password, false).await {
                notes.push(format!("candidate not repointed: {e}"));
            }
            let _ = self.cand.set_read_only(true).await;
            let confirmed = match cluster.connect(&self.candidate).await {
                Ok(mut c) => {
                    let r = c.read_only().await;
                    c.close().await;
                    r.map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match confirmed {
                Ok(true) => notes.push(format!("{} read-only again", self.candidate)),
                Ok(false) => {
                    candidate_safe = false;
                    notes.push(format!("{} is still writable", self.candidate));
                }
                Err(e) => {
                    candidate_safe = false;
                    notes.push(format!("{} not confirmed read-only ({e})", self.candidate));
                }
            }
        }
        let writable = if !candidate_safe {
            notes.push(format!("{} left read-only (two writable servers otherwise)", self.old));
            false
        } else {
            match self.oldc.set_read_only(false).await {
                Ok(()) => {
                    notes.push(format!("{} writable again", self.old));
                    true
                }
                Err(e) => {
                    notes.push(format!("{} could not be made writable: {e}", self.old));
                    false
                }
            }
        };
        if writable {
            cluster.gate.release(self.episode, Release::Undone);
        } else {
            cluster.gate.no_primary(self.episode, &format!("a reparent's undo is incomplete ({}); an operator repairs it", notes.join("; ")), true);
        }
        if let Some((p, a)) = &self.announced {
            p.settle(a, "undone").await;
        }
        self.run.step(Step::Undo, notes.join("; "));
        (if writable { Outcome::Undone } else { Outcome::Held }, Some(error))
    }
}
