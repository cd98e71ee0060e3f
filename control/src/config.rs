//! Typed TOML config: defaults, loading and `validate()`.
//!
//! The key names are a public contract (see `configs/baton.toml`, which shows every
//! key with a comment). Durations carry their unit in the key name (`_ms`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::credentials::{Ed25519Key, PasswordHash, Sha2Hash};
use crate::error::ControlError;

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub topology: TopologyConfig,
    #[serde(default)]
    pub buffer: BufferConfig,
    #[serde(default)]
    pub reparent: ReparentConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub transaction_replay: TransactionReplayConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
}

/// `[server]`: listeners and data-path limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// MySQL protocol listener for applications.
    pub listen: String,
    /// Admin HTTP listener (loopback by default).
    pub admin_listen: String,
    /// Client sessions beyond this get ERR 1040 (08004) at connect.
    pub max_connections: usize,
    /// A client that has not finished the handshake by then is dropped.
    pub handshake_timeout_ms: u64,
    /// Connecting and logging in to a backend must finish within this.
    pub backend_connect_timeout_ms: u64,
    /// Largest client packet accepted (bytes); larger gets ERR 1153 (08S01).
    pub max_allowed_packet: usize,
    /// On SIGTERM, sessions get this long to finish before they are closed.
    pub shutdown_grace_ms: u64,
    /// The version string baton's greeting announces to clients.
    pub server_version: String,
    /// Bearer token required by admin requests that change state. The environment
    /// variable BATON_ADMIN_TOKEN overrides it. Without either, such requests are refused.
    pub admin_token: Option<String>,
    /// Session threads, each with its own single-threaded runtime; a session stays on
    /// the thread it was given. 0: one per CPU core.
    pub worker_threads: usize,
    /// `[server.tls]`: TLS for clients (absent: a client asking for TLS is refused).
    pub tls: Option<ServerTlsConfig>,
}

/// `[server.tls]`: the certificate baton shows clients that ask for TLS (the SSL
/// request of the MySQL handshake, then TLS 1.2 or 1.3 in the same connection).
/// Both files are read at start and again on a reload (SIGHUP or
/// `POST /api/v1/config/reload`); a pair that does not load is refused and the
/// previous one keeps serving.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
    /// Refuse every login that did not start TLS (ERROR 1045, 28000, as the
    /// server refuses a `REQUIRE SSL` account without it).
    #[serde(default)]
    pub required: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:6033".into(),
            admin_listen: "127.0.0.1:6034".into(),
            max_connections: 4096,
            handshake_timeout_ms: 10_000,
            backend_connect_timeout_ms: 5_000,
            max_allowed_packet: 1 << 30,
            shutdown_grace_ms: 30_000,
            server_version: "5.5.5-10.11.0-MariaDB-baton".into(),
            admin_token: None,
            worker_threads: 0,
            tls: None,
        }
    }
}

/// `[buffer]`: how requests are held while a cluster has no established primary.
/// Defaults follow Vitess (window 10 s, size 1000, max failover 20 s, 1 min between
/// failovers, drain concurrency 1). Limits apply per cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    pub window_ms: u64,
    pub size: usize,
    pub max_failover_duration_ms: u64,
    pub min_time_between_failovers_ms: u64,
    pub drain_concurrency: usize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig { window_ms: 10_000, size: 1000, max_failover_duration_ms: 20_000, min_time_between_failovers_ms: 60_000, drain_concurrency: 1 }
    }
}

/// `[transaction_replay]`: a transaction cut by a reparent's revoke or the loss of
/// the primary is re-run on the new primary and goes on there when every
/// response the client saw compares equal (checksums). Off by default. The
/// decision rules are the README's "Transaction replay".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransactionReplayConfig {
    pub enabled: bool,
    /// Bytes recorded per transaction (commands sent, as sent); a larger
    /// transaction is not replayable (ERROR 9101 as without replay).
    pub max_bytes: usize,
    /// Replays of one cut transaction (a new primary lost during a replay is
    /// replayed to again).
    pub max_attempts: u32,
    /// From the cut to the end of a replay (milliseconds), waiting in the buffer included.
    pub timeout_ms: u64,
}

impl Default for TransactionReplayConfig {
    fn default() -> Self {
        TransactionReplayConfig { enabled: false, max_bytes: 1 << 20, max_attempts: 5, timeout_ms: 30_000 }
    }
}

/// `[reparent]`: timings of the planned reparent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReparentConfig {
    /// Before announcing: wait up to this long for the candidate to catch up, so the
    /// write pause covers only the last bit of replication.
    pub prepare_timeout_ms: u64,
    /// After announcing: open transactions get this long to finish; then they are
    /// ended with the "transaction lost in reparent" error.
    pub transaction_grace_ms: u64,
    /// After revoking: the candidate must reach the old primary's final GTID position
    /// within this, or the reparent is undone.
    pub catchup_timeout_ms: u64,
    /// How often leadership conditions are re-checked while buffering.
    pub check_interval_ms: u64,
    /// Timeout of each control-plane connection and query.
    pub admin_timeout_ms: u64,
}

impl Default for ReparentConfig {
    fn default() -> Self {
        ReparentConfig {
            prepare_timeout_ms: 10_000,
            transaction_grace_ms: 3_000,
            catchup_timeout_ms: 10_000,
            check_interval_ms: 100,
            admin_timeout_ms: 2_000,
        }
    }
}

/// `[health]`: how every server is checked (for unplanned failover and fencing).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between checks of every server.
    pub interval_ms: u64,
    /// A check not answered within this fails.
    pub timeout_ms: u64,
    /// Consecutive failed checks of the primary before an automatic failover
    /// (clusters with `auto_failover = true`). The first failure already starts buffering.
    pub failure_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { interval_ms: 1000, timeout_ms: 1000, failure_threshold: 3 }
    }
}

/// `[topology]`: where the cluster records (primary, term) live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// "file" (the embedded default) or "etcd" (several proxies sharing topology).
    pub store: String,
    /// The file store's JSON file; relative paths are relative to the working directory.
    pub path: PathBuf,
    /// How often the file store re-reads the file for changes made by another process.
    pub poll_interval_ms: u64,
    /// etcd: the client endpoints (`host:port` or `http://host:port`).
    pub endpoints: Vec<String>,
    /// etcd: every key baton writes lives under this prefix.
    pub prefix: String,
    /// etcd: each request (and the first connection) must finish within this.
    pub timeout_ms: u64,
    /// etcd: the TTL of this proxy's registration lease (seconds). A proxy that dies
    /// drops out (and gives up the orchestrator role) this long after its last renewal.
    pub lease_ttl_s: u64,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            store: "file".into(),
            path: PathBuf::from("var/topology.json"),
            poll_interval_ms: 500,
            endpoints: vec!["127.0.0.1:2379".into()],
            prefix: "/baton".into(),
            timeout_ms: 2000,
            lease_ttl_s: 5,
        }
    }
}

/// `[[users]]`: who may connect, and to which cluster.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plaintext password (convenient for development; prefer `password_hash`).
    pub password: Option<String>,
    /// MySQL hash: `*` + hex SHA1(SHA1(password)), as `SELECT PASSWORD('..')` prints it.
    pub password_hash: Option<String>,
    /// Cluster this user's sessions go to; default: the first `[[clusters]]`.
    pub cluster: Option<String>,
    /// How clients prove the password to baton; `password_hash` is in this
    /// method's own format (what the server keeps as `authentication_string`).
    #[serde(default)]
    pub auth: AuthMethod,
    /// A file holding (first line) the password baton logs in to the backend
    /// with, for methods whose proof baton cannot pass on (ed25519), or a
    /// backend account with another password. Read at start and on reload.
    #[serde(default)]
    pub backend_password_file: Option<PathBuf>,
    /// Refuse this user's logins that did not start TLS (ERROR 1045, 28000).
    #[serde(default)]
    pub require_tls: bool,
}

/// `[[users]] auth`: the authentication method clients use towards baton.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AuthMethod {
    /// `mysql_native_password`: `password_hash` is `*` + 40 hex digits (`SELECT PASSWORD('..')`).
    #[default]
    #[serde(rename = "mysql_native_password")]
    Native,
    /// MySQL's `caching_sha2_password`: `password_hash` is `$A$005$` + salt + hash, as
    /// `mysql.user.authentication_string` holds it.
    #[serde(rename = "caching_sha2_password")]
    CachingSha2,
    /// MariaDB's `ed25519` (client plugin `client_ed25519`): `password_hash` is the
    /// 43-character base64 public key, as `ed25519_password('..')` prints it.
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl AuthMethod {
    /// The plugin name on the wire.
    pub fn plugin(self) -> &'static str {
        match self {
            AuthMethod::Native => "mysql_native_password",
            AuthMethod::CachingSha2 => "caching_sha2_password",
            AuthMethod::Ed25519 => "client_ed25519",
        }
    }
}

/// `[[clusters]] tls`: TLS on baton's connections to the cluster's servers (the
/// data path and the control plane alike), as the client option `--ssl-mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendTls {
    /// Plaintext.
    #[default]
    Disabled,
    /// Encrypted; the server's certificate is not checked.
    Required,
    /// Encrypted; the certificate must chain to `tls_ca` (any name).
    VerifyCa,
    /// Encrypted; the certificate must chain to `tls_ca` and name the server's
    /// address (an IP address SAN for `127.0.0.1:3306`).
    VerifyIdentity,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig").field("name", &self.name).field("cluster", &self.cluster).finish()
    }
}

/// A user's stored credential, in its method's own format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Native(PasswordHash),
    CachingSha2(Sha2Hash),
    Ed25519(Ed25519Key),
}

impl UserConfig {
    /// The stage-2 hash, from whichever of the two keys is set (native users).
    pub fn hash(&self) -> Result<PasswordHash, String> {
        match (&self.password, &self.password_hash) {
            (Some(p), None) => Ok(PasswordHash::from_plain(p)),
            (None, Some(h)) => PasswordHash::parse(h),
            (Some(_), Some(_)) => Err("set only one of password and password_hash".into()),
            (None, None) => Err("set password or password_hash".into()),
        }
    }

    /// The credential for `auth`, from `password_hash` (the method's own format)
    /// or `password`.
    pub fn credential(&self) -> Result<Credential, String> {
        match self.auth {
            AuthMethod::Native => self.hash().map(Credential::Native),
            AuthMethod::CachingSha2 => match (&self.password, &self.password_hash) {
                (Some(p), None) => {
                    let salt: [u8; 20] = std::array::from_fn(|i| b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[rand_index(i)]);
                    Ok(Credential::CachingSha2(Sha2Hash::generate(p.as_bytes(), salt, 5)))
                }
                (None, Some(h)) => Sha2Hash::parse(h).map(Credential::CachingSha2),
                (Some(_), Some(_)) => Err("set only one of password and password_hash".into()),
                (None, None) => Err("set password or password_hash".into()),
            },
            AuthMethod::Ed25519 => match (&self.password, &self.password_hash) {
                (Some(p), None) => Ok(Credential::Ed25519(Ed25519Key::from_password(p.as_bytes()))),
                (None, Some(h)) => Ed25519Key::parse(h).map(Credential::Ed25519),
                (Some(_), Some(_)) => Err("set only one of password and password_hash".into()),
                (None, None) => Err("set password or password_hash".into()),
            },
        }
    }

    /// The password for the backend from `backend_password_file` (first line),
    /// if set. An unreadable file is an error.
    pub fn backend_password(&self) -> Result<Option<String>, String> {
        match &self.backend_password_file {
            None => Ok(None),
            Some(f) => read_secret(&None, &Some(f.clone())).map(Some),
        }
    }
}

/// A salt index for a generated hash: random enough for a development
/// convenience (`password = ".."`), from the std hasher's random keys.
fn rand_index(i: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(i);
    (h.finish() % 64) as usize
}

/// `[[clusters]]`: one replicated MariaDB/MySQL cluster.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    pub servers: Vec<String>,
    /// The primary used when the topology store has no record for this cluster yet.
    pub primary: String,
    /// The account the control plane logs in with (needs SUPER / READ ONLY ADMIN).
    #[serde(default)]
    pub admin_user: Option<String>,
    #[serde(default)]
    pub admin_password: Option<String>,
    /// Alternative to `admin_password`: a file holding it (first line).
    #[serde(default)]
    pub admin_password_file: Option<PathBuf>,
    /// "none" or "semi_sync".
    #[serde(default = "default_durability")]
    pub durability: String,
    /// The replication account replicas use to follow the primary.
    #[serde(default = "default_repl_user")]
    pub repl_user: String,
    #[serde(default)]
    pub repl_password: Option<String>,
    #[serde(default)]
    pub repl_password_file: Option<PathBuf>,
    /// Fail over automatically when the primary fails `health.failure_threshold` checks.
    #[serde(default)]
    pub auto_failover: bool,
    /// TLS to this cluster's servers.
    #[serde(default)]
    pub tls: BackendTls,
    /// PEM: the CA certificates `verify_ca` and `verify_identity` trust.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

fn default_repl_user() -> String {
    "repl".into()
}

fn read_secret(value: &Option<String>, file: &Option<PathBuf>) -> Result<String, String> {
    match (value, file) {
        (Some(v), _) => Ok(v.clone()),
        (None, Some(f)) => {
            std::fs::read_to_string(f).map(|s| s.lines().next().unwrap_or("").to_string()).map_err(|e| format!("cannot read {}: {e}", f.display()))
        }
        (None, None) => Ok(String::new()),
    }
}

impl ClusterConfig {
    /// The control plane's password, from `admin_password` or `admin_password_file`.
    pub fn admin_password(&self) -> Result<String, String> {
        read_secret(&self.admin_password, &self.admin_password_file)
    }
    /// The replication password, from `repl_password` or `repl_password_file`.
    pub fn repl_password(&self) -> Result<String, String> {
        read_secret(&self.repl_password, &self.repl_password_file)
    }
}

fn default_durability() -> String {
    "none".into()
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig").field("name", &self.name).field("servers", &self.servers).field("primary", &self.primary).finish()
    }
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ControlError> {
        let text = std::fs::read_to_string(path).map_err(|source| ControlError::ConfigRead { path: path.to_path_buf(), source })?;
        Self::parse(&text).map_err(|e| match e {
            ControlError::ConfigInvalid(message) => ControlError::ConfigParse { path: path.to_path_buf(), message },
            other => other,
        })
    }

    /// Parse and validate config text.
    pub fn parse(text: &str) -> Result<Config, ControlError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ControlError::ConfigInvalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every check that can be made without touching the network.
    pub fn validate(&self) -> Result<(), ControlError> {
        let bad = |m: String| Err(ControlError::ConfigInvalid(m));
        for (key, addr) in [("server.listen", &self.server.listen), ("server.admin_listen", &self.server.admin_listen)] {
            if addr.parse::<SocketAddr>().is_err() {
                return bad(format!("{key} = {addr:?} is not an IP:port address"));
            }
        }
        if self.server.max_connections == 0 {
            return bad("server.max_connections must be at least 1".into());
        }
        if self.server.max_allowed_packet < 1024 || self.server.max_allowed_packet > 1 << 30 {
            return bad("server.max_allowed_packet must be between 1024 and 1073741824".into());
        }
        match self.topology.store.as_str() {
            "file" => {}
            "etcd" => {
                if self.topology.endpoints.is_empty() {
                    return bad("topology.endpoints must name at least one etcd endpoint".into());
                }
                for e in &self.topology.endpoints {
                    let hostport = e.strip_prefix("http://").unwrap_or(e);
                    if hostport.is_empty() || hostport.contains('/') || !hostport.contains(':') {
                        return bad(format!("topology.endpoints: {e:?} is not host:port or http://host:port"));
                    }
                }
                if !self.topology.prefix.starts_with('/') || self.topology.prefix.ends_with('/') {
                    return bad(format!("topology.prefix = {:?} must start with / and not end with /", self.topology.prefix));
                }
                if self.topology.lease_ttl_s < 2 || self.topology.timeout_ms == 0 {
                    return bad("topology.lease_ttl_s must be at least 2 and topology.timeout_ms above 0".into());
                }
            }
            other => return bad(format!("topology.store = {other:?} is not supported (supported: \"file\", \"etcd\")")),
        }
        let r = &self.transaction_replay;
        if r.max_bytes == 0 || r.max_attempts == 0 || r.timeout_ms == 0 {
            return bad("transaction_replay.max_bytes, max_attempts and timeout_ms must be above 0".into());
        }
        if self.clusters.is_empty() {
            return bad("at least one [[clusters]] is required".into());
        }
        let mut names = HashSet::new();
        for c in &self.clusters {
            if c.name.is_empty() || !c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') {
                return bad(format!("cluster name {:?} must be non-empty [A-Za-z0-9_-]", c.name));
            }
            if !names.insert(c.name.clone()) {
                return bad(format!("cluster {:?} is defined twice", c.name));
            }
            if c.servers.is_empty() {
                return bad(format!("cluster {:?} has no servers", c.name));
            }
            for s in &c.servers {
                if s.parse::<SocketAddr>().is_err() {
                    return bad(format!("cluster {:?}: server {s:?} is not an IP:port address", c.name));
                }
            }
            if !c.servers.contains(&c.primary) {
                return bad(format!("cluster {:?}: primary {:?} is not one of its servers", c.name, c.primary));
            }
            if c.durability != "none" && c.durability != "semi_sync" {
                return bad(format!("cluster {:?}: durability = {:?} (expected \"none\" or \"semi_sync\")", c.name, c.durability));
            }
            if c.repl_password.is_some() && c.repl_password_file.is_some() {
                return bad(format!("cluster {:?}: set only one of repl_password and repl_password_file", c.name));
            }
            if c.admin_password.is_some() && c.admin_password_file.is_some() {
                return bad(format!("cluster {:?}: set only one of admin_password and admin_password_file", c.name));
            }
            if c.admin_user.is_some() && c.repl_password.is_none() && c.repl_password_file.is_none() {
                return bad(format!(
                    "cluster {:?}: admin_user is set, so baton can reparent it, but there is no replication password \
                     (repl_password_file or repl_password): the replicas it repoints could not log in to the new primary",
                    c.name
                ));
            }
            if matches!(c.tls, BackendTls::VerifyCa | BackendTls::VerifyIdentity) && c.tls_ca.is_none() {
                return bad(format!("cluster {:?}: tls = {:?} needs tls_ca (the CA certificates to trust, PEM)", c.name, c.tls));
            }
        }
        let b = &self.buffer;
        if b.size == 0 || b.drain_concurrency == 0 || b.window_ms == 0 || b.max_failover_duration_ms == 0 {
            return bad("buffer.size, drain_concurrency, window_ms and max_failover_duration_ms must be at least 1".into());
        }
        if self.health.interval_ms == 0 || self.health.timeout_ms == 0 || self.health.failure_threshold == 0 {
            return bad("health.interval_ms, timeout_ms and failure_threshold must be at least 1".into());
        }
        if self.reparent.check_interval_ms == 0 || self.reparent.admin_timeout_ms == 0 {
            return bad("reparent.check_interval_ms and admin_timeout_ms must be at least 1".into());
        }
        let mut users = HashSet::new();
        for u in &self.users {
            if u.name.is_empty() {
                return bad("a [[users]] entry has an empty name".into());
            }
            if !users.insert(u.name.clone()) {
                return bad(format!("user {:?} is defined twice", u.name));
            }
            if let Err(e) = u.credential() {
                return bad(format!("user {:?}: {e}", u.name));
            }
            if u.auth == AuthMethod::Ed25519 && u.backend_password_file.is_none() {
                return bad(format!(
                    "user {:?}: auth = \"ed25519\" needs backend_password_file (an ed25519 signature cannot be passed on to a backend)",
                    u.name
                ));
            }
            if let Some(c) = &u.cluster {
                if !names.contains(c) {
                    return bad(format!("user {:?}: unknown cluster {c:?}", u.name));
                }
            }
        }
        Ok(())
    }

    /// Read every secret file the config names (`admin_password_file`,
    /// `repl_password_file`, `backend_password_file`): an unreadable one is an
    /// error, never an empty password. Run at start, on reload and by
    /// `baton --check-config` (not by `validate`, which touches no file).
    pub fn check_secret_files(&self) -> Result<(), String> {
        for c in &self.clusters {
            c.admin_password().map_err(|e| format!("cluster {:?}: admin_password_file: {e}", c.name))?;
            c.repl_password().map_err(|e| format!("cluster {:?}: repl_password_file: {e}", c.name))?;
        }
        for u in &self.users {
            u.backend_password().map_err(|e| format!("user {:?}: backend_password_file: {e}", u.name))?;
        }
        Ok(())
    }

    /// The cluster a user's sessions are routed to.
    pub fn cluster_of<'a>(&'a self, user: &'a UserConfig) -> &'a str {
        user.cluster.as_deref().unwrap_or(&self.clusters[0].name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:6033"
[[users]]
name = "app"
password_hash = "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3"
[[clusters]]
name = "main"
servers = ["127.0.0.1:3306", "127.0.0.1:3307"]
primary = "127.0.0.1:3306"
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.server.admin_listen, "127.0.0.1:6034");
        assert_eq!(c.topology.store, "file");
        assert_eq!(c.cluster_of(&c.users[0]), "main");
        let r = &c.transaction_replay;
        assert_eq!((r.enabled, r.max_bytes, r.max_attempts, r.timeout_ms), (false, 1 << 20, 5, 30_000));
    }

    #[test]
    fn bad_configs_say_why() {
        let cases = [
            (GOOD.replace("127.0.0.1:6033", "nonsense"), "server.listen"),
            (GOOD.replace("primary = \"127.0.0.1:3306\"", "primary = \"127.0.0.1:9\""), "not one of its servers"),
            (GOOD.replace("password_hash = \"*5BCB", "password_hash = \"5BCB"), "must start with '*'"),
            (GOOD.replace("[server]", "[server]\nbogus = 1"), "unknown field"),
            (GOOD.replace("name = \"main\"", "name = \"\""), "cluster name"),
            (
                GOOD.replace("[[users]]", "[transaction_replay]\nenabled = true\nmax_attempts = 0\n[[users]]"),
                "transaction_replay.max_bytes, max_attempts",
            ),
            (GOOD.replace("[[users]]", "[transaction_replay]\nenable = true\n[[users]]"), "unknown field"),
        ];
        for (text, want) in cases {
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }
}
