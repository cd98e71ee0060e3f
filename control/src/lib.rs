//! baton's control plane.
//!
//! # Layout
//! - [`config`]: the typed TOML config, its defaults and `validate()`.
//! - [`credentials`]: user password hashes (`*` + hex SHA1(SHA1(pw))), never plaintext at rest.
//! - [`topology`]: the per-cluster record (primary, term, servers) the data path routes by.
//! - [`store`]: the embedded file topology store, published as watched state.
//! - [`error`]: this crate's one error type.
//!
//! The data path never reads config for routing: it reads the topology as a
//! `tokio::sync::watch` of the latest state, so a change cannot be lost the way an
//! event can.

pub mod config;
pub mod credentials;
pub mod error;
pub mod store;
pub mod topology;

pub use config::Config;
pub use error::ControlError;
pub use store::FileStore;
pub use topology::{ClusterRecord, Topology};
