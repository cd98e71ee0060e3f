//! Planned reparents through baton against a real 3-node cluster: writers see no
//! error, nothing acknowledged is lost or applied twice, long transactions get
//! the one documented error, failed reparents are undone, and the buffer's limits
//! behave as documented.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baton_control::gate::Phase;
use common::reparent::*;
use common::*;
use mysql_async::prelude::*;

const FAST: &str = "[buffer]\nwindow_ms = 10000\nmax_failover_duration_ms = 20000\nmin_time_between_failovers_ms = 0\ndrain_concurrency = 4\n\
                    [reparent]\ntransaction_grace_ms = 2000\ncatchup_timeout_ms = 5000\nprepare_timeout_ms = 5000\ncheck_interval_ms = 20\n";

fn handle_phase(running: &baton::Running) -> Phase {
    running.proxy.clusters["main"].gate.phase()
}

fn server_code(e: &mysql_async::Error) -> Option<(u16, String)> {
    match e {
        mysql_async::Error::Server(s) => Some((s.code, s.state.clone())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zero_error_reparents_back_and_forth() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start_baton(&info, &primary, FAST, "none").await;
    let port = running.mysql_addr.port();
    let mut setup = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    setup
        .query_drop("DROP TABLE IF EXISTS rp_rows; CREATE TABLE rp_rows (id BIGINT AUTO_INCREMENT PRIMARY KEY, writer INT NOT NULL, seq INT NOT NULL, kind VARCHAR(8))")
        .await
        .unwrap();
    drop(setup);

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

    // Five reparents, ending where we started.
    let others: Vec<String> = info.servers.iter().filter(|s| **s != primary).cloned().collect();
    let plan = [others[0].clone(), others[1].clone(), primary.clone(), others[0].clone(), primary.clone()];
    let mut pauses = Vec::new();
    for to in &plan {
        let before = acked.load(Ordering::Relaxed);
        wait_count(&acked, before + 200, Duration::from_secs(30)).await;
        let (status, report) = reparent(&running, to).await;
        assert_eq!(status, 200, "reparent to {to}: {report:#}");
        assert_eq!(report["outcome"], "ok", "{report:#}");
        assert_eq!(report["to"], to.as_str());
        pauses.push(report["total_ms"].as_u64().unwrap());
        let after = acked.load(Ordering::Relaxed);
        wait_count(&acked, after + 100, Duration::from_secs(30)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut all_acked = Vec::new();
    let mut errors = Vec::new();
    for w in writers {
        let o = w.await.unwrap();
        all_acked.extend(o.acked);
        errors.extend(o.errors);
    }
    assert!(errors.is_empty(), "client errors during reparents: {errors:#?}");
    println!("acknowledged rows: {}, reparent durations (ms): {pauses:?}", all_acked.len());

    // Every acknowledged row is on the primary exactly once, and nothing else is.
    let final_primary = plan.last().unwrap();
    let topo = running.store.current();
    assert_eq!(&topo.cluster("main").unwrap().primary, final_primary);
    assert_eq!(topo.cluster("main").unwrap().term, 6);
    let mut p = admin(final_primary).await;
    let rows: Vec<(i64, i64, i64)> = p.query("SELECT writer, seq, COUNT(*) FROM baton_test.rp_rows GROUP BY writer, seq").await.unwrap();
    let counts: HashMap<(i64, i64), i64> = rows.into_iter().map(|(w, s, n)| ((w, s), n)).collect();
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "rows applied twice: {dups:?}");
    let missing: Vec<_> = all_acked.iter().filter(|k| !counts.contains_key(k)).collect();
    assert!(missing.is_empty(), "acknowledged rows lost: {missing:?}");
    assert_eq!(counts.len(), all_acked.len(), "rows present that were never acknowledged");

    // The old primaries are read-only replicas of the new one.
    for s in info.servers.iter().filter(|s| *s != final_primary) {
        let mut c = admin(s).await;
        assert_eq!(scalar(&mut c, "SELECT @@read_only").await, "1", "{s}");
        assert_eq!(source_of(&mut c).await, *final_primary, "{s} replicates from the new primary");
    }
    running.shutdown(Some(Duration::from_millis(200))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transaction_longer_than_grace_gets_the_documented_error() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let extra = FAST.replace("transaction_grace_ms = 2000", "transaction_grace_ms = 300");
    let (running, _dir) = start_baton(&info, &primary, &extra, "none").await;
    let port = running.mysql_addr.port();
    let mut c = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    c.query_drop("CREATE TABLE IF NOT EXISTS long_tx (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(20)); DELETE FROM long_tx").await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO long_tx (v) VALUES ('lost-1')").await.unwrap();

    let other = info.servers.iter().find(|s| **s != primary).unwrap().clone();
    let (status, report) = reparent(&running, &other).await;
    assert_eq!((status, report["outcome"].as_str()), (200, Some("ok")), "{report:#}");
    let grace = report["steps"].as_array().unwrap().iter().find(|s| s["step"] == "grace").unwrap().clone();
    assert!(grace["detail"].as_str().unwrap().contains("1 session(s) still active"), "{grace}");

    // The transaction is over: its next statement gets 9101 (40001), once.
    let e = c.query_drop("INSERT INTO long_tx (v) VALUES ('lost-2')").await.unwrap_err();
    assert_eq!(server_code(&e), Some((9101, "40001".into())), "{e}");
    // The session lives on, on the new primary, outside any transaction.
    let port_now: Option<i64> = c.query_first("SELECT @@port").await.unwrap();
    assert_eq!(port_now.map(|p| p.to_string()), Some(other.rsplit_once(':').unwrap().1.to_string()));
    c.query_drop("INSERT INTO long_tx (v) VALUES ('after')").await.unwrap();
    let mut p = admin(&other).await;
    let vs: Vec<String> = p.query("SELECT v FROM baton_test.long_tx ORDER BY id").await.unwrap();
    assert_eq!(vs, vec!["after".to_string()], "nothing of the lost transaction is committed");
    drop(c);

    let (status, report) = reparent(&running, &primary).await;
    assert_eq!(status, 200, "{report:#}");
    running.shutdown(Some(Duration::from_millis(200))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_reparents_are_undone_without_client_errors() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let extra =
        FAST.replace("catchup_timeout_ms = 5000", "catchup_timeout_ms = 1000").replace("prepare_timeout_ms = 5000", "prepare_timeout_ms = 300");
    // The cluster's config names a fourth server that is down.
    let dead = format!("127.0.0.1:{}", baton_testkit::free_port());
    let mut with_dead = info.clone();
    with_dead.servers.push(dead.clone());
    let (running, _dir) = start_baton(&with_dead, &primary, &extra, "none").await;
    let port = running.mysql_addr.port();
    let mut setup = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    setup
        .query_drop("DROP TABLE IF EXISTS rp_rows; CREATE TABLE rp_rows (id BIGINT AUTO_INCREMENT PRIMARY KEY, writer INT NOT NULL, seq INT NOT NULL, kind VARCHAR(8))")
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = [Kind::Autocommit, Kind::Transaction, Kind::Prepared]
        .iter()
        .enumerate()
        .map(|(i, k)| tokio::spawn(writer(port, i as i64 + 1, *k, stop.clone(), acked.clone())))
        .collect();
    wait_count(&acked, 100, Duration::from_secs(30)).await;

    // An unreachable candidate: refused before anything is touched.
    let (status, body) = reparent(&running, &dead).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("bad_candidate")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("unreachable"), "{body}");
    assert_eq!(handle_phase(&running), Phase::Idle, "nothing was buffered");
    // A server that is not in the cluster at all.
    let (status, body) = reparent(&running, "127.0.0.1:1").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(running.admin_addr, "POST", "/api/v1/clusters/main/reparent", Some(TOKEN), "{\"to\": 5}").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));

    // A hopelessly lagging candidate: its SQL thread is stopped.
    let lagging = info.servers.iter().find(|s| **s != primary).unwrap().clone();
    let mut lag = admin(&lagging).await;
    lag.query_drop("STOP SLAVE SQL_THREAD").await.unwrap();
    let before = acked.load(Ordering::Relaxed);
    wait_count(&acked, before + 100, Duration::from_secs(30)).await;
    let (status, report) = reparent(&running, &lagging).await;
    assert_eq!(status, 500, "{report:#}");
    assert_eq!(report["outcome"], "undone", "{report:#}");
    assert!(report["error"].as_str().unwrap().contains("did not reach"), "{report:#}");
    assert_eq!(running.store.current().cluster("main").unwrap().primary, primary, "topology unchanged");
    let mut p = admin(&primary).await;
    assert_eq!(scalar(&mut p, "SELECT @@read_only").await, "0", "old primary writable again");
    let after = acked.load(Ordering::Relaxed);
    wait_count(&acked, after + 100, Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    let mut all = Vec::new();
    for w in writers {
        let o = w.await.unwrap();
        errors.extend(o.errors);
        all.extend(o.acked);
    }
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(report["buffered"].as_u64().unwrap() > 0, "writes were held, then flushed to the old primary: {report:#}");
    let n: Option<i64> = p.query_first("SELECT COUNT(*) FROM baton_test.rp_rows").await.unwrap();
    assert_eq!(n, Some(all.len() as i64));
    lag.query_drop("START SLAVE SQL_THREAD").await.unwrap();
    running.shutdown(Some(Duration::from_millis(200))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buffer_overflow_window_and_max_duration() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let extra = "[buffer]\nwindow_ms = 800\nsize = 2\nmax_failover_duration_ms = 60000\nmin_time_between_failovers_ms = 0\n[reparent]\ncheck_interval_ms = 20\n";
    let (running, _dir) = start_baton(&info, &primary, extra, "none").await;
    let port = running.mysql_addr.port();
    let handle = running.proxy.clusters["main"].clone();
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(mysql_async::Conn::new(opts(port, None)).await.unwrap());
    }
    // Buffering with no new primary coming: requests wait, overflow evicts the oldest.
    let term = running.store.current().cluster("main").unwrap().term;
    let ep = handle.gate.begin(term, &primary, "test", true).unwrap();
    let mut tasks = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move {
            // Enter the buffer in order.
            h.gate.watch().wait_for(|s| s.queued >= i.min(2)).await.unwrap();
            let r: Result<Option<i64>, _> = c.query_first("SELECT 1").await;
            r.map_err(|e| server_code(&e))
        }));
        handle.gate.watch().wait_for(|s| s.queued >= (i + 1).min(2)).await.unwrap();
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap().unwrap_err().unwrap().0);
    }
    codes.sort();
    assert_eq!(codes, vec![9102, 9102, 9103, 9103], "two evicted by overflow, two expired at the window");
    let c = &handle.gate.counters;
    let (b, d) = (c.buffered.load(Ordering::Relaxed), c.drained.load(Ordering::Relaxed));
    let ev = c.evicted_full.load(Ordering::Relaxed) + c.evicted_window.load(Ordering::Relaxed);
    assert_eq!((b, d, ev, handle.gate.status().queued as u64), (4, 0, 4, 0), "buffered = drained + evicted + queued");
    // The status names the false condition (no new primary named).
    let (status, body) = http(running.admin_addr, "GET", "/api/v1/clusters/main", None, "").await;
    assert_eq!(status, 200);
    assert_eq!(body["buffer"]["phase"], "buffering");
    let c2 = body["conditions"]["conditions"].as_array().unwrap().iter().find(|c| c["id"] == "C2").unwrap().clone();
    assert_eq!(c2["holds"], false, "{body:#}");
    handle.gate.fail(ep, baton_control::gate::GateError::MaxDuration);

    // Max failover duration: the episode ends and held requests fail with 9104.
    running.shutdown(Some(Duration::from_millis(100))).await;
    let extra =
        "[buffer]\nwindow_ms = 10000\nmax_failover_duration_ms = 700\nmin_time_between_failovers_ms = 0\n[reparent]\ncheck_interval_ms = 20\n";
    let (running, _dir2) = start_baton(&info, &primary, extra, "none").await;
    let handle = running.proxy.clusters["main"].clone();
    let mut c = mysql_async::Conn::new(opts(running.mysql_addr.port(), None)).await.unwrap();
    handle.gate.begin(term, &primary, "test", true).unwrap();
    let e = c.query_drop("SELECT 1").await.unwrap_err();
    assert_eq!(server_code(&e).map(|x| x.0), Some(9104), "{e}");
    assert_eq!(handle.gate.counters.evicted_max_duration.load(Ordering::Relaxed), 1);
    // Afterwards the gate is idle again and requests pass.
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    running.shutdown(Some(Duration::from_millis(100))).await;
}
