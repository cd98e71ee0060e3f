//! Transaction replay (issue 13) against the real cluster: transactions cut by a
//! planned reparent's revoke (grace 0) or a crash of the primary finish on the
//! new primary; a transaction whose re-run reads otherwise (another session
//! changed the row, RAND(), NOW(6), UUID()) or that is too large gets 9101 with
//! nothing of it committed; an unanswered COMMIT is re-run only when the new
//! primary's history proves it did not commit.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::reparent::*;
use common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;

const REPLAY: &str = "[buffer]\nwindow_ms = 30000\nmax_failover_duration_ms = 60000\nmin_time_between_failovers_ms = 0\ndrain_concurrency = 4\n\
                      [reparent]\ntransaction_grace_ms = 0\ncheck_interval_ms = 20\ncatchup_timeout_ms = 10000\nprepare_timeout_ms = 5000\n\
                      [health]\ninterval_ms = 300\ntimeout_ms = 700\nfailure_threshold = 3\n\
                      [transaction_replay]\nenabled = true\nmax_bytes = 4096\n";

fn logs() {
    let _ = tracing_subscriber::fmt().with_env_filter("baton_control=info,baton_proxy=info").with_test_writer().try_init();
}

/// The transaction tables through baton: `rt_acct` (a counter per writer) and
/// `rt_log` (one row per transaction, with the counter it read).
async fn tables(port: u16) {
    let mut c = Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    c.query_drop(
        "DROP TABLE IF EXISTS rt_acct, rt_log, rt_auto; \
         CREATE TABLE rt_acct (id INT PRIMARY KEY, v BIGINT NOT NULL); \
         CREATE TABLE rt_log (w INT NOT NULL, seq INT NOT NULL, seen BIGINT NOT NULL, KEY (w, seq)); \
         CREATE TABLE rt_auto (id BIGINT AUTO_INCREMENT PRIMARY KEY, x INT); \
         INSERT INTO rt_acct SELECT seq, 0 FROM seq_1_to_200",
    )
    .await
    .unwrap();
}

/// What one writer saw: acknowledged seqs, and (seq, code) of failed ones.
#[derive(Debug, Default)]
struct Seen {
    acked: Vec<i64>,
    failed: Vec<(i64, u16)>,
}

/// Five-statement transactions until `stop`: BEGIN; read the writer's counter
/// (FOR UPDATE); UPDATE it from what was read; INSERT a log row naming it
/// (prepared); COMMIT.
async fn tx_writer(port: u16, w: i64, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) -> Seen {
    let mut out = Seen::default();
    let mut c = Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let r: Result<(), mysql_async::Error> = async {
            c.query_drop("BEGIN").await?;
            let v: Option<i64> = c.query_first(format!("SELECT v FROM rt_acct WHERE id = {w} FOR UPDATE")).await?;
            let v = v.unwrap_or(-1);
            c.query_drop(format!("UPDATE rt_acct SET v = {} WHERE id = {w}", v + 1)).await?;
            c.exec_drop("INSERT INTO rt_log (w, seq, seen) VALUES (?, ?, ?)", (w, seq, v)).await?;
            c.query_drop("COMMIT").await
        }
        .await;
        match r {
            Ok(()) => {
                out.acked.push(seq);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let code = if let mysql_async::Error::Server(s) = &e { s.code } else { 0 };
                out.failed.push((seq, code));
                if code == 0 {
                    c = Conn::new(opts(port, Some("baton_test"))).await.unwrap();
                } else {
                    let _ = c.query_drop("ROLLBACK").await;
                }
            }
        }
    }
    out
}

/// Every writer's log on `addr`: the seqs in order of the counter they read,
/// and the counter now. A consistent history reads 0, 1, 2, ... with each seq
/// once (none doubled, none partly applied).
async fn check_history(addr: &str, seen: &BTreeMap<i64, Seen>) {
    let mut c = admin(addr).await;
    for (w, s) in seen {
        let log: Vec<(i64, i64)> = c.query(format!("SELECT seq, seen FROM baton_test.rt_log WHERE w = {w} ORDER BY seen, seq")).await.unwrap();
        let v: i64 = c.query_first(format!("SELECT v FROM baton_test.rt_acct WHERE id = {w}")).await.unwrap().unwrap();
        for (i, (seq, read)) in log.iter().enumerate() {
            assert_eq!(*read, i as i64, "writer {w}: transaction {seq} read {read} at position {i}: {log:?}");
        }
        assert_eq!(v, log.len() as i64, "writer {w}: counter {v} but {} transactions logged", log.len());
        let have: std::collections::HashSet<i64> = log.iter().map(|(s, _)| *s).collect();
        assert_eq!(have.len(), log.len(), "writer {w}: a transaction applied twice: {log:?}");
        let lost: Vec<_> = s.acked.iter().filter(|a| !have.contains(a)).collect();
        assert!(lost.is_empty(), "writer {w}: acknowledged transactions lost: {lost:?}");
        for (seq, code) in &s.failed {
            if *code != 9105 {
                assert!(!have.contains(seq), "writer {w}: transaction {seq} failed with {code} but is present");
            }
        }
    }
}

/// Heal the reparent cluster and start baton with replay on (and automatic
/// failover if `auto`), with the transaction tables made.
async fn start(auto: bool) -> (baton_testkit::ClusterInfo, String, baton::Running, tempfile::TempDir) {
    logs();
    let info = info();
    let primary = heal(&info).await;
    let (running, dir) = start_baton_with(&info, &primary, REPLAY, "semi_sync", if auto { "auto_failover = true\n" } else { "" }).await;
    tables(running.mysql_addr.port()).await;
    (info, primary, running, dir)
}

/// Writers 1 to 8 ([`tx_writer`]) until `stop`.
fn spawn_writers(port: u16, stop: &Arc<AtomicBool>, acked: &Arc<AtomicU64>) -> Vec<tokio::task::JoinHandle<Seen>> {
    (1..=8).map(|w| tokio::spawn(tx_writer(port, w, stop.clone(), acked.clone()))).collect()
}

/// What each writer saw, by writer, and every failed attempt as (writer, (seq, code)).
async fn join_writers(writers: Vec<tokio::task::JoinHandle<Seen>>) -> (BTreeMap<i64, Seen>, Vec<(i64, (i64, u16))>) {
    let mut seen = BTreeMap::new();
    for (i, w) in writers.into_iter().enumerate() {
        seen.insert(i as i64 + 1, w.await.unwrap());
    }
    let failed = seen.iter().flat_map(|(w, s)| s.failed.iter().map(move |f| (*w, *f))).collect();
    (seen, failed)
}

async fn replay_stats(running: &baton::Running) -> serde_json::Value {
    let (status, body) = http(running.admin_addr, "GET", "/api/v1/clusters/main", None, "").await;
    assert_eq!(status, 200);
    body["replay"].clone()
}

/// Issue 13: 8 writers through a planned reparent with `transaction_grace_ms = 0`:
/// zero errors; every acknowledged transaction present once; none partly applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_cut_by_a_planned_reparent_finish_on_the_new_primary() {
    let _l = LOCK.lock().await;
    let (info, primary, running, _dir) = start(false).await;
    let port = running.mysql_addr.port();
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let writers = spawn_writers(port, &stop, &acked);
    wait_count(&acked, 200, Duration::from_secs(30)).await;
    // One transaction certainly open at the revoke (the writers' may all finish
    // in the moment before it): it goes on after the reparent.
    let mut held = Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    held.query_drop("BEGIN").await.unwrap();
    assert_eq!(held.query_first::<i64, _>("SELECT v FROM rt_acct WHERE id = 150 FOR UPDATE").await.unwrap(), Some(0));
    held.query_drop("UPDATE rt_acct SET v = 1 WHERE id = 150").await.unwrap();
    let to = info.servers.iter().find(|s| **s != primary).unwrap().clone();
    let (status, report) = reparent(&running, &to).await;
    assert_eq!(status, 200, "{report}");
    held.exec_drop("INSERT INTO rt_log (w, seq, seen) VALUES (?, ?, ?)", (150, 1, 0)).await.expect("the held transaction goes on");
    held.query_drop("COMMIT").await.expect("and commits on the new primary");
    let direct: Vec<(i64, i64)> = admin(&to)
        .await
        .query("SELECT a.v, (SELECT COUNT(*) FROM baton_test.rt_log WHERE w = 150) FROM baton_test.rt_acct a WHERE a.id = 150")
        .await
        .unwrap();
    assert_eq!(direct, vec![(1, 1)]);
    let before = acked.load(Ordering::Relaxed);
    wait_count(&acked, before + 200, Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    let (seen, failed) = join_writers(writers).await;
    let stats = replay_stats(&running).await;
    println!("planned reparent: {} acknowledged; failed {failed:?}; replay {stats}", acked.load(Ordering::Relaxed));
    assert!(failed.is_empty(), "client errors: {failed:?}");
    check_history(&to, &seen).await;
    assert!(stats["started"].as_u64().unwrap() >= 1, "no transaction was cut: {stats}");
    assert_eq!(stats["started"], stats["succeeded"], "{stats}");
    running.shutdown(Some(Duration::from_millis(200))).await;
}

/// Issue 13: the same 8 writers through a SIGKILL of the primary (semi-sync,
/// automatic failover): the only errors are COMMITs whose outcome could not be
/// decided (9105), each counted; no acknowledged transaction lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_cut_by_a_crash_finish_on_the_new_primary() {
    let _l = LOCK.lock().await;
    let (info, primary, running, _dir) = start(true).await;
    let port = running.mysql_addr.port();
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let writers = spawn_writers(port, &stop, &acked);
    wait_count(&acked, 200, Duration::from_secs(30)).await;
    signal(&info, &primary, "KILL");
    let new_primary = wait_term(&running, 2, Duration::from_secs(30)).await;
    let before = acked.load(Ordering::Relaxed);
    wait_count(&acked, before + 200, Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    let (seen, failed) = join_writers(writers).await;
    let stats = replay_stats(&running).await;
    println!("crash: {} acknowledged; failed {failed:?}; replay {stats}", acked.load(Ordering::Relaxed));
    assert!(failed.iter().all(|(_, (_, code))| *code == 9105), "errors other than an undecidable commit: {failed:?}");
    assert_eq!(stats["failed"]["commit_unknown"].as_u64(), Some(failed.len() as u64), "{stats}");
    check_history(&new_primary, &seen).await;
    running.shutdown(Some(Duration::from_millis(200))).await;
    restart(&info, &primary).await;
    heal(&info).await;
}

/// Issue 13: a transaction whose re-run reads otherwise gets 9101 and nothing of
/// it commits; one that reads the same goes on; RAND(), NOW(6) and UUID() read
/// otherwise (checksum mismatch, not pinned values); a transaction past
/// `max_bytes` is not replayed. The status and metrics count each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_that_reads_otherwise_fails_and_commits_nothing() {
    let _l = LOCK.lock().await;
    let (info, primary, running, _dir) = start(false).await;
    let port = running.mysql_addr.port();
    let conn = || async { Conn::new(opts(port, Some("baton_test"))).await.unwrap() };
    // Auto-increment ids: the old primary's counter is past ids it gave
    // transactions that never committed (`rolled`'s), the new primary's is not.
    let (mut rolled, mut pinned, mut taken) = (conn().await, conn().await, conn().await);
    rolled.query_drop("BEGIN").await.unwrap();
    rolled.query_drop("INSERT INTO rt_auto (x) VALUES (0)").await.unwrap();
    pinned.query_drop("BEGIN").await.unwrap();
    pinned.query_drop("INSERT INTO rt_auto (x) VALUES (1)").await.unwrap();
    let pinned_id = pinned.last_insert_id().unwrap();
    taken.query_drop("BEGIN").await.unwrap();
    taken.query_drop("INSERT INTO rt_auto (x) VALUES (2)").await.unwrap();
    let taken_id = taken.last_insert_id().unwrap();
    rolled.query_drop("ROLLBACK").await.unwrap();
    let (mut same, mut changed) = (conn().await, conn().await);
    let mut volatile = Vec::new();
    for f in ["RAND()", "NOW(6)", "UUID()"] {
        let mut c = conn().await;
        c.query_drop("BEGIN").await.unwrap();
        c.query_drop(format!("SELECT {f}")).await.unwrap();
        volatile.push((f, c));
    }
    let mut big = conn().await;
    big.query_drop("BEGIN").await.unwrap();
    big.query_drop(format!("SELECT '{}'", "x".repeat(5000))).await.unwrap();
    same.query_drop("BEGIN").await.unwrap();
    assert_eq!(same.query_first::<i64, _>("SELECT v FROM rt_acct WHERE id = 101 FOR UPDATE").await.unwrap(), Some(0));
    same.query_drop("UPDATE rt_acct SET v = v + 1 WHERE id = 101").await.unwrap();
    changed.query_drop("BEGIN").await.unwrap();
    assert_eq!(changed.query_first::<i64, _>("SELECT v FROM rt_acct WHERE id = 100").await.unwrap(), Some(0));

    let to = info.servers.iter().find(|s| **s != primary).unwrap().clone();
    let (status, report) = reparent(&running, &to).await;
    assert_eq!(status, 200, "{report}");
    // Another session changes the row between the cut and the replay, and takes an id.
    admin(&to).await.query_drop("UPDATE baton_test.rt_acct SET v = 5 WHERE id = 100").await.unwrap();
    admin(&to).await.query_drop(format!("INSERT INTO baton_test.rt_auto (id, x) VALUES ({taken_id}, 9)")).await.unwrap();

    let code = |r: Result<(), mysql_async::Error>| match r {
        Err(mysql_async::Error::Server(e)) => e.code,
        other => panic!("expected a server error, got {other:?}"),
    };
    assert_eq!(code(changed.query_drop("UPDATE rt_acct SET v = v + 1 WHERE id = 100").await), 9101);
    assert_eq!(changed.query_first::<i64, _>("SELECT v FROM rt_acct WHERE id = 100").await.unwrap(), Some(5));
    // The same reads: the transaction goes on there, its earlier UPDATE included.
    assert_eq!(same.query_first::<i64, _>("SELECT v FROM rt_acct WHERE id = 101").await.unwrap(), Some(1));
    same.query_drop("COMMIT").await.unwrap();
    let direct: Option<i64> = admin(&to).await.query_first("SELECT v FROM baton_test.rt_acct WHERE id = 101").await.unwrap();
    assert_eq!(direct, Some(1));
    for (f, mut c) in volatile {
        assert_eq!(code(c.query_drop("SELECT 1").await), 9101, "{f}");
    }
    assert_eq!(code(big.query_drop("SELECT 1").await), 9101);
    // The id the client saw is kept (SET insert_id), not the new primary's next;
    // an id taken there meanwhile fails the replay.
    assert_eq!(pinned.query_first::<u64, _>("SELECT LAST_INSERT_ID()").await.unwrap(), Some(pinned_id));
    pinned.query_drop("COMMIT").await.unwrap();
    let x: Option<i64> = admin(&to).await.query_first(format!("SELECT x FROM baton_test.rt_auto WHERE id = {pinned_id}")).await.unwrap();
    assert_eq!(x, Some(1));
    assert_eq!(code(taken.query_drop("SELECT 1").await), 9101);
    let stats = replay_stats(&running).await;
    println!("replay {stats}");
    assert_eq!(stats["succeeded"], 2, "{stats}");
    assert_eq!(stats["failed"]["checksum"], 5, "{stats}");
    assert_eq!(stats["failed"]["size"], 1, "{stats}");
    let (_, metrics) = http(running.admin_addr, "GET", "/metrics", None, "").await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(metrics.contains("baton_transaction_replays_failed_total{cluster=\"main\",reason=\"checksum\"} 5"), "{metrics}");
    assert!(metrics.contains("baton_transaction_replays_succeeded_total{cluster=\"main\"} 2"), "{metrics}");
    running.shutdown(Some(Duration::from_millis(200))).await;
}

/// Issue 13: a COMMIT sent to a primary that then hangs (SIGSTOP) has no
/// answer. After the failover the new primary's history has nothing of the old
/// primary past what was acknowledged before the COMMIT, so it did not commit
/// there: the transaction is re-run and committed on the new primary, and the
/// client gets OK. Exactly one copy in the new history.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unanswered_commit_is_replayed_when_the_new_primary_proves_it_absent() {
    let _l = LOCK.lock().await;
    let (info, primary, running, _dir) = start(true).await;
    let port = running.mysql_addr.port();
    let mut c = Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO rt_log (w, seq, seen) VALUES (50, 1, 0)").await.unwrap();
    signal(&info, &primary, "STOP");
    let r = c.query_drop("COMMIT").await;
    let new_primary = wait_term(&running, 2, Duration::from_secs(30)).await;
    signal(&info, &primary, "KILL");
    signal(&info, &primary, "CONT");
    r.expect("the COMMIT was replayed on the new primary");
    let n: Option<i64> = admin(&new_primary).await.query_first("SELECT COUNT(*) FROM baton_test.rt_log WHERE w = 50").await.unwrap();
    assert_eq!(n, Some(1));
    let stats = replay_stats(&running).await;
    assert_eq!((stats["started"].as_u64(), stats["succeeded"].as_u64()), (Some(1), Some(1)), "{stats}");
    running.shutdown(Some(Duration::from_millis(200))).await;
    restart(&info, &primary).await;
    heal(&info).await;
}
