//! Issue 11, item 3: a server with a transaction the primary does not have (an
//! errant one) is reported, not rejoined, and left out of the election: the
//! failover after the primary's crash goes ahead among the healthy replicas.

mod common;

use std::time::Duration;

use common::reparent::*;
use common::*;
use mysql_async::prelude::*;

const AUTO: &str = "[buffer]\nwindow_ms = 30000\nmax_failover_duration_ms = 60000\nmin_time_between_failovers_ms = 0\ndrain_concurrency = 4\n\
                    [reparent]\ncheck_interval_ms = 20\ncatchup_timeout_ms = 5000\n\
                    [health]\ninterval_ms = 300\ntimeout_ms = 700\nfailure_threshold = 3\n";

/// baton in front of the reparent cluster, durability none, `auto_failover` as given.
async fn start(info: &baton_testkit::ClusterInfo, primary: &str, auto_failover: bool) -> (baton::Running, tempfile::TempDir) {
    start_baton_with(info, primary, AUTO, "none", &format!("auto_failover = {auto_failover}\n")).await
}

/// Wait until the health monitor has checked the servers once.
async fn until_health_checked(running: &baton::Running) {
    let seen = std::time::Instant::now() + Duration::from_secs(10);
    while status(running).await["health"]["servers"].as_array().is_none_or(|s| s.is_empty()) {
        assert!(std::time::Instant::now() < seen, "no health check");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status(running: &baton::Running) -> serde_json::Value {
    let (code, body) = http(running.admin_addr, "GET", "/api/v1/clusters/main", None, "").await;
    assert_eq!(code, 200);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_errant_replica_is_reported_and_left_out_of_the_failover() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start(&info, &primary, true).await;
    let port = running.mysql_addr.port();
    let mut c = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    c.query_drop("DROP TABLE IF EXISTS errant_rows; CREATE TABLE errant_rows (id INT PRIMARY KEY, v VARCHAR(20))").await.unwrap();
    c.query_drop("INSERT INTO errant_rows VALUES (1, 'acked')").await.unwrap();
    let replicas: Vec<String> = info.servers.iter().filter(|s| **s != primary).cloned().collect();
    let (bad, good) = (replicas[0].clone(), replicas[1].clone());
    // Both replicas have the acknowledged row.
    for r in &replicas {
        let mut a = admin(r).await;
        let n = wait_rows(&mut a, 1).await;
        assert_eq!(n, 1, "{r}");
    }
    // An operator's mistake: a write made on a replica (binlogged, under its own server id).
    let mut b = admin(&bad).await;
    b.query_drop("SET GLOBAL read_only=OFF").await.unwrap();
    b.query_drop("INSERT INTO baton_test.errant_rows VALUES (2, 'errant')").await.unwrap();
    b.query_drop("SET GLOBAL read_only=ON").await.unwrap();
    drop(b);

    // The health monitor reports it.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = status(&running).await;
        let errant = s["health"]["errant"].as_array().cloned().unwrap_or_default();
        if errant.iter().any(|e| e.as_str().is_some_and(|e| e.starts_with(bad.as_str()))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{bad} never reported errant: {:#}", s["health"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // `baton ctl status` names it.
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_baton")).args(["ctl", "--admin", &running.admin_addr.to_string(), "status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ERRANT") && text.contains(bad.as_str()), "{text}");

    // The primary crashes; the failover goes ahead with the healthy replica.
    signal(&info, &primary, "KILL");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let topo = running.store.current();
        if topo.cluster("main").unwrap().primary != primary {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no failover: {:#}", status(&running).await["last_reparent"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running.store.current().cluster("main").unwrap().primary, good, "the errant server was elected");
    let report = status(&running).await["last_reparent"].clone();
    let exclude = report["steps"].as_array().unwrap().iter().find(|s| s["step"] == "exclude").cloned();
    assert!(exclude.is_some_and(|s| s["detail"].as_str().unwrap().contains(bad.as_str())), "{report:#}");
    // Writes resume on the new primary, which has the acknowledged row and not the errant one.
    c.query_drop("INSERT INTO errant_rows VALUES (3, 'after')").await.unwrap();
    let rows: Vec<(i32, String)> = c.query("SELECT id, v FROM errant_rows ORDER BY id").await.unwrap();
    assert_eq!(rows, vec![(1, "acked".to_string()), (3, "after".to_string())]);
    running.shutdown(Some(Duration::from_millis(200))).await;
    restart(&info, &primary).await;
    // heal() (next test) resets the errant server to follow the primary.
    heal(&info).await;
}

async fn wait_rows(c: &mut mysql_async::Conn, want: i64) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM baton_test.errant_rows").await.unwrap_or(Some(0));
        if n == Some(want) || std::time::Instant::now() > deadline {
            return n.unwrap_or(0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Item 7: no failover (auto_failover off); the primary goes away and comes back
/// read-only with every acknowledged write: baton re-establishes it at a new
/// term and the held writes run, instead of holding them to the max duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_that_comes_back_is_re_established_when_nothing_else_was_promoted() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start(&info, &primary, false).await;
    let port = running.mysql_addr.port();
    let mut c = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    c.query_drop("DROP TABLE IF EXISTS back_rows; CREATE TABLE back_rows (id INT PRIMARY KEY)").await.unwrap();
    c.query_drop("INSERT INTO back_rows VALUES (1)").await.unwrap();
    let term = running.store.current().cluster("main").unwrap().term;
    // Stopped without a reparent (an operator's restart; a crash is the same case
    // when recovery keeps every acknowledged write, which with init_rpl_role=SLAVE
    // it may not: then the replicas are ahead and a failover is the way).
    // (After the health monitor has seen it serve: a restart is told by its uptime.)
    until_health_checked(&running).await;
    let _ = admin(&primary).await.query_drop("SHUTDOWN").await;

    let gate = running.proxy.clusters["main"].gate.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while gate.status().phase != baton_control::gate::Phase::Buffering {
        assert!(std::time::Instant::now() < deadline, "no buffering: {:?}", gate.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A write while it is down is held...
    let held = tokio::spawn(async move {
        let r = c.query_drop("INSERT INTO back_rows VALUES (2)").await;
        (r, c)
    });
    while gate.status().queued == 0 {
        assert!(std::time::Instant::now() < deadline, "the write was not held: {:?}", gate.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // (Down long enough for its uptime, in whole seconds, to tell the restart.)
    while status(&running).await["health"]["primary_failures"].as_u64().unwrap_or(0) < 5 {
        assert!(std::time::Instant::now() < deadline, "the health monitor never saw it down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... the primary restarts read-only (as its my.cnf says), and the write runs on it.
    restart(&info, &primary).await;
    let Ok(joined) = tokio::time::timeout(Duration::from_secs(25), held).await else {
        panic!("the held write did not run: {:#}", status(&running).await);
    };
    let (r, mut c) = joined.unwrap();
    r.expect("the held write succeeded");
    let rec = running.store.current().cluster("main").unwrap().clone();
    assert_eq!((rec.primary.as_str(), rec.term), (primary.as_str(), term + 1));
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM back_rows").await.unwrap();
    assert_eq!(n, Some(2));
    let action = status(&running).await["health"]["last_action"].as_str().unwrap_or("").to_string();
    assert!(action.contains("re-established"), "{action}");
    running.shutdown(Some(Duration::from_millis(200))).await;
    heal(&info).await;
}

/// Issue 11, item 7: a named primary that answers but cannot be re-established
/// (here read-only without a restart: another tool's revocation), with nothing
/// else promoted, is no primary that will come. Requests fail at once with 9109
/// naming why (not after the 60 s max failover duration); the status says why;
/// once it serves again, requests pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_fail_fast_while_no_primary_can_come() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start(&info, &primary, false).await;
    let port = running.mysql_addr.port();
    let mut c = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    c.query_drop("DROP TABLE IF EXISTS ff_rows; CREATE TABLE ff_rows (id INT PRIMARY KEY)").await.unwrap();
    c.query_drop("INSERT INTO ff_rows VALUES (1)").await.unwrap();
    until_health_checked(&running).await;
    admin(&primary).await.query_drop("SET GLOBAL read_only=ON").await.unwrap();
    let started = std::time::Instant::now();
    let r = c.query_drop("INSERT INTO ff_rows VALUES (2)").await;
    let code = match &r {
        Err(mysql_async::Error::Server(e)) => (e.code, e.message.clone()),
        other => panic!("the write answered {other:?}"),
    };
    assert_eq!(code.0, 9109, "{code:?}");
    assert!(code.1.contains("did not restart since it last served writes"), "{code:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "held {:?} before failing", started.elapsed());
    let why = status(&running).await["buffer"]["no_primary"].as_str().unwrap_or("").to_string();
    assert!(why.contains("baton ctl failover main"), "{why}");
    // A new session fails at once too (its login waits at the gate like a write).
    let t = std::time::Instant::now();
    let r = mysql_async::Conn::new(opts(port, Some("baton_test"))).await;
    assert!(matches!(&r, Err(mysql_async::Error::Server(e)) if e.code == 9109), "{:?}", r.map(|_| ()));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let r = c.query_drop("INSERT INTO ff_rows VALUES (3)").await;
    assert!(matches!(&r, Err(mysql_async::Error::Server(e)) if e.code == 9109), "{r:?}");
    // It serves again: requests pass.
    admin(&primary).await.query_drop("SET GLOBAL read_only=OFF").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match c.query_drop("INSERT INTO ff_rows VALUES (4)").await {
            Ok(()) => break,
            Err(mysql_async::Error::Server(e)) if e.code == 9109 => {}
            Err(e) => panic!("{e}"),
        }
        assert!(std::time::Instant::now() < deadline, "requests still fail: {:#}", status(&running).await["buffer"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut d = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    let ids: Vec<i64> = d.query("SELECT id FROM ff_rows ORDER BY id").await.unwrap();
    assert_eq!(ids, vec![1, 4], "a write that got 9109 ran");
    assert!(status(&running).await["buffer"]["no_primary"].is_null());
    running.shutdown(Some(Duration::from_millis(200))).await;
}

/// Make `to` the primary by hand (no baton): `from` read-only, `to` caught up,
/// promoted, every other server following it (`from` from its own binlog
/// position, as baton's demotion does: its slave position is stale).
async fn move_primary(info: &baton_testkit::ClusterInfo, from: &str, to: &str) {
    let pos = scalar(&mut admin(from).await, "SELECT @@gtid_binlog_pos").await;
    admin(from).await.query_drop("SET GLOBAL read_only=ON; SET GLOBAL gtid_slave_pos=@@gtid_binlog_pos").await.unwrap();
    let mut t = admin(to).await;
    assert_eq!(scalar(&mut t, &format!("SELECT MASTER_GTID_WAIT('{pos}', 30)")).await, "0", "{to} did not catch up");
    t.query_drop("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=OFF").await.unwrap();
    let (_, port) = to.rsplit_once(':').unwrap();
    for s in info.servers.iter().filter(|s| *s != to) {
        admin(s)
            .await
            .query_drop(format!(
                "STOP SLAVE; CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, MASTER_USER='repl', MASTER_PASSWORD='repl', \
                 MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE"
            ))
            .await
            .unwrap();
    }
}

/// CI found it: a server's own old stream (from when it was primary) that a
/// rebuilt primary's binlog does not keep was taken as errant. The server was
/// isolated (no semi-sync acknowledger left) and writes stalled. A rebuild as the
/// README's repair does it (`RESET MASTER`, `gtid_slave_pos` seeded with the
/// source's `@@gtid_binlog_pos`, the last GTID per domain) keeps no stream of
/// servers that wrote before that GTID.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_servers_own_old_stream_that_a_rebuilt_primary_lacks_is_not_errant() {
    let _l = LOCK.lock().await;
    let info = info();
    let a = heal(&info).await;
    let others: Vec<String> = info.servers.iter().filter(|s| **s != a).cloned().collect();
    let (b, c) = (others[0].clone(), others[1].clone());
    let write = |addr: String, v: i32| async move {
        let mut x = admin(&addr).await;
        x.query_drop("CREATE TABLE IF NOT EXISTS baton_test.stream_rows (id INT PRIMARY KEY)").await.unwrap();
        x.query_drop(format!("INSERT INTO baton_test.stream_rows VALUES ({v})")).await.unwrap();
        scalar(&mut x, "SELECT @@last_gtid").await
    };
    admin(&a).await.query_drop("DROP TABLE IF EXISTS baton_test.stream_rows").await.unwrap();
    // A writes under its own server id, then B is primary and writes.
    write(a.clone(), 1).await;
    move_primary(&info, &a, &b).await;
    write(b.clone(), 2).await;
    // C is rebuilt from B: its binlog starts over, seeded at B's last GTID.
    let mut cc = admin(&c).await;
    let pos = scalar(&mut admin(&b).await, "SELECT @@gtid_binlog_pos").await;
    assert_eq!(scalar(&mut cc, &format!("SELECT MASTER_GTID_WAIT('{pos}', 30)")).await, "0");
    cc.query_drop(format!("STOP SLAVE; RESET MASTER; SET GLOBAL gtid_slave_pos='{pos}'; START SLAVE")).await.unwrap();
    // C becomes primary: it has no stream of A's server id.
    move_primary(&info, &b, &c).await;
    let last = write(c.clone(), 3).await;
    let c_state = scalar(&mut cc, "SELECT @@gtid_binlog_state").await;
    let a_id = scalar(&mut admin(&a).await, "SELECT @@server_id").await;
    assert!(!c_state.split(',').any(|g| g.split('-').nth(1) == Some(a_id.as_str())), "C keeps A's stream: {c_state}");

    let (running, _dir) = start(&info, &c, false).await;
    // A check that saw A with C's write: its errant list is the answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let health = loop {
        let s = status(&running).await;
        let seen = s["health"]["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["addr"] == a.as_str() && x["gtid_binlog_state"].as_str().is_some_and(|st| st.split(',').any(|g| g.trim() == last)));
        if seen {
            break s["health"].clone();
        }
        assert!(std::time::Instant::now() < deadline, "A never seen with {last}: {:#}", s["health"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health["errant"], serde_json::json!([]), "{health:#}");
    // The same checks do report a write made on a replica (B) now.
    let mut bb = admin(&b).await;
    bb.query_drop("SET GLOBAL read_only=OFF; INSERT INTO baton_test.stream_rows VALUES (4); SET GLOBAL read_only=ON").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = status(&running).await;
        if s["health"]["errant"].as_array().into_iter().flatten().any(|e| e.as_str().is_some_and(|e| e.starts_with(b.as_str()))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{b}'s write never reported: {:#}", s["health"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown(Some(Duration::from_millis(200))).await;
    // Repair B (discard its write), as the README says: heal() alone would not
    // see it (B has all of C's), and C's next write would stop B (error 1950).
    let cpos = scalar(&mut cc, "SELECT @@gtid_binlog_pos").await;
    bb.query_drop(format!(
        "STOP SLAVE; SET sql_log_bin=0; DELETE FROM baton_test.stream_rows WHERE id = 4; SET sql_log_bin=1; \
         RESET MASTER; SET GLOBAL gtid_slave_pos='{cpos}'; START SLAVE"
    ))
    .await
    .unwrap();
    heal(&info).await;
}
