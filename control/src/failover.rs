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
use crate::establish::establish;
use crate::gate::Release;
use crate::gtid;
use crate::run::{Outcome, ReparentError, ReparentReport, Run, Step};
use crate::store::Store;

/// Run an emergency reparent of `cluster`. `trigger` says why (operator, health checks).
pub async fn emergency(cluster: &Arc<ClusterHandle>, store: &Store, trigger: &str) -> Result<ReparentReport, ReparentError> {
    let _lock = cluster.reparent_lock.try_lock().map_err(|_| ReparentError::AlreadyRunning(cluster.name.clone()))?;
    let settings = cluster.settings();
    let topo = store.current();
    let record = topo.cluster(&cluster.name).cloned().ok_or_else(|| ReparentError::NoRecord(cluster.name.clone()))?;
    let old = record.primary.clone();
    let mut run = Run::new(cluster, &old, "", record.term);
    let Some(episode) = cluster.gate.begin(record.term, &old, &format!("failover ({trigger})"), true) else {
        unreachable!("planned episodes are never skipped")
    };
    // Every backend connection of the old term is closed first: nothing sent
    // to the old primary can be acknowledged after the elect step reads the
    // acknowledged GTIDs (their clients get the documented 9105/9101).
    let closed = cluster.fence.close_all();
    run.step(
        Step::Announce,
        format!("buffering at term {} (episode {episode}): {trigger}; {closed} backend connection(s) of the old term closed", record.term),
    );

    // Revoke the old primary if it still answers (a failover asked of a live primary).
    let mut short = settings.admin.clone();
    short.timeout = settings.health_timeout;
    // Whether it was serving (writable) when revoked: only then may a refused
    // failover give it back. A primary that came back read-only from a crash may
    // lack acknowledged writes (crash recovery drops them); it stays revoked.
    let (old_alive, revoked) = match cluster.connect_with(&old, &short).await {
        Ok(mut s) => {
            let r = async {
                let was_writable = !s.read_only().await?;
                s.set_read_only(true).await?;
                let k = s.kill_clients(&settings.admin.user).await?;
                Ok::<_, crate::server::ServerError>((was_writable, k))
            }
            .await;
            s.close().await;
            match r {
                Ok((was_writable, k)) => {
                    let before = if was_writable { "was writable" } else { "was already read-only" };
                    run.step(Step::Revoke, format!("{old} answered ({before}): read_only=ON, {k} connection(s) killed"));
                    (was_writable, true)
                }
                Err(e) => {
                    run.step(Step::Revoke, format!("{old} could not be revoked ({e}); fencing it"));
                    (false, false)
                }
            }
        }
        Err(e) => {
            run.step(Step::Revoke, format!("{e}; fencing it"));
            (false, false)
        }
    };

    if !revoked {
        // If it wakes up writable during this episode, the supervisor revokes it.
        *cluster.fenced_primary.lock().unwrap_or_else(|p| p.into_inner()) = Some((episode, old.clone()));
    }

    // Fence: stop every replica's IO thread, then let what they received apply.
    // In parallel, and patiently: an IO thread blocked reading from a hung primary
    // stops only when that read gives up.
    let mut set = tokio::task::JoinSet::new();
    for addr in settings.servers.iter().filter(|s| **s != old) {
        let (addr, login, patience, sql) = (addr.clone(), settings.admin.clone(), settings.catchup_timeout, cluster.sql.clone());
        set.spawn(async move {
            let mut s = sql.connect(&addr, &login).await?;
            s.stop_io_thread(patience).await?;
            Ok::<_, crate::server::ServerError>((addr, s))
        });
    }
    let mut replicas: Vec<(String, crate::server::Server)> = Vec::new();
    let mut notes = Vec::new();
    for r in set.join_all().await {
        match r {
            Ok(x) => replicas.push(x),
            Err(e) => notes.push(e.to_string()),
        }
    }
    replicas.sort_by(|a, b| a.0.cmp(&b.0));
    run.step(
        Step::Fence,
        format!(
            "IO threads stopped on {} replica(s){}",
            replicas.len(),
            if notes.is_empty() { String::new() } else { format!("; {}", notes.join("; ")) }
        ),
    );
    let mut positions = Vec::new();
    let mut own: std::collections::HashMap<String, (String, Option<u32>)> = std::collections::HashMap::new();
    for (addr, s) in &mut replicas {
        let io_pos = s.replication().await.ok().flatten().map(|r| r.gtid_io_pos).unwrap_or_default();
        if !io_pos.is_empty() {
            let _ = s.wait_for_gtid(&io_pos, settings.catchup_timeout).await;
        }
        let pos = s.gtid_current_pos().await.unwrap_or_default();
        // Its history (binlog state and gtid_slave_pos): a rebuilt server keeps
        // the streams from before its seed only in gtid_slave_pos.
        let state = s.gtid_history().await.unwrap_or_default();
        positions.push((addr.clone(), pos, state));
        // Its binlog state and server id: what it wrote itself (see the elect step).
        let binlog = s.gtid_binlog_state().await.unwrap_or_default();
        let id = s.variable("server_id").await.ok().and_then(|v| v.parse::<u32>().ok());
        own.insert(addr.clone(), (binlog, id));
    }
    run.step(Step::ApplyRelay, positions.iter().map(|(a, p, _)| format!("{a} at {p:?}")).collect::<Vec<_>>().join(", "));

    // Errant servers (history not contained in the old primary's, as the health
    // monitor last saw it) are neither candidates nor compared: their extra
    // transactions were never acknowledged and must not block or win the election.
    let errant: Vec<String> = cluster.health.lock().unwrap_or_else(|p| p.into_inner()).errant.clone();
    let excluded: Vec<String> =
        positions.iter().filter(|(a, _, _)| errant.iter().any(|e| crate::health::errant_addr(e) == a)).map(|(a, _, _)| a.clone()).collect();
    if !excluded.is_empty() {
        // Left as fenced (IO thread stopped): an errant server that replicates
        // would count as a semi-sync acknowledger while unable to apply.
        positions.retain(|(a, _, _)| !excluded.contains(a));
        let (out, kept): (Vec<_>, Vec<_>) = replicas.into_iter().partition(|(a, _)| excluded.contains(a));
        replicas = kept;
        for (_, s) in out {
            s.close().await;
        }
        run.step(Step::Exclude, format!("errant, left out of the election and the repoint: {}", errant.join("; ")));
    }

    // Elect. The fence again first: a connection registered at the old
    // generation while the steps above ran is shut down, its acknowledgement
    // refused, before the acknowledged GTIDs are read.
    cluster.fence.close_all();
    let acked = cluster.acked.position();
    // The most advanced of those with every acknowledged write (one without
    // can never be promoted: the check below refuses it).
    let winner = positions.iter().max_by_key(|(_, p, h)| (gtid::contains(h, &acked).is_ok(), gtid::advance(p))).cloned();
    // A replica the winner does not contain only by its own latest transaction
    // (an old primary that restarted with a last commit nobody received, before
    // the health monitor could see it errant: the primary it would be compared
    // with was down) is errant, not a split brain, unless the winner's latest
    // there is its own too (then neither is known good). Such a transaction was
    // never acknowledged (the acknowledged check below still applies).
    let mut late_errant: Vec<String> = Vec::new();
    let mut refusal = match &winner {
        None => Some("no reachable replica to promote".to_string()),
        Some((w, _, wstate)) => {
            let (wbinlog, wid) = own.get(w).cloned().unwrap_or_default();
            positions
                .iter()
                .filter(|(a, _, _)| a != w)
                .find_map(|(a, pos, _)| {
                    let why = gtid::contains(wstate, pos).err()?;
                    let (binlog, id) = own.get(a).cloned().unwrap_or_default();
                    match gtid::own_latest_lacked(wstate, &binlog, id) {
                        Some((d, s, n)) if !gtid::latest_is_own(&wbinlog, wid, d) => {
                            late_errant.push(format!("{a}: its own {d}-{s}-{n}, which {w} lacks"));
                            None
                        }
                        _ => Some(format!("split brain: {w} does not contain {a}'s position {pos:?} ({why})")),
                    }
                })
                .or_else(|| gtid::contains(wstate, &acked).err().map(|why| format!("{w} lacks writes baton acknowledged: {why}")))
        }
    };
    if refusal.is_none() && !late_errant.is_empty() {
        let out: Vec<String> = late_errant.iter().map(|e| crate::health::errant_addr(e).to_string()).collect();
        let (gone, kept): (Vec<_>, Vec<_>) = replicas.into_iter().partition(|(a, _)| out.contains(a));
        replicas = kept;
        for (_, s) in gone {
            s.close().await;
        }
        run.step(Step::Exclude, format!("errant, left out of the election and the repoint: {}", late_errant.join("; ")));
    }
    // Cancel now or never: past this point a request is refused as too late.
    let cancelled = refusal.is_none() && run.cancel_or_close(Step::Elect);
    if cancelled {
        refusal = Some("cancelled by an operator".to_string());
    }
    if let Some(why) = refusal {
        // Nothing promoted. Let the replicas reconnect; give the old primary back if
        // it was serving when revoked.
        for (_, s) in &mut replicas {
            let _ = s.start_io_thread().await;
        }
        let mut given_back = false;
        if old_alive {
            if let Ok(mut s) = cluster.connect_with(&old, &short).await {
                given_back = s.set_read_only(false).await.is_ok();
                s.close().await;
            }
            if given_back {
                cluster.gate.release(episode, Release::Refused);
            }
        }
        if !given_back {
            // Nothing serves and nothing was promoted: fail fast (9109) rather
            // than hold to the max failover duration; a restart of the old
            // primary (re-established if it can be), another failover or an
            // operator ends it.
            cluster.gate.no_primary(episode, &format!("failover refused: {why}; {old} not given back"), true);
        }
        let back = if given_back { format!("; {old} writable again, held requests released to it") } else { String::new() };
        run.step(Step::Elect, format!("refused: {why}{back}"));
        for (_, s) in replicas {
            s.close().await;
        }
        let outcome = if cancelled && given_back { Outcome::Undone } else { Outcome::Refused };
        return Ok(run.finish(outcome, Some(why)));
    }
    let (winner, wpos, _) = winner.expect("checked");
    run.report.to = winner.clone();
    run.step(Step::Elect, format!("{winner} at {wpos:?} contains every other replica and every acknowledged write"));

    // The shared tail: promote, publish, repoint, verify. A failure before publish
    // holds (the old primary is revoked or fenced; it is not given back).
    let Some(i) = replicas.iter().position(|(a, _)| *a == winner) else { unreachable!("the winner is a replica") };
    let (_, mut new) = replicas.remove(i);
    let wstate = positions.iter().find(|(a, _, _)| *a == winner).map(|(_, _, st)| st.clone()).unwrap_or_default();
    // The old primary, if it answered and was revoked, follows the new one too,
    // unless it is errant with respect to the winner (the health monitor's rule,
    // [`gtid::errant`]: then it is reported errant and not pointed anywhere).
    let mut old_conn = None;
    let mut not_following = Vec::new();
    if revoked {
        match cluster.connect_with(&old, &short).await {
            Ok(mut s) => match (s.gtid_binlog_state().await, s.variable("server_id").await) {
                (Ok(h), Ok(id)) if gtid::errant(&wstate, &h, id.parse().ok()).is_ok() => old_conn = Some(s),
                (Ok(h), Ok(id)) => {
                    not_following.push(format!(
                        "{old}: left alone, errant with respect to {winner} ({})",
                        gtid::errant(&wstate, &h, id.parse().ok()).unwrap_err()
                    ));
                    s.close().await;
                }
                (Err(e), _) | (_, Err(e)) => {
                    not_following.push(format!("{old}: {e}"));
                    s.close().await;
                }
            },
            Err(e) => not_following.push(format!("{old}: {e}")),
        }
    }
    let mut targets: Vec<crate::establish::Target<'_>> = replicas.iter_mut().map(|(a, s)| (a.clone(), s, false)).collect();
    if let Some(s) = old_conn.as_mut() {
        targets.push((old.clone(), s, true));
    }
    let outcome = establish(&mut run, store, episode, &record, (&winner, &mut new), targets, not_following).await;
    if let Some(s) = old_conn {
        s.close().await;
    }
    new.close().await;
    for (_, s) in replicas {
        s.close().await;
    }
    Ok(match outcome {
        Ok(Outcome::Ok) => run.finish(Outcome::Ok, None),
        Ok(o) => {
            let err = run.report.error.clone();
            run.finish(o, err)
        }
        Err(f) => {
            let err = f.message();
            run.finish(Outcome::Held, Some(err))
        }
    })
}
