//! Support for tests that move the primary: the second cluster
//! (BATON_TEST_CLUSTER_REPARENT), healing it to a known shape, a baton with
//! short reparent timings, an HTTP client for the admin port, and writers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_testkit::ClusterInfo;
use mysql_async::prelude::*;
use mysql_async::Conn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const TOKEN: &str = "test-token";

/// Short buffer and reparent timings for the session tests that move the primary.
pub const SESSION_FAST: &str = "[buffer]\nwindow_ms = 10000\nmax_failover_duration_ms = 20000\nmin_time_between_failovers_ms = 0\n\
                                [reparent]\ntransaction_grace_ms = 2000\ncatchup_timeout_ms = 5000\nprepare_timeout_ms = 5000\ncheck_interval_ms = 20\n";

/// Reparent tests share one cluster and run one at a time.
pub static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn info() -> ClusterInfo {
    ClusterInfo::from_var("BATON_TEST_CLUSTER_REPARENT")
}

pub fn admin_opts(addr: &str) -> mysql_async::Opts {
    let (host, port) = addr.rsplit_once(':').unwrap();
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port.parse().unwrap())
        .user(Some("admin"))
        .pass(Some("admin"))
        .prefer_socket(false)
        .into()
}

pub async fn admin(addr: &str) -> Conn {
    Conn::new(admin_opts(addr)).await.unwrap_or_else(|e| panic!("admin connection to {addr}: {e}"))
}

/// The pid of the mariadbd serving `addr` (from its pid file: restarts change it).
pub fn pid_of(info: &ClusterInfo, addr: &str) -> i32 {
    let i = info.servers.iter().position(|s| s == addr).unwrap();
    let path = info.sockets[i].with_file_name("mariadbd.pid");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().parse().unwrap()
}

/// Send `sig` (KILL, STOP, CONT) to the mariadbd serving `addr`. STOP returns
/// once every thread of it is stopped (`/proc/<pid>/task/*/stat` state T): the
/// signal is delivered asynchronously, and a command sent right after could
/// still be answered (CI: a COMMIT meant to go unanswered committed).
pub fn signal(info: &ClusterInfo, addr: &str, sig: &str) {
    let pid = pid_of(info, addr);
    let ok = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success();
    assert!(ok, "kill -{sig} {pid}");
    if sig == "STOP" {
        let stopped = || {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return true };
            tasks.flatten().all(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
                matches!(state, None | Some('T' | 't' | 'Z' | 'X'))
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !stopped() {
            assert!(std::time::Instant::now() < deadline, "mariadbd {pid} did not stop");
            std::thread::yield_now();
        }
    }
}

/// Start the mariadbd of `addr` again (after a SIGKILL), detached; scripts/test.sh
/// stops it with the rest at the end.
pub async fn restart(info: &ClusterInfo, addr: &str) {
    restart_with(info, addr, &[]).await
}

/// [`restart`] with extra mariadbd options (after the harness's my.cnf, so they win).
pub async fn restart_with(info: &ClusterInfo, addr: &str, extra: &[&str]) {
    let i = info.servers.iter().position(|s| s == addr).unwrap();
    let cnf = info.sockets[i].with_file_name("my.cnf");
    let mut child = std::process::Command::new("mariadbd")
        .arg(format!("--defaults-file={}", cnf.display()))
        .arg("--user=mysql")
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Reaped when it exits (a test may SIGKILL it again).
    std::thread::spawn(move || child.wait());
    let deadline = Instant::now() + Duration::from_secs(60);
    while Conn::new(admin_opts(addr)).await.is_err() {
        assert!(Instant::now() < deadline, "{addr} did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait (30 s at most) until `addr` answers read_only=ON (revoked).
pub async fn until_read_only(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Conn::new(admin_opts(addr)).await {
            if scalar(&mut c, "SELECT @@read_only").await == "1" {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{addr} was not revoked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn scalar(c: &mut Conn, sql: &str) -> String {
    let v: Option<Option<String>> = c.query_first(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    v.flatten().unwrap_or_default()
}

/// The replication source of `c` ("" when not replicating).
pub async fn source_of(c: &mut Conn) -> String {
    let row: Option<mysql_async::Row> = c.query_first("SHOW SLAVE STATUS").await.unwrap();
    match row {
        None => String::new(),
        Some(r) => {
            let host: String = r.get("Master_Host").unwrap_or_default();
            let port: String = r.get::<Option<String>, _>("Master_Port").flatten().unwrap_or_default();
            if host.is_empty() {
                String::new()
            } else {
                format!("{host}:{port}")
            }
        }
    }
}

async fn try_admin(addr: &str) -> Option<Conn> {
    tokio::time::timeout(Duration::from_secs(3), Conn::new(admin_opts(addr))).await.ok()?.ok()
}

/// Bring the cluster to one writable primary with every other server a read-only,
/// caught-up replica of it, whatever an earlier (maybe failed) test left: stopped
/// or killed servers are resumed or restarted; a replica whose history diverged is
/// reset to follow the primary. Returns the primary.
pub async fn heal(info: &ClusterInfo) -> String {
    for (i, _) in info.servers.iter().enumerate() {
        if let Ok(pid) = std::fs::read_to_string(info.sockets[i].with_file_name("mariadbd.pid")) {
            let _ = std::process::Command::new("kill").arg("-CONT").arg(pid.trim()).status();
        }
    }
    for s in &info.servers {
        if try_admin(s).await.is_none() {
            restart(info, s).await;
        }
    }
    let mut primary = None;
    for s in &info.servers {
        let mut c = admin(s).await;
        if scalar(&mut c, "SELECT @@read_only").await == "0" && source_of(&mut c).await.is_empty() {
            primary = Some(s.clone());
            break;
        }
    }
    let primary = match primary {
        Some(p) => p,
        None => {
            // Nobody writable (e.g. an old primary restarted read-only): the most advanced.
            let mut best = (0u64, info.servers[0].clone());
            for s in &info.servers {
                let mut c = admin(s).await;
                let pos = scalar(&mut c, "SELECT @@gtid_binlog_pos").await;
                let adv = baton_control::gtid::advance(&pos);
                if adv > best.0 {
                    best = (adv, s.clone());
                }
            }
            best.1
        }
    };
    let mut p = admin(&primary).await;
    p.query_drop("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=OFF").await.unwrap();
    let (_, pport) = primary.rsplit_once(':').unwrap();
    let change = format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={pport}, MASTER_USER='repl', \
         MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1"
    );
    for s in info.servers.iter().filter(|s| **s != primary) {
        let mut c = admin(s).await;
        c.query_drop("SET GLOBAL read_only=ON").await.unwrap();
        let running: Option<mysql_async::Row> = c.query_first("SHOW SLAVE STATUS").await.unwrap();
        let ok = running.as_ref().is_some_and(|r| {
            r.get::<String, _>("Slave_IO_Running").as_deref() == Some("Yes")
                && r.get::<String, _>("Slave_SQL_Running").as_deref() == Some("Yes")
                && r.get::<Option<String>, _>("Master_Port").flatten().as_deref() == Some(pport)
        });
        if !ok {
            c.query_drop(format!("STOP SLAVE; {change}; START SLAVE")).await.unwrap();
        }
    }
    let pos = scalar(&mut p, "SELECT @@gtid_binlog_pos").await;
    for s in info.servers.iter().filter(|s| **s != primary) {
        let mut c = admin(s).await;
        if scalar(&mut c, &format!("SELECT MASTER_GTID_WAIT('{pos}', 10)")).await != "0" {
            // Diverged (an errant transaction of a former primary): start over from
            // the primary's position. Test tables are re-created by each test.
            c.query_drop(format!("STOP SLAVE; RESET MASTER; SET GLOBAL gtid_slave_pos='{pos}'; {change}; START SLAVE")).await.unwrap();
            let pos = scalar(&mut p, "SELECT @@gtid_binlog_pos").await;
            let r = scalar(&mut c, &format!("SELECT MASTER_GTID_WAIT('{pos}', 30)")).await;
            assert_eq!(r, "0", "{s} did not catch up with {primary} at {pos}: {:?}", source_of(&mut c).await);
        }
    }
    primary
}

/// The `[[users]]` and `[[clusters]]` tables for the reparent cluster with
/// `primary` seeded (the harness's accounts).
pub fn cluster_tables(info: &ClusterInfo, primary: &str, durability: &str) -> String {
    let servers = info.servers.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[[users]]
name = "app"
password = "app"
[[clusters]]
name = "main"
servers = [{servers}]
primary = {primary:?}
admin_user = "admin"
admin_password = "admin"
repl_password = "repl"
durability = "{durability}"
"#
    )
}

/// Start baton in front of the reparent cluster with `primary` seeded.
pub async fn start_baton(info: &ClusterInfo, primary: &str, extra: &str, durability: &str) -> (baton::Running, tempfile::TempDir) {
    start_baton_with(info, primary, extra, durability, "").await
}

/// [`start_baton`] with `cluster_extra` added to the `[[clusters]]` table
/// (e.g. `auto_failover = true`).
pub async fn start_baton_with(
    info: &ClusterInfo,
    primary: &str,
    extra: &str,
    durability: &str,
    cluster_extra: &str,
) -> (baton::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
admin_token = "{TOKEN}"
[topology]
path = {topo:?}
{extra}
{tables}"#,
        topo = dir.path().join("topology.json").display().to_string(),
        tables = cluster_tables(info, primary, durability) + cluster_extra,
    );
    let config = baton_control::Config::parse(&text).expect("config");
    (baton::start(config).await.expect("baton starts"), dir)
}

/// A minimal HTTP/1.1 client for the admin port: (status, JSON body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: baton\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_string())))
}

/// POST a planned reparent and return (status, report).
pub async fn reparent(running: &baton::Running, to: &str) -> (u16, serde_json::Value) {
    http(running.admin_addr, "POST", "/api/v1/clusters/main/reparent", Some(TOKEN), &format!("{{\"to\": \"{to}\"}}")).await
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Autocommit,
    Transaction,
    Prepared,
}

/// What one writer saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub acked: Vec<(i64, i64)>,
    pub errors: Vec<String>,
    /// (writer, seq, MySQL error code; 0 if not a server error) of writes that
    /// returned an error (a transaction's rows are seq and -seq).
    pub failed: Vec<(i64, i64, u16)>,
}

/// Write rows (writer, seq) as fast as possible until `stop`.
pub async fn writer(port: u16, w: i64, kind: Kind, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) -> Outcome {
    let mut out = Outcome::default();
    let mut c = Conn::new(super::opts(port, Some("baton_test"))).await.unwrap();
    let mut stmt = c.prep("INSERT INTO rp_rows (writer, seq, kind) VALUES (?, ?, 'ps')").await.unwrap();
    let mut seq = 0i64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let r = match kind {
            Kind::Autocommit => c.query_drop(format!("INSERT INTO rp_rows (writer, seq, kind) VALUES ({w}, {seq}, 'auto')")).await,
            Kind::Prepared => c.exec_drop(&stmt, (w, seq)).await,
            Kind::Transaction => {
                let r = async {
                    c.query_drop("BEGIN").await?;
                    c.query_drop(format!("INSERT INTO rp_rows (writer, seq, kind) VALUES ({w}, {seq}, 'tx')")).await?;
                    c.query_drop(format!("INSERT INTO rp_rows (writer, seq, kind) VALUES ({w}, {}, 'tx')", -seq)).await?;
                    c.query_drop("COMMIT").await
                }
                .await;
                if r.is_err() {
                    let _ = c.query_drop("ROLLBACK").await;
                }
                r
            }
        };
        match r {
            Ok(()) => {
                out.acked.push((w, seq));
                if let Kind::Transaction = kind {
                    out.acked.push((w, -seq));
                }
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let code = match &e {
                    mysql_async::Error::Server(s) => s.code,
                    _ => 0,
                };
                out.failed.push((w, seq, code));
                out.errors.push(format!("writer {w} ({kind:?}) seq {seq}: {e}"));
                if code == 0 {
                    // The client library gave up on the connection: a new one.
                    if let Ok(mut n) = Conn::new(super::opts(port, Some("baton_test"))).await {
                        if let Ok(s) = n.prep("INSERT INTO rp_rows (writer, seq, kind) VALUES (?, ?, 'ps')").await {
                            stmt = s;
                            c = n;
                        }
                    }
                }
            }
        }
    }
    let _ = c.disconnect().await;
    out
}

/// Wait until `counter` reached `target` (with a deadline).
pub async fn wait_count(counter: &AtomicU64, target: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while counter.load(Ordering::Relaxed) < target {
        assert!(Instant::now() < deadline, "writers stalled at {} (wanted {target})", counter.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// (Re)create the writers' table `baton_test.rp_rows` through baton.
pub async fn table(port: u16) {
    let mut c = Conn::new(super::opts(port, Some("baton_test"))).await.unwrap();
    c.query_drop("DROP TABLE IF EXISTS rp_rows; CREATE TABLE rp_rows (id BIGINT AUTO_INCREMENT PRIMARY KEY, writer INT NOT NULL, seq INT NOT NULL, kind VARCHAR(8))")
        .await
        .unwrap();
}

/// How many times each (writer, seq) row is on `addr` (read directly).
pub async fn rows(addr: &str) -> std::collections::HashMap<(i64, i64), i64> {
    let mut c = admin(addr).await;
    let v: Vec<(i64, i64, i64)> = c.query("SELECT writer, seq, COUNT(*) FROM baton_test.rp_rows GROUP BY writer, seq").await.unwrap();
    v.into_iter().map(|(w, s, n)| ((w, s), n)).collect()
}

/// Wait until the topology names a primary at `term` or later; returns it
/// (panics after `timeout`, with the last reparent report and the health view).
pub async fn wait_term(running: &baton::Running, term: u64, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let r = running.store.current().cluster("main").unwrap().clone();
        if r.term >= term {
            return r.primary;
        }
        let h = running.proxy.clusters["main"].last_reparent.lock().unwrap().clone();
        assert!(
            Instant::now() < deadline,
            "no failover within {timeout:?}; last: {h:?}; health: {:?}",
            running.proxy.clusters["main"].health.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
