//! The topology: per cluster, who the primary is and at which term.
//!
//! This is state, not events: every reader sees the latest whole value with its
//! term, so a reader that was slow or restarted still converges.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One cluster's record in the topology store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The established primary (`host:port`); the only server writes go to.
    pub primary: String,
    /// Increases by one with every change of primary. Never goes back.
    pub term: u64,
    /// Every server of the cluster.
    pub servers: Vec<String>,
}

/// All clusters' records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub clusters: BTreeMap<String, ClusterRecord>,
}

impl Topology {
    /// The record of one cluster.
    pub fn cluster(&self, name: &str) -> Option<&ClusterRecord> {
        self.clusters.get(name)
    }
}
