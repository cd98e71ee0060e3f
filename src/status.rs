//! What the status API reports about a cluster: the topology record, each server
//! probed live (role, reachable, read_only, GTID position, replication source and
//! lag), the buffer, the leadership conditions and the last reparent.

use baton_control::cluster::ClusterHandle;
use baton_control::gate::Phase;
use baton_control::server::{Connect, MariaDbConnect};
use baton_control::Topology;
use serde_json::{json, Value};

/// Probe one server (bounded by the admin timeout).
async fn probe(addr: String, primary: String, login: baton_control::server::AdminLogin) -> Value {
    let role = if addr == primary { "primary" } else { "replica" };
    match MariaDbConnect.connect(&addr, &login).await {
        Err(e) => json!({"addr": addr, "role": role, "reachable": false, "error": e.to_string()}),
        Ok(mut s) => {
            let read_only = s.read_only().await.ok();
            let gtid = s.gtid_current_pos().await.ok();
            let repl = s.replication().await.ok().flatten();
            s.close().await;
            json!({
                "addr": addr,
                "role": role,
                "reachable": true,
                "read_only": read_only,
                "gtid_position": gtid,
                "replication": repl.as_ref().map(|r| json!({
                    "source": r.source, "io_running": r.io_running, "sql_running": r.sql_running,
                    "lag_seconds": r.lag_seconds, "last_error": r.last_error,
                })),
            })
        }
    }
}

/// The full status of one cluster.
pub async fn cluster(handle: &ClusterHandle, topo: &Topology) -> Value {
    let record = topo.cluster(&handle.name);
    let settings = handle.settings();
    let primary = record.map(|r| r.primary.clone()).unwrap_or_default();
    let mut set = tokio::task::JoinSet::new();
    for (i, addr) in settings.servers.iter().enumerate() {
        let (addr, primary, login) = (addr.clone(), primary.clone(), settings.admin.clone());
        set.spawn(async move { (i, probe(addr, primary, login).await) });
    }
    let mut servers: Vec<(usize, Value)> = set.join_all().await;
    servers.sort_by_key(|(i, _)| *i);
    let gate = handle.gate.status();
    let buffering_for_ms = gate.since.filter(|_| gate.phase != Phase::Idle).map(|t| t.elapsed().as_millis() as u64);
    let last = handle.last_reparent.lock().unwrap_or_else(|p| p.into_inner()).clone();
    json!({
        "name": handle.name,
        "primary": record.map(|r| r.primary.clone()),
        "term": record.map(|r| r.term),
        "durability": settings.durability,
        "servers": servers.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        "buffer": {
            "phase": gate.phase,
            "episode": gate.episode,
            "reason": gate.reason,
            "queued": gate.queued,
            "active": gate.active,
            "buffering_for_ms": buffering_for_ms,
            "last_release": gate.last_release,
            "no_primary": gate.no_primary,
        },
        "acknowledged_gtids": handle.acked.position(),
        "conditions": handle.conditions.borrow().clone(),
        "last_reparent": last,
        "health": handle.health.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        "replay": handle.replay.stats(),
    })
}
