//! The tail both procedures share once a new primary is chosen and the old one
//! is revoked or fenced: promote -> publish -> repoint -> verify.
//!
//! - promote: `STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=OFF` on the new
//!   primary (admin timeout per statement).
//! - publish: the topology names it at term + 1. An answer the store could not
//!   confirm (etcd timeout) carries on: the conditions (C2 needs the new term)
//!   release the gate only if it was written.
//! - repoint: every other server replicates from it; waits (catch-up timeout,
//!   at most 10 s) until each one's IO and SQL threads run, and names those that
//!   do not (`not_following`, with their `Last_IO_Error`). The gate does not wait
//!   for this.
//! - verify: waits (max failover duration) for the supervisor to release the
//!   episode, which it does only when every leadership condition holds.
//!
//! Failing before publish returns [`Failed`]: nothing names the new primary, and
//! the caller decides (a planned reparent undoes, a failover holds).

use crate::error::ControlError;
use crate::gate::{Phase, Release};
use crate::run::{Outcome, Run, Step};
use crate::server::Server;
use crate::store::Store;
use crate::topology::ClusterRecord;

/// Why the tail stopped before the new primary was published.
pub(crate) enum Failed {
    /// An operator's cancel, taken before the promote.
    Cancelled,
    Promote(String),
    Publish(String),
}

impl Failed {
    pub(crate) fn message(&self) -> String {
        match self {
            Failed::Cancelled => "cancelled by an operator".to_string(),
            Failed::Promote(e) => format!("promote failed: {e}"),
            Failed::Publish(e) => format!("publishing the new primary failed: {e}"),
        }
    }
}

/// A server to point at the new primary: (address, connection, reset its slave
/// position first: true for an old primary, whose slave position is stale).
pub(crate) type Target<'s> = (String, &'s mut Server, bool);

/// Promote `new` (at `new_addr`) over `record`, publish it at `record.term + 1`,
/// repoint `targets` (plus `not_following`: servers already known not to follow,
/// e.g. unreachable), and verify. Ok: the outcome (`Ok` when every condition
/// held, `Held` otherwise).
pub(crate) async fn establish(
    run: &mut Run<'_>,
    store: &Store,
    episode: u64,
    record: &ClusterRecord,
    (new_addr, new): (&str, &mut Server),
    targets: Vec<Target<'_>>,
    not_following: Vec<String>,
) -> Result<Outcome, Failed> {
    // The point of no return: a cancel is taken here or refused from here on.
    if run.cancel_or_close(Step::Promote) {
        return Err(Failed::Cancelled);
    }
    promote(new).await.map_err(Failed::Promote)?;
    run.step(Step::Promote, format!("{new_addr} stopped replicating and is writable"));
    let term = record.term + 1;
    let next = ClusterRecord { primary: new_addr.to_string(), term, servers: record.servers.clone() };
    match store.put_cluster(&run.cluster.name, next).await {
        Ok(()) => run.step(Step::Publish, format!("topology names {new_addr} at term {term}")),
        // The store may name it already: going back could give two leaders.
        Err(e @ ControlError::OutcomeUnknown(_)) => {
            run.step(Step::Publish, format!("publishing the new primary: {e}; carrying on: the leadership conditions decide"))
        }
        Err(e) => return Err(Failed::Publish(e.to_string())),
    }
    run.report.term = term;
    repoint(run, new_addr, targets, not_following).await;
    Ok(if verify(run, episode, new_addr).await { Outcome::Ok } else { Outcome::Held })
}

async fn promote(new: &mut Server) -> Result<(), String> {
    new.stop_replicating().await.map_err(|e| e.to_string())?;
    new.set_read_only(false).await.map_err(|e| e.to_string())
}

/// Point each target at `primary`, then wait (up to the catch-up timeout, at most
/// 10 s) until each one's IO and SQL threads run against it. The step and
/// `not_following` say which do not.
pub(crate) async fn repoint(run: &mut Run<'_>, primary: &str, mut targets: Vec<Target<'_>>, mut not_following: Vec<String>) {
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
    run.step(Step::Repoint, detail);
}

/// Wait (up to the max failover duration) for the supervisor to release
/// `episode`. True when it was released because every condition held (decided
/// by how that episode ended, not by the latest report: a new episode may have
/// begun right after it drained).
///
/// While it waits, a server that comes back (a crashed one restarting, read-only,
/// not replicating, its history contained in the new primary's, not errant) is
/// pointed at `primary` (every [`FOLLOW_AGAIN`]): with `semi_sync` the new
/// primary may have no replica left until then (C5).
pub(crate) async fn verify(run: &mut Run<'_>, episode: u64, primary: &str) -> bool {
    let cluster = run.cluster;
    let mut rx = cluster.gate.watch();
    let deadline = tokio::time::Instant::now() + cluster.settings().max_failover_duration;
    let mut rejoined = Vec::new();
    loop {
        let wait = async { rx.wait_for(|s| s.episode != episode || s.phase != Phase::Buffering).await.is_ok() };
        let ended = tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + FOLLOW_AGAIN), wait).await.is_ok();
        if ended || tokio::time::Instant::now() >= deadline {
            break;
        }
        follow_again(cluster, primary, &mut rejoined).await;
    }
    let also = if rejoined.is_empty() { String::new() } else { format!(" (came back and now replicate from {primary}: {})", rejoined.join(", ")) };
    match cluster.gate.outcome(episode) {
        Some(Ok(Release::ConditionsHold)) => {
            run.step(Step::Verify, format!("every leadership condition holds; draining{also}"));
            true
        }
        how => {
            let report = cluster.conditions.borrow().clone();
            let failing = if report.episode == episode { report.failing().join("; ") } else { String::new() };
            let ended = match how {
                None => "still held".to_string(),
                Some(Ok(r)) => format!("released ({r:?})"),
                Some(Err(e)) => format!("failed ({e:?})"),
            };
            run.step(Step::Verify, format!("not every condition held (episode {ended}): {failing}{also}"));
            run.report.error = Some(format!("conditions not met: {failing}"));
            false
        }
    }
}

/// How often the verify step looks for servers that came back.
const FOLLOW_AGAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// Point every server that answers, is read-only, replicates from nothing, is
/// not errant and whose position `primary` contains, at `primary`.
async fn follow_again(cluster: &crate::cluster::ClusterHandle, primary: &str, rejoined: &mut Vec<String>) {
    let s = cluster.settings();
    let errant = cluster.health.lock().unwrap_or_else(|p| p.into_inner()).errant.clone();
    let mut login = s.admin.clone();
    login.timeout = s.health_timeout;
    let mut history = None;
    for addr in s.servers.iter().filter(|a| *a != primary && !errant.iter().any(|e| crate::health::errant_addr(e) == *a)) {
        let Ok(mut c) = cluster.connect_with(addr, &login).await else { continue };
        let idle = matches!(c.replication().await, Ok(None)) && matches!(c.read_only().await, Ok(true));
        if idle {
            // The health monitor's rejoin rule: its position (last GTID per
            // domain) is in the primary's history (binlog state and
            // gtid_slave_pos: a rebuilt primary keeps older streams only there).
            if history.is_none() {
                if let Ok(mut p) = cluster.connect_with(primary, &login).await {
                    history = p.gtid_history().await.ok();
                    p.close().await;
                }
            }
            let contained = match (&history, c.gtid_binlog_pos().await) {
                (Some(h), Ok(own)) => crate::gtid::contains(h, &own).is_ok(),
                _ => false,
            };
            if contained && c.replicate_from(primary, &s.repl_user, &s.repl_password, true).await.is_ok() {
                tracing::info!(cluster = %cluster.name, server = %addr, %primary, "a server that came back replicates from the new primary");
                rejoined.push(addr.clone());
            }
        }
        c.close().await;
    }
}
