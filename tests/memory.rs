//! Memory: a session's packet buffers give back what a large packet made them
//! grow. 1,000 sessions, 50 at a time, each move one 10 MiB BLOB through the real
//! `baton` binary (run as a subprocess so its resident set is its own): the BLOB
//! goes up as a statement parameter and comes back as a result row. Baton's RSS
//! (/proc/<pid>/status VmRSS) must stay near its idle level while each batch of
//! sessions sits open and idle after its transfer, and once every session has closed.
//!
//! Without the buffers shrinking (proxy/src/packet.rs), each idle session keeps
//! four 10 MiB buffers: 50 of them held about 2 GiB over idle.
//!
//! Allocator: with glibc's default the mmap threshold is dynamic: the first
//! 10 MiB buffer freed raises it to 10 MiB, later ones are carved from the malloc
//! arenas, and freed arena memory stays resident (about 1.5 GiB over idle, with
//! the buffers shrunk). So `baton` fixes the threshold at startup
//! (`mallopt(M_MMAP_THRESHOLD, 256 KiB)` in src/main.rs): every large buffer is its
//! own mapping, unmapped when freed. The test runs the binary as shipped.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_testkit::free_port;
use common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;

const MIB: u64 = 1024 * 1024;
const BLOB_LEN: usize = 10 * 1024 * 1024;
const SESSIONS: usize = 1000;
const BATCH: usize = 50;
/// glibc's mmap threshold for baton: the packet buffers' shrink threshold
/// (`baton_proxy::packet::SHRINK_ABOVE`).
/// How far above its idle RSS baton may be: with idle sessions open, and after they close.
const BOUND: u64 = 32 * MIB;

/// The `baton` binary on free loopback ports; killed when dropped.
struct Baton {
    child: Child,
    port: u16,
    admin: SocketAddr,
    log: std::path::PathBuf,
}

impl Baton {
    fn start(info: &ClusterInfo, dir: &Path) -> Baton {
        let (port, admin) = (free_port(), free_port());
        let text = config_text(info, &dir.join("topology.json"), "")
            .replace("\nlisten = \"127.0.0.1:0\"", &format!("\nlisten = \"127.0.0.1:{port}\""))
            .replace("admin_listen = \"127.0.0.1:0\"", &format!("admin_listen = \"127.0.0.1:{admin}\""));
        assert!(text.contains(&format!(":{port}\"")) && text.contains(&format!(":{admin}\"")), "ports not set in {text}");
        let config = dir.join("baton.toml");
        std::fs::write(&config, text).unwrap();
        let log = dir.join("baton.log");
        let child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Baton { child, port, admin: SocketAddr::from(([127, 0, 0, 1], admin)), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident set, bytes.
    fn rss(&self) -> u64 {
        self.status_kib("VmRSS:") * 1024
    }

    /// Peak resident set, bytes.
    fn peak(&self) -> u64 {
        self.status_kib("VmHWM:") * 1024
    }

    fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("baton is running");
        let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in {status}"));
        line[key.len()..].trim().trim_end_matches("kB").trim().parse().unwrap()
    }

    /// The `baton_client_connections` gauge from the admin port's /metrics.
    async fn connections(&self) -> f64 {
        let (status, body) = reparent::http(self.admin, "GET", "/metrics", None, "").await;
        assert_eq!(status, 200);
        let text = body.as_str().expect("metrics text").to_string();
        let line = text.lines().find(|l| l.starts_with("baton_client_connections ")).unwrap_or_else(|| panic!("no gauge in {text}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    async fn wait_no_connections(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = self.connections().await;
            if n == 0.0 {
                return;
            }
            assert!(Instant::now() < deadline, "baton still counts {n} client connections");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// RSS once it has stopped moving: within 1 MiB over the last 10 polls, 50 ms apart.
    async fn settled_rss(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut recent = std::collections::VecDeque::from([self.rss()]);
        loop {
            let (lo, hi) = (recent.iter().min().unwrap(), recent.iter().max().unwrap());
            if recent.len() == 10 && hi - lo <= MIB {
                return *recent.back().unwrap();
            }
            assert!(Instant::now() < deadline, "baton's RSS did not settle: {recent:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            if recent.len() == 10 {
                recent.pop_front();
            }
            recent.push_back(self.rss());
        }
    }
}

impl Drop for Baton {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One session's transfer: the BLOB goes up as a parameter, the server compares it
/// with the stored copy, and the stored copy comes back as the row. The connection
/// stays open.
async fn move_blob(port: u16, blob: Arc<Vec<u8>>) -> Conn {
    let mut conn = Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    let row: Option<(Vec<u8>, bool)> = conn.exec_first("SELECT data, data = ? FROM mem_blobs WHERE id = 1", (blob.as_slice(),)).await.unwrap();
    let (data, same) = row.expect("the BLOB row");
    assert!(same, "the server saw a different BLOB");
    assert!(data == *blob, "a different BLOB came back ({} bytes)", data.len());
    conn
}

#[tokio::test(flavor = "multi_thread")]
async fn rss_returns_to_idle_after_sessions_move_large_blobs() {
    let info = cluster();
    let dir = tempfile::tempdir().unwrap();
    let baton = Baton::start(&info, dir.path());

    // The BLOB, stored directly on the primary: baton sees no large packet before
    // its idle level is taken.
    let blob: Arc<Vec<u8>> = Arc::new((0..BLOB_LEN).map(|i| (i * 7 + i / 251) as u8).collect());
    let primary = info.servers.iter().position(|s| *s == info.primary).expect("primary is a server");
    let mut direct = Conn::new(opts(info.port(primary), Some("baton_test"))).await.unwrap();
    direct.query_drop("DROP TABLE IF EXISTS mem_blobs").await.unwrap();
    direct.query_drop("CREATE TABLE mem_blobs (id INT PRIMARY KEY, data LONGBLOB NOT NULL)").await.unwrap();
    direct.exec_drop("INSERT INTO mem_blobs VALUES (1, ?)", (blob.as_slice(),)).await.unwrap();
    direct.disconnect().await.unwrap();

    // Idle: after startup and a few small sessions.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut warm = loop {
        match Conn::new(opts(baton.port, Some("baton_test"))).await {
            Ok(c) => break c,
            Err(e) => assert!(Instant::now() < deadline, "baton does not serve: {e}\n{}", baton.log()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    warm.query_drop("SELECT 1").await.unwrap();
    warm.disconnect().await.unwrap();
    for _ in 0..5 {
        let mut c = Conn::new(opts(baton.port, Some("baton_test"))).await.unwrap();
        let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM mem_blobs").await.unwrap();
        assert_eq!(n, Some(1));
        c.disconnect().await.unwrap();
    }
    baton.wait_no_connections().await;
    let idle = baton.settled_rss().await;
    println!("baton idle RSS: {:.1} MiB", idle as f64 / MIB as f64);

    // Batches of sessions; each batch stays open and idle while RSS is read.
    let mut worst_open = 0;
    for batch in 0..SESSIONS / BATCH {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..BATCH {
            tasks.spawn(move_blob(baton.port, blob.clone()));
        }
        let mut conns = Vec::new();
        while let Some(c) = tasks.join_next().await {
            conns.push(c.unwrap());
        }
        let open = baton.settled_rss().await;
        worst_open = worst_open.max(open);
        println!("batch {:2}: {BATCH} sessions open and idle, RSS {:.1} MiB", batch + 1, open as f64 / MIB as f64);
        for c in conns {
            c.disconnect().await.unwrap();
        }
    }

    baton.wait_no_connections().await;
    let closed = baton.settled_rss().await;
    let fmt = |b: u64| format!("{:.1} MiB", b as f64 / MIB as f64);
    println!(
        "baton RSS: idle {}, worst with {BATCH} idle sessions open {}, after all {SESSIONS} sessions closed {}, peak {}, bound idle + {}",
        fmt(idle),
        fmt(worst_open),
        fmt(closed),
        fmt(baton.peak()),
        fmt(BOUND)
    );
    assert!(worst_open <= idle + BOUND, "{BATCH} idle sessions hold {} over idle", fmt(worst_open - idle));
    assert!(closed <= idle + BOUND, "after {SESSIONS} sessions closed, RSS is {} over idle", fmt(closed - idle));
}
