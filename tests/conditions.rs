//! Each leadership condition made false on purpose (an operator or external tool
//! doing the switchover by hand, one step left out): the buffer does not drain,
//! the status names the false condition, held requests fail at the window with
//! the documented error; once the step is done, the buffer drains to the new
//! primary. And the reactive path: a primary that turns read-only under load
//! (no reparent announced) makes baton buffer until the topology names a new one.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_control::gate::Phase;
use baton_control::ClusterRecord;
use common::reparent::*;
use common::*;
use mysql_async::prelude::*;

const CONFIG: &str =
    "[buffer]\nwindow_ms = 1500\nmax_failover_duration_ms = 60000\nmin_time_between_failovers_ms = 0\n[reparent]\ncheck_interval_ms = 20\n";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Broken {
    C1,
    C2,
    C3,
    C4,
    C5,
}

async fn promote(addr: &str) {
    admin(addr).await.query_drop("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=OFF").await.unwrap();
}

async fn replicate(addr: &str, from: &str, reset_pos: bool) {
    let (_, port) = from.rsplit_once(':').unwrap();
    let reset = if reset_pos { "SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos;" } else { "" };
    admin(addr)
        .await
        .query_drop(format!(
            "STOP SLAVE; {reset} CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, MASTER_USER='repl', \
             MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE"
        ))
        .await
        .unwrap();
}

async fn condition(running: &baton::Running, id: &str) -> (bool, String) {
    let (_, body) = http(running.admin_addr, "GET", "/api/v1/clusters/main", None, "").await;
    let c = body["conditions"]["conditions"].as_array().into_iter().flatten().find(|c| c["id"] == id).cloned();
    match c {
        Some(c) => (c["holds"].as_bool().unwrap(), c["reason"].as_str().unwrap().to_string()),
        None => (false, "not evaluated yet".into()),
    }
}

/// Switch from `p` to `c` by hand with the step behind `broken` left out, check
/// that the gate holds and says why, then do the step and check it drains.
async fn scenario(running: &baton::Running, info: &baton_testkit::ClusterInfo, p: &str, c: &str, broken: Broken) {
    let handle = running.proxy.clusters["main"].clone();
    let port = running.mysql_addr.port();
    let mut client = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    client.query_drop("CREATE TABLE IF NOT EXISTS cond_t (id INT AUTO_INCREMENT PRIMARY KEY, tag VARCHAR(10))").await.unwrap();
    if broken == Broken::C4 {
        // The candidate stops replicating, then baton acknowledges a write it lacks.
        admin(c).await.query_drop("STOP SLAVE").await.unwrap();
        client.query_drop("INSERT INTO cond_t (tag) VALUES ('c4')").await.unwrap();
    }
    let record = running.store.current().cluster("main").unwrap().clone();
    assert_eq!(record.primary, p);
    let ep = handle.gate.begin(record.term, p, "manual switchover", true).unwrap();

    if broken != Broken::C1 {
        admin(p).await.query_drop("SET GLOBAL read_only=ON").await.unwrap();
    }
    if broken != Broken::C3 {
        promote(c).await;
    }
    let new_record = ClusterRecord { primary: c.to_string(), term: record.term + 1, servers: record.servers.clone() };
    if broken != Broken::C2 {
        running.store.put_cluster("main", new_record.clone()).await.unwrap();
    }

    // A request is held, then fails at the window with the documented error.
    let started = Instant::now();
    let e = client.query_drop("INSERT INTO cond_t (tag) VALUES ('held')").await.unwrap_err();
    match &e {
        mysql_async::Error::Server(s) => assert_eq!(s.code, 9102, "{broken:?}: {e}"),
        other => panic!("{broken:?}: {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(1400), "held for the window");
    assert_eq!(handle.gate.status().phase, Phase::Buffering, "{broken:?}: the buffer must not drain");
    let id = format!("{broken:?}");
    let (holds, reason) = condition(running, &id).await;
    assert!(!holds, "{id} should be false");
    println!("{id} false: {reason}");
    // With no new primary named (C2), C3-C5 are about the old one and cannot hold.
    let others: &[&str] = if broken == Broken::C2 { &["C1"] } else { &["C1", "C2", "C3", "C4", "C5"] };
    for other in others.iter().filter(|o| **o != id) {
        let (holds, reason) = condition(running, other).await;
        assert!(holds, "{broken:?}: {other} should hold: {reason}");
    }

    // Do the missing step: the gate drains.
    match broken {
        Broken::C1 => admin(p).await.query_drop("SET GLOBAL read_only=ON").await.unwrap(),
        Broken::C2 => running.store.put_cluster("main", new_record).await.unwrap(),
        Broken::C3 => promote(c).await,
        Broken::C4 => {
            replicate(c, p, false).await;
            let pos = scalar(&mut admin(p).await, "SELECT @@gtid_binlog_pos").await;
            assert_eq!(scalar(&mut admin(c).await, &format!("SELECT MASTER_GTID_WAIT('{pos}', 30)")).await, "0");
            promote(c).await;
        }
        Broken::C5 => {}
    }
    // Repoint the old primary and the third server at the new primary.
    replicate(p, c, true).await;
    for s in info.servers.iter().filter(|s| **s != p && **s != c) {
        replicate(s, c, false).await;
    }
    let mut rx = handle.gate.watch();
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| s.episode != ep || s.phase == Phase::Idle))
        .await
        .unwrap_or_else(|_| panic!("{broken:?}: did not drain after the fix"))
        .unwrap();
    client.query_drop("INSERT INTO cond_t (tag) VALUES ('after')").await.unwrap();
    let at: Option<i64> = client.query_first("SELECT @@port").await.unwrap();
    assert_eq!(at.unwrap().to_string(), c.rsplit_once(':').unwrap().1, "the session moved to the new primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_false_condition_holds_the_buffer_and_is_named() {
    let _l = LOCK.lock().await;
    let info = info();
    let mut p = heal(&info).await;
    let mut c = info.servers.iter().find(|s| **s != p).unwrap().clone();
    {
        let (running, _dir) = start_baton(&info, &p, CONFIG, "none").await;
        for broken in [Broken::C1, Broken::C2, Broken::C3, Broken::C4] {
            scenario(&running, &info, &p, &c, broken).await;
            std::mem::swap(&mut p, &mut c);
        }
        running.shutdown(Some(Duration::from_millis(100))).await;
    }
    let (running, _dir) = start_baton(&info, &p, CONFIG, "semi_sync").await;
    scenario(&running, &info, &p, &c, Broken::C5).await;
    running.shutdown(Some(Duration::from_millis(100))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_primary_without_announcement_is_buffered_until_a_new_one_is_named() {
    let _l = LOCK.lock().await;
    let info = info();
    let p = heal(&info).await;
    let c = info.servers.iter().find(|s| **s != p).unwrap().clone();
    let config = CONFIG.replace("window_ms = 1500", "window_ms = 10000");
    let (running, dir) = start_baton(&info, &p, &config, "none").await;
    let port = running.mysql_addr.port();
    let mut setup = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    setup
        .query_drop("DROP TABLE IF EXISTS rp_rows; CREATE TABLE rp_rows (id BIGINT AUTO_INCREMENT PRIMARY KEY, writer INT NOT NULL, seq INT NOT NULL, kind VARCHAR(8))")
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = [Kind::Autocommit, Kind::Prepared, Kind::Autocommit]
        .iter()
        .enumerate()
        .map(|(i, k)| tokio::spawn(writer(port, i as i64 + 1, *k, stop.clone(), acked.clone())))
        .collect();
    wait_count(&acked, 100, Duration::from_secs(30)).await;

    // An external tool revokes the primary: writes now meet ERR 1290 and are held.
    admin(&p).await.query_drop("SET GLOBAL read_only=ON").await.unwrap();
    let handle = running.proxy.clusters["main"].clone();
    handle.gate.watch().wait_for(|s| s.phase == Phase::Buffering).await.unwrap();
    assert!(handle.gate.status().reason.contains("1290"), "{}", handle.gate.status().reason);
    // ... then promotes the candidate and names it in the topology file itself.
    let pos = scalar(&mut admin(&p).await, "SELECT @@gtid_binlog_pos").await;
    assert_eq!(scalar(&mut admin(&c).await, &format!("SELECT MASTER_GTID_WAIT('{pos}', 30)")).await, "0");
    promote(&c).await;
    let path = dir.path().join("topology.json");
    let mut topo: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let term = topo["clusters"]["main"]["term"].as_u64().unwrap();
    topo["clusters"]["main"]["primary"] = c.clone().into();
    topo["clusters"]["main"]["term"] = (term + 1).into();
    let tmp = path.with_extension("ext");
    std::fs::write(&tmp, serde_json::to_vec(&topo).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();

    let before = acked.load(Ordering::Relaxed);
    wait_count(&acked, before + 100, Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    let mut all = Vec::new();
    for w in writers {
        let o = w.await.unwrap();
        errors.extend(o.errors);
        all.extend(o.acked);
    }
    assert!(errors.is_empty(), "{errors:#?}");
    let n: Option<i64> = admin(&c).await.query_first("SELECT COUNT(*) FROM baton_test.rp_rows").await.unwrap();
    assert_eq!(n, Some(all.len() as i64), "every acknowledged write is on the new primary, once");
    replicate(&p, &c, true).await;
    running.shutdown(Some(Duration::from_millis(100))).await;
}
