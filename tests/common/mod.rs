//! Shared test support: the cluster started by scripts/test.sh, and an in-process
//! baton in front of it on free loopback ports.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use baton_testkit::{ClusterInfo, APP_PASSWORD, APP_USER};

/// The shared cluster (BATON_TEST_CLUSTER).
pub fn cluster() -> ClusterInfo {
    ClusterInfo::from_env()
}

/// Config text for a baton in front of `info`, with extra `[server]` keys.
pub fn config_text(info: &ClusterInfo, topo: &std::path::Path, server_extra: &str) -> String {
    let servers = info.servers.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{server_extra}
[topology]
store = "file"
path = {topo:?}
[[users]]
name = "app"
password_hash = "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3"
[[users]]
name = "admin"
password = "admin"
[[clusters]]
name = "main"
servers = [{servers}]
primary = {primary:?}
"#,
        topo = topo.display().to_string(),
        primary = info.primary,
    )
}

/// A baton running in this process; its temp dir lives as long as it does.
pub struct TestBaton {
    pub running: Option<baton::Running>,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl TestBaton {
    pub async fn start(server_extra: &str) -> TestBaton {
        Self::start_for(&cluster(), server_extra).await
    }

    pub async fn start_for(info: &ClusterInfo, server_extra: &str) -> TestBaton {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text(info, &dir.path().join("topology.json"), server_extra);
        let config = baton_control::Config::parse(&text).expect("test config");
        let running = baton::start(config).await.expect("baton starts");
        let port = running.mysql_addr.port();
        TestBaton { running: Some(running), dir, port }
    }

    pub fn running(&self) -> &baton::Running {
        self.running.as_ref().unwrap()
    }

    /// mysql_async options for user app through baton.
    pub fn opts(&self, db: Option<&str>) -> mysql_async::Opts {
        opts(self.port, db)
    }
}

/// mysql_async options for user app on 127.0.0.1:port.
pub fn opts(port: u16, db: Option<&str>) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .db_name(db)
        .prefer_socket(false)
        .into()
}

/// Wait for `cond` with a deadline (no sleeps standing in for conditions).
pub async fn wait_for<F: FnMut() -> bool>(what: &str, timeout: Duration, mut cond: F) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub mod raw;
/// The shared cluster's primary's port (for direct connections to compare with).
pub fn primary_port() -> u16 {
    cluster().primary.rsplit_once(':').unwrap().1.parse().unwrap()
}

pub mod relay;
pub mod reparent;
