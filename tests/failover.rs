//! Unplanned failover against the real cluster: the primary SIGKILLed under 8
//! writers (automatic failover), restarted (fenced, then rejoined), hung with
//! SIGSTOP (detected by timeouts; revoked once it answers again), and failovers
//! that must be refused (no replica has every acknowledged write; split brain).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::reparent::*;
use common::*;
use mysql_async::prelude::*;

const AUTO: &str = "[buffer]\nwindow_ms = 30000\nmax_failover_duration_ms = 60000\nmin_time_between_failovers_ms = 0\ndrain_concurrency = 4\n\
                    [reparent]\ncheck_interval_ms = 20\ncatchup_timeout_ms = 10000\n\
                    [health]\ninterval_ms = 300\ntimeout_ms = 700\nfailure_threshold = 3\n";

fn logs() {
    let _ = tracing_subscriber::fmt().with_env_filter("baton_control=info,baton_proxy=info").with_test_writer().try_init();
}

/// Rows per (writer, seq) on `addr`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_primary_under_load_fails_over_without_losing_acknowledged_writes() {
    let _l = LOCK.lock().await;
    logs();
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start_auto(&info, &primary).await;
    let port = running.mysql_addr.port();
    table(port).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let kinds = [
        Kind::Autocommit,
        Kind::Autocommit,
        Kind::Autocommit,
        Kind::Transaction,
        Kind::Transaction,
        Kind::Transaction,
        Kind::Prepared,
        Kind::Prepared,
    ];
    let writers: Vec<_> = kinds.iter().enumerate().map(|(i, k)| tokio::spawn(writer(port, i as i64 + 1, *k, stop.clone(), acked.clone()))).collect();
    wait_count(&acked, 300, Duration::from_secs(30)).await;

    signal(&info, &primary, "KILL");
    let killed_at = Instant::now();
    let new_primary = wait_term(&running, 2, Duration::from_secs(30)).await;
    assert_ne!(new_primary, primary);
    let before = acked.load(Ordering::Relaxed);
    wait_count(&acked, before + 300, Duration::from_secs(30)).await;
    let resumed = killed_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut failed) = (Vec::new(), Vec::new());
    for w in writers {
        let o = w.await.unwrap();
        all.extend(o.acked);
        failed.extend(o.failed);
    }
    println!("failover: writes resumed {resumed:?} after the SIGKILL; {} acknowledged; failed: {failed:?}", all.len());
    // Errors only for what was in flight at the crash: at most one per writer, each
    // either "transaction lost" (9101) or "outcome unknown" (9105).
    assert!(failed.len() <= kinds.len(), "{failed:?}");
    assert!(failed.iter().all(|f| f.2 == 9101 || f.2 == 9105), "{failed:?}");
    let counts = rows(&new_primary).await;
    let lost: Vec<_> = all.iter().filter(|k| !counts.contains_key(k)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(counts.values().all(|n| *n == 1), "a row applied twice");
    for (w, s, code) in &failed {
        if *code == 9101 {
            assert!(!counts.contains_key(&(*w, *s)) && !counts.contains_key(&(*w, -*s)), "a lost transaction's rows are present: {w}/{s}");
        }
    }

    // The automatic failover is counted like one asked for.
    let counted = "baton_reparents_total{cluster=\"main\",kind=\"emergency\",result=\"ok\"} 1";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = metrics_text(&running).await;
        if metrics.lines().any(|l| l == counted) {
            break;
        }
        assert!(Instant::now() < deadline, "automatic failover not counted:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The killed primary comes back: fenced (read-only), then rejoined as a replica.
    restart(&info, &primary).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = admin(&primary).await;
        let ro = scalar(&mut c, "SELECT @@read_only").await;
        assert_eq!(ro, "1", "the old primary never takes writes");
        if source_of(&mut c).await == new_primary {
            break;
        }
        assert!(Instant::now() < deadline, "not rejoined: {:?}", running.proxy.clusters["main"].health.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pos = scalar(&mut admin(&new_primary).await, "SELECT @@gtid_binlog_pos").await;
    assert_eq!(scalar(&mut admin(&primary).await, &format!("SELECT MASTER_GTID_WAIT('{pos}', 30)")).await, "0");
    assert_eq!(rows(&primary).await, rows(&new_primary).await, "the rejoined server has exactly the new primary's rows");
    running.shutdown(Some(Duration::from_millis(100))).await;
}

async fn metrics_text(running: &baton::Running) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(running.admin_addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).split_once("\r\n\r\n").unwrap().1.to_string()
}

async fn start_auto(info: &baton_testkit::ClusterInfo, primary: &str) -> (baton::Running, tempfile::TempDir) {
    start_baton_with(info, primary, AUTO, "semi_sync", "auto_failover = true\n").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hung_primary_is_detected_replaced_and_revoked_when_it_wakes() {
    let _l = LOCK.lock().await;
    logs();
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start_auto(&info, &primary).await;
    let port = running.mysql_addr.port();
    table(port).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = [Kind::Autocommit, Kind::Transaction, Kind::Prepared]
        .iter()
        .enumerate()
        .map(|(i, k)| tokio::spawn(writer(port, i as i64 + 1, *k, stop.clone(), acked.clone())))
        .collect();
    wait_count(&acked, 100, Duration::from_secs(30)).await;

    signal(&info, &primary, "STOP");
    let new_primary = wait_term(&running, 2, Duration::from_secs(30)).await;
    let before = acked.load(Ordering::Relaxed);
    wait_count(&acked, before + 100, Duration::from_secs(30)).await;
    signal(&info, &primary, "CONT");
    // Once it answers, it is revoked (read_only=ON) and never named primary again.
    until_read_only(&primary).await;
    let after_wake = acked.load(Ordering::Relaxed);
    wait_count(&acked, after_wake + 100, Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut failed) = (Vec::new(), Vec::new());
    for w in writers {
        let o = w.await.unwrap();
        all.extend(o.acked);
        failed.extend(o.failed);
    }
    assert!(failed.iter().all(|f| f.2 == 9101 || f.2 == 9105), "{failed:?}");
    assert!(failed.len() <= 3, "{failed:?}");
    assert_eq!(running.store.current().cluster("main").unwrap().primary, new_primary);
    let counts = rows(&new_primary).await;
    let lost: Vec<_> = all.iter().filter(|k| !counts.contains_key(k)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // Either rejoined, or (if it committed something on its own while hung) kept out as errant.
    let h = running.proxy.clusters["main"].health.lock().unwrap().clone();
    println!("after SIGCONT: {:?} / errant {:?}", h.last_action, h.errant);
    running.shutdown(Some(Duration::from_millis(100))).await;
    rebuild_as_replica(&primary, &new_primary).await;
}

/// Leave the cluster usable for the next test: a woken old primary that was
/// kept out (errant) is rebuilt as a replica of `new_primary`.
async fn rebuild_as_replica(old_primary: &str, new_primary: &str) {
    let mut old = admin(old_primary).await;
    if source_of(&mut old).await.is_empty() {
        old.query_drop("RESET MASTER").await.unwrap();
        let pos = scalar(&mut admin(new_primary).await, "SELECT @@gtid_binlog_pos").await;
        let (_, port) = new_primary.rsplit_once(':').unwrap();
        old.query_drop(format!("SET GLOBAL read_only=ON; SET GLOBAL gtid_slave_pos='{pos}'; CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, MASTER_USER='repl', MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos; START SLAVE")).await.unwrap();
    }
}

/// Issue 11, item 6: when a failover begins, every backend connection of the
/// old term is closed first. A write sent to a primary that hangs (SIGSTOP) is
/// answered "outcome unknown" (9105) as the failover starts, before it elects
/// and publishes the new primary, so nothing sent to the old primary can be
/// acknowledged after the election read the acknowledged GTIDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_closes_the_old_terms_connections_before_it_elects() {
    let _l = LOCK.lock().await;
    logs();
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start_auto(&info, &primary).await;
    let port = running.mysql_addr.port();
    table(port).await;
    let mut c = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    c.query_drop("SELECT 1").await.unwrap();
    signal(&info, &primary, "STOP");
    let write = tokio::spawn(async move {
        let r = c.query_drop("INSERT INTO rp_rows (writer, seq, kind) VALUES (61, 1, 'hung')").await;
        (r, std::time::Instant::now())
    });
    let (r, answered) = tokio::time::timeout(Duration::from_secs(30), write).await.expect("the hung write was never answered").unwrap();
    let report = running.proxy.clusters["main"].last_reparent.lock().unwrap().clone().expect("a failover began");
    let steps: Vec<&str> = report.steps.iter().map(|s| s.step.name()).collect();
    let code = match &r {
        Err(mysql_async::Error::Server(e)) => e.code,
        other => panic!("the hung write answered {other:?}"),
    };
    assert_eq!(code, 9105, "{r:?}");
    assert!(!steps.contains(&"elect") && !steps.contains(&"publish"), "answered only after the election: {steps:?}");
    assert!(report.steps[0].detail.contains("1 backend connection(s) of the old term closed"), "{:?}", report.steps[0]);
    let new_primary = wait_term(&running, 2, Duration::from_secs(30)).await;
    assert!(answered.elapsed() < Duration::from_secs(30));
    signal(&info, &primary, "CONT");
    // The woken primary is revoked, and the write is either nowhere or kept out
    // with it (errant): never acknowledged, never on the new primary.
    until_read_only(&primary).await;
    assert!(!rows(&new_primary).await.contains_key(&(61, 1)), "the unacknowledged write reached the new primary");
    running.shutdown(Some(Duration::from_millis(100))).await;
    rebuild_as_replica(&primary, &new_primary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_is_refused_without_every_acknowledged_write_and_leaves_out_a_replicas_own_write() {
    let _l = LOCK.lock().await;
    logs();
    let info = info();
    let primary = heal(&info).await;
    let replicas: Vec<String> = info.servers.iter().filter(|s| **s != primary).cloned().collect();
    let (running, _dir) = start_baton(&info, &primary, AUTO, "none").await;
    let port = running.mysql_addr.port();
    table(port).await;

    // 1. No replica is caught up: both stop receiving, then baton acknowledges a write.
    for r in &replicas {
        admin(r).await.query_drop("STOP SLAVE IO_THREAD").await.unwrap();
    }
    let mut c = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    c.query_drop("INSERT INTO rp_rows (writer, seq, kind) VALUES (1, 1, 'acked')").await.unwrap();
    signal(&info, &primary, "KILL");
    let (status, report) = http(running.admin_addr, "POST", "/api/v1/clusters/main/failover", Some(TOKEN), "").await;
    assert_eq!((status, report["outcome"].as_str()), (409, Some("refused")), "{report:#}");
    assert!(report["error"].as_str().unwrap().contains("lacks writes baton acknowledged"), "{report:#}");
    assert_eq!(running.store.current().cluster("main").unwrap().term, 1, "nothing promoted");
    for r in &replicas {
        assert_eq!(scalar(&mut admin(r).await, "SELECT @@read_only").await, "1", "{r} stays read-only");
    }
    let (_, status) = http(running.admin_addr, "GET", "/api/v1/clusters/main", None, "").await;
    assert!(status["last_reparent"]["error"].as_str().unwrap().contains("acknowledged"), "the status says why");
    restart(&info, &primary).await;
    running.shutdown(Some(Duration::from_millis(100))).await;
    heal(&info).await;

    // 2. One replica misses a write and takes one of its own, and the primary
    // dies before a health check could call it errant: left out at the
    // election (its own latest transaction the winner lacks), not a split brain.
    let primary = heal(&info).await;
    let replicas: Vec<String> = info.servers.iter().filter(|s| **s != primary).cloned().collect();
    let (running, _dir) = start_baton(&info, &primary, AUTO, "none").await;
    let (a, b) = (replicas[0].clone(), replicas[1].clone());
    let mut ra = admin(&a).await;
    ra.query_drop("STOP SLAVE").await.unwrap();
    let pos_before = scalar(&mut ra, "SELECT @@gtid_current_pos").await;
    let mut c = mysql_async::Conn::new(opts(running.mysql_addr.port(), Some("baton_test"))).await.unwrap();
    c.query_drop("INSERT INTO rp_rows (writer, seq, kind) VALUES (2, 1, 'main')").await.unwrap();
    let pos = scalar(&mut admin(&primary).await, "SELECT @@gtid_binlog_pos").await;
    assert_eq!(scalar(&mut admin(&b).await, &format!("SELECT MASTER_GTID_WAIT('{pos}', 30)")).await, "0");
    // One transaction of its own: the same sequence number as the write it missed.
    ra.query_drop("CREATE OR REPLACE TABLE baton_test.errant_t (id INT PRIMARY KEY)").await.unwrap();
    signal(&info, &primary, "KILL");
    let (status, report) = http(running.admin_addr, "POST", "/api/v1/clusters/main/failover", Some(TOKEN), "").await;
    assert_eq!((status, report["outcome"].as_str()), (200, Some("ok")), "{report:#}");
    assert_eq!(running.store.current().cluster("main").unwrap().primary, b, "the replica with every write is elected");
    let exclude = report["steps"].as_array().unwrap().iter().find(|s| s["step"] == "exclude").cloned();
    assert!(exclude.is_some_and(|s| s["detail"].as_str().unwrap().contains(&format!("{a}: its own"))), "{report:#}");
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM rp_rows WHERE writer = 2").await.unwrap();
    assert_eq!(n, Some(1), "the acknowledged write is there");
    assert_eq!(scalar(&mut ra, "SELECT @@read_only").await, "1", "{a} stays read-only");
    running.shutdown(Some(Duration::from_millis(100))).await;

    // Put the cluster back: the old primary returns; the diverged replica is reset to
    // the common history and follows it again.
    restart(&info, &primary).await;
    ra.query_drop(format!("DROP TABLE IF EXISTS baton_test.errant_t; RESET MASTER; SET GLOBAL gtid_slave_pos='{pos_before}'")).await.unwrap();
    let mut rb = admin(&b).await;
    let _ = rb.query_drop("START SLAVE IO_THREAD").await;
    heal(&info).await;
}
