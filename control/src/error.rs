//! The control plane's error type.

use std::path::PathBuf;

/// Everything that can go wrong loading config or reading/writing the topology.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot read config {path}: {source}")]
    ConfigRead { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {message}")]
    ConfigParse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    ConfigInvalid(String),
    #[error("topology store {path}: {source}")]
    StoreIo { path: PathBuf, source: std::io::Error },
    #[error("topology store {path} is corrupt: {message}")]
    StoreCorrupt { path: PathBuf, message: String },
    #[error("unknown cluster {0:?}")]
    UnknownCluster(String),
    #[error("cannot reach etcd at {endpoints}: {message}")]
    EtcdUnreachable { endpoints: String, message: String },
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("etcd did not say whether the topology write was applied: {0}")]
    OutcomeUnknown(String),
    #[error("stale topology write for cluster {cluster}: term {attempted} is not newer than {current}")]
    StaleTerm { cluster: String, attempted: u64, current: u64 },
}
