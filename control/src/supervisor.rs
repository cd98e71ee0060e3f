//! The per-cluster supervisor: while the gate buffers, it re-checks every
//! leadership condition (every `check_interval`, and whenever the topology
//! changes) and releases the gate only when all hold; past the max failover
//! duration it fails the held requests. An old primary that a failover could
//! not revoke (it fenced it instead) and that answers again, writable, once the
//! topology names another at a newer term (a hung primary woken mid-failover) is
//! revoked here, so C1 can hold; a primary another tool left writable is only
//! reported (C1 false). It reads state (the gate's status, the
//! topology) each round, so nothing it needs can be missed.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::ClusterHandle;
use crate::conditions;
use crate::gate::{GateError, Phase, Release};
use crate::topology::Topology;

/// Run until `stop` is cancelled.
pub async fn supervise(cluster: Arc<ClusterHandle>, mut topo: watch::Receiver<Arc<Topology>>, stop: CancellationToken) {
    let mut gate_rx = cluster.gate.watch();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = gate_rx.wait_for(|s| s.phase == Phase::Buffering) => if r.is_err() { return },
        }
        let episode = cluster.gate.status().episode;
        loop {
            let status = cluster.gate.status();
            if status.episode != episode || status.phase != Phase::Buffering {
                break;
            }
            let settings = cluster.settings();
            // Not while a reparent or failover runs (it holds the reparent lock):
            // it has its own bound, and ending its episode here would let writes
            // through to a primary it is replacing.
            let procedure_running = cluster.reparent_lock.try_lock().is_err();
            if !procedure_running && status.since.is_some_and(|t| t.elapsed() >= settings.max_failover_duration) {
                cluster.gate.fail(episode, GateError::MaxDuration);
                break;
            }
            let snapshot = topo.borrow_and_update().clone();
            // A suspicion that did not come true: no reparent, same term, and the
            // primary answers writable and not replicating. Release to it.
            let same_term = snapshot.cluster(&cluster.name).is_some_and(|r| r.term == status.start_term && r.primary == status.old_primary);
            if !status.planned && same_term && primary_is_healthy(&cluster, &status.old_primary).await {
                // Refused (false) if a failover took the episode over meanwhile.
                if cluster.gate.release(episode, Release::SuspicionCleared) {
                    tracing::info!(cluster = %cluster.name, episode, "primary healthy again; released");
                    break;
                }
                continue;
            }
            let prev = cluster.conditions.borrow().clone();
            let report = conditions::evaluate(&cluster, &snapshot, &status, &prev).await;
            let all = report.all_hold;
            if !all && report.failing() != prev.failing() {
                tracing::info!(cluster = %cluster.name, episode, failing = ?report.failing(), "leadership conditions");
            }
            let fenced = cluster.fenced_primary.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let revoke_old = !all
                && fenced.is_some_and(|(ep, addr)| ep == episode && addr == status.old_primary)
                && report.term > status.start_term
                && report.new_primary != status.old_primary
                && c1_writable(&report);
            cluster.conditions.send_replace(report);
            if revoke_old {
                // The old primary answers again, writable, after the topology named
                // another at a newer term (a hung primary woke up mid-failover):
                // revoke it now; C1 is re-checked next round. Left writable, it
                // would block the release until the max failover duration.
                revoke(&cluster, &status.old_primary).await;
            }
            if all {
                tracing::info!(cluster = %cluster.name, episode, "every leadership condition holds; releasing");
                cluster.gate.release(episode, Release::ConditionsHold);
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(settings.check_interval) => {}
                _ = topo.changed() => {}
            }
        }
    }
}

/// Whether C1 fails because the old primary answered writable.
fn c1_writable(report: &conditions::ConditionsReport) -> bool {
    report.conditions.iter().any(|c| c.id == "C1" && !c.holds && c.reason.contains("still writable"))
}

/// Revoke `old`: read_only=ON, its client connections killed.
async fn revoke(cluster: &ClusterHandle, old: &str) {
    let user = cluster.settings().admin.user;
    let r = match cluster.connect(old).await {
        Ok(mut s) => {
            let r = async {
                s.set_read_only(true).await?;
                s.kill_clients(&user).await
            }
            .await;
            s.close().await;
            r
        }
        Err(e) => Err(e),
    };
    match r {
        Ok(killed) => tracing::warn!(cluster = %cluster.name, old, killed, "the old primary answered again, writable: revoked (read_only=ON)"),
        Err(e) => tracing::warn!(cluster = %cluster.name, old, error = %e, "the old primary answered again, writable; revoking it failed"),
    }
}

async fn primary_is_healthy(cluster: &ClusterHandle, addr: &str) -> bool {
    let mut login = cluster.settings().admin;
    // More patient than a health check: releasing a held request is cheap, holding
    // it to the window because of one slow answer is not.
    login.timeout = cluster.settings().health_timeout * 3;
    match cluster.connect_with(addr, &login).await {
        Ok(mut s) => {
            let ok = matches!(s.read_only().await, Ok(false)) && matches!(s.replication().await, Ok(None));
            s.close().await;
            ok
        }
        Err(_) => false,
    }
}
