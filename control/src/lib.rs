//! baton's control plane.
//!
//! # Layout
//! - [`config`]: the typed TOML config, its defaults and `validate()`.
//! - [`credentials`]: stored credentials as the servers keep them (native `*`+hex SHA1(SHA1(pw)), caching_sha2 `$A$`, ed25519 public key), never plaintext at rest.
//! - [`topology`]: the per-cluster record (primary, term, servers) the data path routes by.
//! - [`store`]: the topology store (embedded file, or etcd), published as watched state.
//! - [`peers`]: several proxies on etcd: registration, the orchestrator role,
//!   reparent announcements and their acknowledgements.
//! - [`cluster`]: one cluster's shared control state (gate, acknowledged GTIDs,
//!   condition report, settings).
//! - [`gate`]: the buffer every primary-bound request outside a transaction passes.
//! - [`conditions`] + [`supervisor`]: the leadership conditions, re-checked while
//!   buffering; only they release the gate.
//! - [`reparent`]: the planned reparent; [`failover`]: the emergency one.
//! - [`fence`]: closing the old term's backend connections when a failover begins.
//! - [`health`]: checks every server; suspicion, automatic failover, fencing, rejoin.
//! - [`server`]: control-plane SQL against one server.
//! - [`gtid`]: GTID positions and the GTIDs acknowledged to clients.
//! - [`metrics`]: metric names (documented constants) and this instance's recorder.
//! - [`error`]: this crate's one error type.
//!
//! The data path never reads config for routing: it reads the topology as a
//! `tokio::sync::watch` of the latest state, so a change cannot be lost the way an
//! event can.

pub mod cluster;
pub mod conditions;
pub mod config;
pub mod credentials;
pub mod error;
pub mod establish;
pub mod failover;
#[cfg(test)]
mod fake;
pub mod fence;
pub mod gate;
pub mod gtid;
pub mod health;
pub mod metrics;
pub mod peers;
pub mod reparent;
pub mod replay;
pub mod run;
#[cfg(test)]
mod scenarios;
pub mod server;
pub mod store;
pub mod supervisor;
pub mod topology;

pub use config::Config;
pub use error::ControlError;
pub use store::{FileStore, Store};
pub use topology::{ClusterRecord, Topology};
