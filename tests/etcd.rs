//! Several batons on etcd, all real: an etcd the test starts, two `baton` processes,
//! and the reparent MariaDB cluster. A planned reparent asked of either proxy while
//! clients write through both (zero errors, nothing acknowledged lost, both drain
//! to the new primary); the orchestrator SIGKILLed (the other takes over and a
//! reparent still works); etcd down (both keep serving, reparents refused, they
//! converge when it returns); a bad etcd endpoint at startup (clear error, non-zero exit).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_testkit::{free_port, ClusterInfo, Etcd};
use common::reparent::*;
use common::*;
use mysql_async::prelude::*;

/// One baton process.
struct Proxy {
    child: Child,
    mysql: u16,
    admin: SocketAddr,
    log: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(info: &ClusterInfo, primary: &str, endpoint: &str, prefix: &str, mysql: u16, admin: u16) -> String {
    let tables = cluster_tables(info, primary, "semi_sync");
    format!(
        r#"
[server]
listen = "127.0.0.1:{mysql}"
admin_listen = "127.0.0.1:{admin}"
admin_token = "{TOKEN}"
shutdown_grace_ms = 100
[topology]
store = "etcd"
endpoints = ["{endpoint}"]
prefix = "{prefix}"
timeout_ms = 1000
lease_ttl_s = 2
[buffer]
window_ms = 30000
max_failover_duration_ms = 60000
min_time_between_failovers_ms = 0
drain_concurrency = 4
[reparent]
check_interval_ms = 20
transaction_grace_ms = 2000
[health]
interval_ms = 300
timeout_ms = 700
{tables}"#
    )
}

fn spawn(dir: &Path, name: &str, text: &str, mysql: u16, admin: u16) -> Proxy {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("--config")
        .arg(&path)
        .env("BATON_LOG", "baton_control=info,baton=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Proxy { child, mysql, admin: format!("127.0.0.1:{admin}").parse().unwrap(), log }
}

/// Start baton `name` and wait until it is registered in etcd.
async fn start(dir: &Path, name: &str, info: &ClusterInfo, primary: &str, etcd: &Etcd, prefix: &str) -> Proxy {
    let (mysql, admin) = (free_port(), free_port());
    let p = spawn(dir, name, &config(info, primary, &etcd.endpoint, prefix, mysql, admin), mysql, admin);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(p.admin).await.is_ok() {
            let t = topo(&p).await;
            if t["id"].is_string() && t["orchestrator"].is_object() {
                return p;
            }
        }
        assert!(Instant::now() < deadline, "{name} did not register: {}", std::fs::read_to_string(&p.log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The proxy's `GET /api/v1/topology` (null while its admin port is not up yet).
async fn topo(p: &Proxy) -> serde_json::Value {
    if tokio::net::TcpStream::connect(p.admin).await.is_err() {
        return serde_json::Value::Null;
    }
    http(p.admin, "GET", "/api/v1/topology", None, "").await.1
}

/// Wait until `cond` holds for the proxy's topology view.
async fn wait_topo(p: &Proxy, what: &str, timeout: Duration, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let t = topo(p).await;
        if cond(&t) {
            return t;
        }
        assert!(Instant::now() < deadline, "{what}: {t:#}\n{}", std::fs::read_to_string(&p.log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post_reparent(p: &Proxy, to: &str) -> (u16, serde_json::Value) {
    http(p.admin, "POST", "/api/v1/clusters/main/reparent", Some(TOKEN), &format!("{{\"to\": \"{to}\"}}")).await
}

/// Writers through both proxies: (stop flag, acknowledged counter, tasks).
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Outcome>>,
}

/// Writer ids start at `base` (unique per load within a test: rows are (writer, seq)).
fn load(ports: &[u16], per_proxy: usize, base: i64) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let kinds = [Kind::Autocommit, Kind::Transaction, Kind::Prepared, Kind::Autocommit];
    let mut tasks = Vec::new();
    for (pi, port) in ports.iter().enumerate() {
        for k in 0..per_proxy {
            let w = base + (pi * 10 + k) as i64;
            tasks.push(tokio::spawn(writer(*port, w, kinds[k % kinds.len()], stop.clone(), acked.clone())));
        }
    }
    Load { stop, acked, tasks }
}

impl Load {
    async fn finish(self) -> (Vec<(i64, i64)>, Vec<String>) {
        let (acked, errors, _) = self.finish_all().await;
        (acked, errors)
    }

    /// Acknowledged rows, error messages, and (writer, seq, code) of failed writes.
    async fn finish_all(self) -> (Vec<(i64, i64)>, Vec<String>, Vec<(i64, i64, u16)>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut acked, mut errors, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        for t in self.tasks {
            let o = t.await.unwrap();
            acked.extend(o.acked);
            errors.extend(o.errors);
            failed.extend(o.failed);
        }
        (acked, errors, failed)
    }

    async fn more(&self, n: u64) {
        let now = self.acked.load(Ordering::Relaxed);
        wait_count(&self.acked, now + n, Duration::from_secs(30)).await;
    }
}

fn check_rows(acked: &[(i64, i64)], counts: &HashMap<(i64, i64), i64>) {
    let lost: Vec<_> = acked.iter().filter(|k| !counts.contains_key(k)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(counts.values().all(|n| *n == 1), "a row applied twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reparent_through_either_proxy_and_orchestrator_takeover() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(&dir.path().join("etcd")).unwrap();
    let a = start(dir.path(), "a", &info, &primary, &etcd, "/baton-t1").await;
    let b = start(dir.path(), "b", &info, &primary, &etcd, "/baton-t1").await;
    let (ta, tb) = (topo(&a).await, topo(&b).await);
    assert_eq!(ta["orchestrator"], tb["orchestrator"], "both see the same orchestrator");
    assert_eq!(ta["members"].as_array().unwrap().len(), 2);
    // Ask the proxy that is not the orchestrator: the request is forwarded.
    let (orch, other) = if ta["is_orchestrator"] == true { (a, b) } else { (b, a) };
    assert_eq!(topo(&other).await["is_orchestrator"], false);

    table(orch.mysql).await;
    let l = load(&[orch.mysql, other.mysql], 4, 1);
    l.more(300).await;
    let to = info.servers.iter().find(|s| **s != primary).unwrap().clone();
    let (status, report) = post_reparent(&other, &to).await;
    assert_eq!((status, report["outcome"].as_str()), (200, Some("ok")), "{report:#}");
    let acks = report["steps"].as_array().unwrap().iter().find(|s| s["step"] == "acks").expect("an acks step").clone();
    assert!(acks["detail"].as_str().unwrap().contains("1 other proxy(ies) buffering"), "{acks}");
    l.more(300).await;
    let (acked, errors) = l.finish().await;
    assert!(errors.is_empty(), "client errors through the proxies: {errors:?}");
    check_rows(&acked, &rows(&to).await);
    for p in [&orch, &other] {
        let t = wait_topo(p, "term 2 everywhere", Duration::from_secs(10), |t| t["clusters"]["main"]["term"] == 2).await;
        assert_eq!(t["clusters"]["main"]["primary"], to.as_str());
        let (_, s) = http(p.admin, "GET", "/api/v1/clusters/main", None, "").await;
        assert_eq!(s["buffer"]["phase"], "idle", "{s:#}");
    }
    println!("planned reparent through two proxies: {} acknowledged, 0 errors", acked.len());

    // The orchestrator dies: the other takes the role once its lease expires.
    let mut orch = orch;
    let _ = orch.child.kill();
    let _ = orch.child.wait();
    let killed = Instant::now();
    wait_topo(&other, "takeover", Duration::from_secs(15), |t| t["is_orchestrator"] == true).await;
    println!("orchestrator role taken over {:?} after SIGKILL", killed.elapsed());
    let l = load(&[other.mysql], 4, 100);
    l.more(200).await;
    let (status, report) = post_reparent(&other, &primary).await;
    assert_eq!((status, report["outcome"].as_str()), (200, Some("ok")), "{report:#}");
    l.more(200).await;
    let (acked, errors) = l.finish().await;
    assert!(errors.is_empty(), "{errors:?}");
    let t = topo(&other).await;
    assert_eq!(t["clusters"]["main"]["term"], 3);
    assert_eq!(t["members"].as_array().unwrap().len(), 1, "the dead proxy's registration expired");
    let counts = rows(&primary).await;
    check_rows(&acked, &counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_outage_keeps_serving_refuses_reparents_and_converges() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(&dir.path().join("etcd")).unwrap();
    let a = start(dir.path(), "a", &info, &primary, &etcd, "/baton-t2").await;
    let b = start(dir.path(), "b", &info, &primary, &etcd, "/baton-t2").await;
    table(a.mysql).await;
    let l = load(&[a.mysql, b.mysql], 2, 1);
    l.more(100).await;

    etcd.stop();
    for p in [&a, &b] {
        wait_topo(p, "degraded", Duration::from_secs(10), |t| t["degraded"].is_string()).await;
    }
    // Both keep serving reads and writes on the known primary.
    l.more(200).await;
    for p in [&a, &b] {
        let mut c = mysql_async::Conn::new(opts(p.mysql, Some("baton_test"))).await.unwrap();
        let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM rp_rows").await.unwrap();
        assert!(n.unwrap() > 0);
        let to = info.servers.iter().find(|s| **s != primary).unwrap();
        let (status, body) = post_reparent(p, to).await;
        assert_eq!((status, body["error"].as_str()), (503, Some("store_unavailable")), "{body:#}");
        assert!(body["detail"].as_str().unwrap().contains("etcd"), "{body:#}");
    }
    assert_eq!(scalar(&mut admin(&primary).await, "SELECT @@read_only").await, "0", "nothing was revoked");
    let (_, m) = http(a.admin, "GET", "/metrics", None, "").await;
    assert!(m.as_str().unwrap().lines().any(|l| l == "baton_topology_store_up 0"), "{m}");
    let ctl = Command::new(env!("CARGO_BIN_EXE_baton")).args(["ctl", "--admin", &a.admin.to_string(), "topology"]).output().unwrap();
    let out = String::from_utf8_lossy(&ctl.stdout);
    assert_eq!(ctl.status.code(), Some(1), "{out}");
    assert!(out.contains("store etcd: DEGRADED"), "{out}");

    etcd.start_again().unwrap();
    let mut orchestrators = Vec::new();
    for p in [&a, &b] {
        let t = wait_topo(p, "healthy again", Duration::from_secs(20), |t| t["degraded"].is_null() && t["orchestrator"].is_object()).await;
        orchestrators.push(t["orchestrator"]["id"].clone());
    }
    wait_topo(&b, "one orchestrator", Duration::from_secs(10), |t| t["orchestrator"]["id"] == orchestrators[0]).await;
    let mut holding = 0;
    for p in [&a, &b] {
        let (_, m) = http(p.admin, "GET", "/metrics", None, "").await;
        let m = m.as_str().unwrap().to_string();
        assert!(m.lines().any(|l| l == "baton_topology_store_up 1"), "{m}");
        holding += m.lines().filter(|l| *l == "baton_orchestrator 1").count();
    }
    assert_eq!(holding, 1, "exactly one orchestrator");
    let to = info.servers.iter().find(|s| **s != primary).unwrap().clone();
    let (status, report) = post_reparent(&b, &to).await;
    assert_eq!((status, report["outcome"].as_str()), (200, Some("ok")), "{report:#}");
    l.more(100).await;
    let (acked, errors) = l.finish().await;
    assert!(errors.is_empty(), "{errors:?}");
    check_rows(&acked, &rows(&to).await);
    for p in [&a, &b] {
        wait_topo(p, "converged", Duration::from_secs(10), |t| t["clusters"]["main"]["primary"] == to.as_str()).await;
    }
}

/// A TCP relay to etcd that can be cut (every connection dropped, new ones refused)
/// and restored: one proxy cut off from etcd while the others are not.
struct Relay {
    addr: String,
    cut: Arc<std::sync::Mutex<tokio_util::sync::CancellationToken>>,
    down: Arc<AtomicBool>,
}

impl Relay {
    async fn start(to: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(std::sync::Mutex::new(tokio_util::sync::CancellationToken::new()));
        let down = Arc::new(AtomicBool::new(false));
        let (c, d) = (cut.clone(), down.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    continue; // refused: dropped at once
                }
                let token = c.lock().unwrap().clone();
                let to = to.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&to).await else { return };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        Relay { addr, cut, down }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        let mut t = self.cut.lock().unwrap();
        t.cancel();
        *t = tokio_util::sync::CancellationToken::new();
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_cut_off_from_etcd_is_stopped_by_the_revocation_and_catches_up() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(&dir.path().join("etcd")).unwrap();
    let a = start(dir.path(), "a", &info, &primary, &etcd, "/baton-t4").await;
    wait_topo(&a, "a orchestrates", Duration::from_secs(10), |t| t["is_orchestrator"] == true).await;
    // B reaches etcd only through the relay.
    let relay = Relay::start(etcd.endpoint.clone()).await;
    let (mysql, admin) = (free_port(), free_port());
    let b = spawn(dir.path(), "b", &config(&info, &primary, &relay.addr, "/baton-t4", mysql, admin), mysql, admin);
    wait_topo(&b, "b registered", Duration::from_secs(20), |t| t["id"].is_string() && t["orchestrator"].is_object()).await;
    table(a.mysql).await;
    let la = load(&[a.mysql], 4, 1);
    let lb = load(&[b.mysql], 4, 100);
    la.more(200).await;
    lb.more(200).await;

    relay.cut();
    wait_topo(&b, "b degraded", Duration::from_secs(10), |t| t["degraded"].is_string()).await;
    let to = info.servers.iter().find(|s| **s != primary).unwrap().clone();
    let (status, report) = post_reparent(&a, &to).await;
    assert_eq!((status, report["outcome"].as_str()), (200, Some("ok")), "{report:#}");
    la.more(200).await;
    // B missed the announcement; the revocation stopped it (1290 or a killed
    // connection: it holds requests). Once it reaches etcd again it follows the
    // new term and its writers go on.
    relay.restore();
    wait_topo(&b, "b converged", Duration::from_secs(20), |t| t["degraded"].is_null() && t["clusters"]["main"]["term"] == 2).await;
    lb.more(200).await;
    let (acked_a, errors_a) = la.finish().await;
    let (acked_b, _, failed_b) = lb.finish_all().await;
    assert!(errors_a.is_empty(), "{errors_a:?}");
    // Only B's transactions open at the revocation may fail, with the documented
    // codes, at most one per writer; none of them is committed.
    assert!(failed_b.len() <= 4 && failed_b.iter().all(|f| f.2 == 9101 || f.2 == 9105), "{failed_b:?}");
    let counts = rows(&to).await;
    check_rows(&acked_a, &counts);
    check_rows(&acked_b, &counts);
    for (w, s, code) in &failed_b {
        if *code == 9101 {
            assert!(!counts.contains_key(&(*w, *s)), "a lost transaction's row is present: {w}/{s}");
        }
    }
    println!("cut-off proxy: {} acknowledged, failed {failed_b:?}", acked_b.len());
}

#[tokio::test]
async fn bad_etcd_endpoint_is_a_clear_error_at_startup() {
    let info = info();
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let (mysql, admin) = (free_port(), free_port());
    let mut p = spawn(dir.path(), "bad", &config(&info, &info.servers[0], &dead, "/baton-t3", mysql, admin), mysql, admin);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "baton kept running without etcd");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(log.contains(&format!("cannot reach etcd at {dead}")), "{log}");

    // A malformed endpoint is refused by --check-config.
    let path = dir.path().join("malformed.toml");
    std::fs::write(&path, config(&info, &info.servers[0], "no-port-here", "/baton-t3", mysql, admin)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_baton")).arg("--check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("topology.endpoints"), "{}", String::from_utf8_lossy(&out.stderr));
}
