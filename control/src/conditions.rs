//! The leadership conditions, checked against the real servers and the watched
//! topology. Writes held by the gate are released only when all hold:
//!
//! - C1 revoked: the old primary is read-only (it cannot take writes);
//! - C2 named: the topology names a primary at a term newer than when buffering began;
//! - C3 writable: the named primary is read_only=OFF and not replicating;
//! - C4 caught up: its GTID position contains every GTID baton acknowledged;
//! - C5 durable: the cluster's durability policy holds on it (semi_sync: a
//!   semi-sync replica is connected and semi-sync is enabled).

use std::time::Instant;

use serde::Serialize;

use crate::cluster::ClusterHandle;
use crate::gate::GateStatus;
use crate::gtid;
use crate::topology::Topology;

/// One condition's latest evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    pub id: &'static str,
    pub name: &'static str,
    pub holds: bool,
    pub reason: String,
    /// Milliseconds since `holds` last changed (at the time of the check).
    pub for_ms: u64,
    #[serde(skip)]
    pub since: Option<Instant>,
}

/// The latest evaluation of all conditions for a buffering episode.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConditionsReport {
    pub episode: u64,
    pub old_primary: String,
    pub new_primary: String,
    pub term: u64,
    pub start_term: u64,
    pub all_hold: bool,
    pub conditions: Vec<Condition>,
}

impl ConditionsReport {
    /// The conditions that do not hold, as "C4 caught_up: reason".
    pub fn failing(&self) -> Vec<String> {
        self.conditions.iter().filter(|c| !c.holds).map(|c| format!("{} {}: {}", c.id, c.name, c.reason)).collect()
    }
}

fn cond(id: &'static str, name: &'static str, holds: bool, reason: String) -> Condition {
    Condition { id, name, holds, reason, for_ms: 0, since: None }
}

/// Evaluate every condition now.
pub async fn evaluate(cluster: &ClusterHandle, topo: &Topology, gate: &GateStatus, prev: &ConditionsReport) -> ConditionsReport {
    let settings = cluster.settings();
    let record = topo.cluster(&cluster.name);
    let (new_primary, term) = record.map(|r| (r.primary.clone(), r.term)).unwrap_or_default();
    let old = gate.old_primary.clone();

    let c2 = if term > gate.start_term {
        cond("C2", "named", true, format!("topology names {new_primary} at term {term} (buffering began at term {})", gate.start_term))
    } else {
        cond("C2", "named", false, format!("topology still names {new_primary} at term {term}; waiting for a term newer than {}", gate.start_term))
    };

    let c1 = if old == new_primary && term > gate.start_term {
        // The same server named again at a newer term: re-established after it came
        // back from a crash ([`crate::health`]); the old term ended with its restart.
        cond("C1", "revoked", true, format!("{old} re-established at term {term}: the old term ended with its restart"))
    } else {
        match cluster.connect(&old).await {
            Ok(mut s) => {
                let r = match s.read_only().await {
                    Ok(true) => cond("C1", "revoked", true, format!("{old} is read_only=ON")),
                    Ok(false) => cond("C1", "revoked", false, format!("{old} is still writable (read_only=OFF)")),
                    Err(e) => cond("C1", "revoked", false, format!("{old}: {e}")),
                };
                s.close().await;
                r
            }
            Err(e) => {
                // Unreachable: revoked if fenced, i.e. no server replicates from it any more
                // (so it cannot gather semi-sync acks or feed anyone).
                let mut feeding = Vec::new();
                for addr in settings.servers.iter().filter(|s| **s != old) {
                    if let Ok(mut s) = cluster.connect(addr).await {
                        if let Ok(Some(r)) = s.replication().await {
                            if r.source == old && r.io_running {
                                feeding.push(addr.clone());
                            }
                        }
                        s.close().await;
                    }
                }
                if feeding.is_empty() {
                    cond("C1", "revoked", true, format!("{old} unreachable and fenced (no server replicates from it)"))
                } else {
                    cond("C1", "revoked", false, format!("{e}; not fenced: {} still replicate from it", feeding.join(", ")))
                }
            }
        }
    };

    let (c3, c4, c5) = match cluster.connect(&new_primary).await {
        Err(e) => {
            let why = e.to_string();
            (cond("C3", "writable", false, why.clone()), cond("C4", "caught_up", false, why.clone()), cond("C5", "durable", false, why))
        }
        Ok(mut s) => {
            let c3 = match (s.read_only().await, s.replication().await) {
                (Ok(false), Ok(None)) => cond("C3", "writable", true, format!("{new_primary} is read_only=OFF and not replicating")),
                (Ok(true), _) => cond("C3", "writable", false, format!("{new_primary} is read_only=ON")),
                (_, Ok(Some(r))) => cond("C3", "writable", false, format!("{new_primary} still replicates from {}", r.source)),
                (Err(e), _) | (_, Err(e)) => cond("C3", "writable", false, e.to_string()),
            };
            let acked = cluster.acked.position();
            let c4 = match s.gtid_binlog_state().await {
                Ok(pos) => match gtid::contains(&pos, &acked) {
                    Ok(()) => cond("C4", "caught_up", true, format!("{new_primary} has {pos:?}, contains acknowledged {acked:?}")),
                    Err(why) => cond("C4", "caught_up", false, format!("{new_primary} {why} (acknowledged {acked:?})")),
                },
                Err(e) => cond("C4", "caught_up", false, e.to_string()),
            };
            let c5 = if settings.durability == "semi_sync" {
                let enabled = s.variable("rpl_semi_sync_master_enabled").await;
                let clients = s.status_u64("Rpl_semi_sync_master_clients").await;
                match (enabled, clients) {
                    (Ok(e), Ok(n)) if e == "1" && n >= 1 => cond("C5", "durable", true, format!("semi_sync: {n} semi-sync replica(s) connected")),
                    (Ok(e), Ok(_)) if e != "1" => {
                        cond("C5", "durable", false, format!("semi_sync: {new_primary} has rpl_semi_sync_master_enabled=OFF"))
                    }
                    (Ok(_), Ok(_)) => cond("C5", "durable", false, format!("semi_sync: no semi-sync replica connected to {new_primary}")),
                    (Err(e), _) | (_, Err(e)) => cond("C5", "durable", false, e.to_string()),
                }
            } else {
                cond("C5", "durable", true, "durability policy none".into())
            };
            s.close().await;
            (c3, c4, c5)
        }
    };

    let now = Instant::now();
    let mut conditions = vec![c1, c2, c3, c4, c5];
    for c in &mut conditions {
        let before = prev.conditions.iter().find(|p| p.id == c.id && prev.episode == gate.episode);
        c.since = match before {
            Some(p) if p.holds == c.holds => p.since,
            _ => Some(now),
        };
        c.for_ms = c.since.map(|s| now.duration_since(s).as_millis() as u64).unwrap_or(0);
    }
    let all_hold = conditions.iter().all(|c| c.holds);
    ConditionsReport { episode: gate.episode, old_primary: old, new_primary, term, start_term: gate.start_term, all_hold, conditions }
}
