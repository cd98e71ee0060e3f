//! The emergency reparent (unplanned failover): the primary is dead or hung.
//!
//! Revoke it if it still answers; fence it by stopping every replica's IO thread
//! (which also removes its semi-sync ackers); let the relay logs apply; elect the
//! most advanced replica, refusing with "split brain" when its GTID position does
//! not contain every other's (or every GTID baton acknowledged); promote it at a
//! new term; repoint the others; then the same condition check and drain as the
//! planned path. The old primary, when it comes back, is revoked and rejoined by
//! the health monitor ([`crate::health`]).

use std::sync::Arc;

use crate::cluster::ClusterHandle;
use crate::gtid;
use crate::reparent::{verify, ReparentError, ReparentReport, Run};
use crate::server::Server;
use crate::store::Store;
use crate::topology::ClusterRecord;

/// Run an emergency reparent of `cluster`. `trigger` says why (operator, health checks).
pub async fn emergency(cluster: &Arc<ClusterHandle>, store: &Store, trigger: &str) -> Result<ReparentReport, ReparentError> {
    let _lock = cluster.reparent_lock.try_lock().map_err(|_| ReparentError::AlreadyRunning(cluster.name.clone()))?;
    let settings = cluster.settings();
    let topo = store.current();
    let record = topo.cluster(&cluster.name).cloned().ok_or_else(|| ReparentError::NoRecord(cluster.name.clone()))?;
    let old = record.primary.clone();
    let buffered_before = cluster.gate.counters.buffered.load(std::sync::atomic::Ordering::Relaxed);
    let mut run = Run::new(cluster, &old, "", record.term);
    let Some(episode) = cluster.gate.begin(record.term, &old, &format!("failover ({trigger})"), true) else {
        unreachable!("planned episodes are never skipped")
    };
    run.step("announce", format!("buffering at term {} (episode {episode}): {trigger}", record.term));

    // Revoke the old primary if it still answers (a failover asked of a live primary).
    let mut short = settings.admin.clone();
    short.timeout = settings.health_timeout;
    // Whether it was serving (writable) when revoked: only then may a refused
    // failover give it back. A primary that came back read-only from a crash may
    // lack acknowledged writes (crash recovery drops them); it stays revoked.
    let old_alive = match Server::connect(&old, &short).await {
        Ok(mut s) => {
            let r = async {
                let was_writable = !s.read_only().await?;
                s.exec("SET GLOBAL read_only=ON").await?;
                let k = s.kill_clients(&settings.admin.user).await?;
                Ok::<_, crate::server::ServerError>((was_writable, k))
            }
            .await;
            s.close().await;
            match r {
                Ok((was_writable, k)) => {
                    let before = if was_writable { "was writable" } else { "was already read-only" };
                    run.step("revoke", format!("{old} answered ({before}): read_only=ON, {k} connection(s) killed"));
                    was_writable
                }
                Err(e) => {
                    run.step("revoke", format!("{old} could not be revoked ({e}); fencing it"));
                    false
                }
            }
        }
        Err(e) => {
            run.step("revoke", format!("{e}; fencing it"));
            false
        }
    };

    // Fence: stop every replica's IO thread, then let what they received apply.
    // In parallel, and patiently: an IO thread blocked reading from a hung primary
    // stops only when that read gives up.
    let mut set = tokio::task::JoinSet::new();
    for addr in settings.servers.iter().filter(|s| **s != old) {
        let (addr, login, patience) = (addr.clone(), settings.admin.clone(), settings.catchup_timeout);
        set.spawn(async move {
            let mut s = Server::connect(&addr, &login).await?;
            s.exec_within("STOP SLAVE IO_THREAD", patience).await?;
            Ok::<_, crate::server::ServerError>((addr, s))
        });
    }
    let mut replicas: Vec<(String, Server)> = Vec::new();
    let mut notes = Vec::new();
    for r in set.join_all().await {
        match r {
            Ok(x) => replicas.push(x),
            Err(e) => notes.push(e.to_string()),
        }
    }
    replicas.sort_by(|a, b| a.0.cmp(&b.0));
    run.step(
        "fence",
        format!(
            "IO threads stopped on {} replica(s){}",
            replicas.len(),
            if notes.is_empty() { String::new() } else { format!("; {}", notes.join("; ")) }
        ),
    );
    let mut positions = Vec::new();
    for (addr, s) in &mut replicas {
        let io_pos = s.replication().await.ok().flatten().map(|r| r.gtid_io_pos).unwrap_or_default();
        if !io_pos.is_empty() {
            let _ = s.wait_for_gtid(&io_pos, settings.catchup_timeout).await;
        }
        let pos = s.gtid_current_pos().await.unwrap_or_default();
        let state = s.gtid_binlog_state().await.unwrap_or_default();
        positions.push((addr.clone(), pos, state));
    }
    run.step("apply_relay", positions.iter().map(|(a, p, _)| format!("{a} at {p:?}")).collect::<Vec<_>>().join(", "));

    // Errant servers (history not contained in the old primary's, as the health
    // monitor last saw it) are neither candidates nor compared: their extra
    // transactions were never acknowledged and must not block or win the election.
    let errant: Vec<String> = cluster.health.lock().unwrap_or_else(|p| p.into_inner()).errant.clone();
    let excluded: Vec<String> =
        positions.iter().filter(|(a, _, _)| errant.iter().any(|e| crate::health::errant_addr(e) == a)).map(|(a, _, _)| a.clone()).collect();
    if !excluded.is_empty() {
        positions.retain(|(a, _, _)| !excluded.contains(a));
        run.step("exclude", format!("errant, left out of the election: {}", errant.join("; ")));
    }

    // Elect.
    let acked = cluster.acked.position();
    let winner = positions.iter().max_by_key(|(_, p, _)| gtid::advance(p)).cloned();
    let refusal = match &winner {
        None => Some("no reachable replica to promote".to_string()),
        Some((w, _, wstate)) => positions
            .iter()
            .filter(|(a, _, _)| a != w)
            .find_map(|(a, pos, _)| {
                gtid::contains(wstate, pos).err().map(|why| format!("split brain: {w} does not contain {a}'s position {pos:?} ({why})"))
            })
            .or_else(|| gtid::contains(wstate, &acked).err().map(|why| format!("{w} lacks writes baton acknowledged: {why}"))),
    };
    if let Some(why) = refusal {
        // Nothing promoted. Let the replicas reconnect; give the old primary back if
        // it was serving when revoked.
        for (_, s) in &mut replicas {
            let _ = s.exec("START SLAVE IO_THREAD").await;
        }
        if old_alive {
            if let Ok(mut s) = Server::connect(&old, &short).await {
                let _ = s.exec("SET GLOBAL read_only=OFF").await;
            }
            cluster.gate.release(episode);
        }
        run.step("elect", format!("refused: {why}"));
        for (_, s) in replicas {
            s.close().await;
        }
        return Ok(run.finish("refused", Some(why), buffered_before));
    }
    let (winner, wpos, _) = winner.expect("checked");
    run.report.to = winner.clone();
    run.step("elect", format!("{winner} at {wpos:?} contains every other replica and every acknowledged write"));

    // Promote, publish, repoint.
    let term = record.term + 1;
    let promoted = async {
        let (_, s) = replicas.iter_mut().find(|(a, _)| *a == winner).expect("winner is a replica");
        s.exec("STOP SLAVE").await?;
        s.exec("RESET SLAVE ALL").await?;
        s.exec("SET GLOBAL read_only=OFF").await
    }
    .await;
    if let Err(e) = promoted {
        let err = format!("promote failed: {e}");
        run.step("promote", err.clone());
        return Ok(run.finish("held", Some(err), buffered_before));
    }
    run.step("promote", format!("{winner} is writable and not replicating"));
    if let Err(e) = store.put_cluster(&cluster.name, ClusterRecord { primary: winner.clone(), term, servers: record.servers.clone() }).await {
        let err = format!("publishing the new primary failed: {e}");
        run.step("publish", err.clone());
        return Ok(run.finish("held", Some(err), buffered_before));
    }
    run.report.term = term;
    run.step("publish", format!("topology names {winner} at term {term}"));
    let targets = replicas.iter_mut().filter(|(a, _)| *a != winner).map(|(a, s)| (a.clone(), s, false)).collect();
    crate::reparent::repoint(&mut run, &winner, targets, Vec::new()).await;
    for (_, s) in replicas {
        s.close().await;
    }
    if verify(&mut run, episode).await {
        Ok(run.finish("ok", None, buffered_before))
    } else {
        let err = run.report.error.clone();
        Ok(run.finish("held", err, buffered_before))
    }
}
