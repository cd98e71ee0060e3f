//! Session state across a planned reparent (item 4, 9 and 1 of the
//! session-fidelity issue): what can be carried is carried exactly
//! (LAST_INSERT_ID, collations, NULL character_set_results, prepared statements
//! including "the one prepared last"); a session holding what cannot (named
//! locks, temporary tables, open cursors, user variables) ends with ERROR 9106
//! and its connection closed; KILL with a handshake id reaches the moved
//! session's new thread. And item 7: a CALL whose later statement meets the
//! read-only ERR is never sent again.

mod common;

use std::time::{Duration, Instant};

use baton_proxy::proto::cmd;
use baton_proxy::relay::Expect;
use common::raw::Raw;
use common::reparent::*;
use common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;

fn code(e: &mysql_async::Error) -> Option<(u16, String)> {
    match e {
        mysql_async::Error::Server(s) => Some((s.code, s.state.clone())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_state_across_a_reparent() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start_baton(&info, &primary, SESSION_FAST, "none").await;
    let port = running.mysql_addr.port();
    let db = Some("baton_test");
    let mut setup = Conn::new(opts(port, db)).await.unwrap();
    setup.query_drop("DROP TABLE IF EXISTS mv_auto; CREATE TABLE mv_auto (id INT AUTO_INCREMENT PRIMARY KEY, v INT)").await.unwrap();

    // Carried.
    let mut lii = Conn::new(opts(port, db)).await.unwrap();
    lii.query_drop("INSERT INTO mv_auto (v) VALUES (1)").await.unwrap();
    lii.query_drop("INSERT INTO mv_auto (v) VALUES (2)").await.unwrap();
    let mut coll = Conn::new(opts(port, db)).await.unwrap();
    coll.query_drop("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci").await.unwrap();
    let mut null = Conn::new(opts(port, db)).await.unwrap();
    null.query_drop("SET character_set_results = NULL").await.unwrap();
    let mut ps = Raw::login(port, APP_USER, APP_PASSWORD, db).await;
    let _one = ps.prepare("SELECT 'one'").await;
    let _two = ps.prepare("SELECT 'two'").await;
    let mut killable = Conn::new(opts(port, db)).await.unwrap();
    let handshake_id = killable.id();

    // Not carried: each ends with 9106.
    let mut lock = Conn::new(opts(port, db)).await.unwrap();
    let got: u32 = lock.query_first("SELECT GET_LOCK('mv_k', 5)").await.unwrap().unwrap();
    assert_eq!(got, 1);
    let mut temp = Conn::new(opts(port, db)).await.unwrap();
    temp.query_drop("CREATE TEMPORARY TABLE mv_temp (a INT)").await.unwrap();
    let mut uvar = Conn::new(opts(port, db)).await.unwrap();
    uvar.query_drop("SET @mv_x = 5").await.unwrap();
    let mut cursor = Raw::login(port, APP_USER, APP_PASSWORD, db).await;
    let cur = cursor.prepare("SELECT seq FROM seq_1_to_10").await;
    let r = cursor.execute(cur, 1).await;
    assert_eq!(r.err(), None);
    let mut fetch = vec![cmd::STMT_FETCH];
    fetch.extend_from_slice(&cur.to_le_bytes());
    fetch.extend_from_slice(&4u32.to_le_bytes());
    let r = cursor.command(&fetch, Expect::Rows).await;
    assert_eq!(r.packets.len(), 5, "4 rows and the terminator");

    let to = info.servers.iter().find(|s| **s != primary).unwrap().clone();
    let (status, report) = reparent(&running, &to).await;
    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["outcome"], "ok", "{report:#}");

    let v: u64 = lii.query_first("SELECT LAST_INSERT_ID()").await.unwrap().unwrap();
    assert_eq!(v, 2, "LAST_INSERT_ID after the move");
    let c: String = coll.query_first("SELECT @@collation_connection").await.unwrap().unwrap();
    assert_eq!(c, "utf8mb4_unicode_ci");
    let n: Option<String> = null.query_first("SELECT @@character_set_results").await.unwrap().unwrap();
    assert_eq!(n, None, "character_set_results stays NULL");
    let r = ps.execute(u32::MAX, 0).await;
    let bytes: Vec<u8> = r.packets.iter().flat_map(|(_, p)| p.clone()).collect();
    let has = |w: &[u8]| bytes.windows(w.len()).any(|x| x == w);
    assert!(has(b"two") && !has(b"one"), "0xFFFFFFFF runs the statement prepared last: {:?}", r.packets);

    for (name, conn) in [("named lock", &mut lock), ("temporary table", &mut temp), ("user variable", &mut uvar)] {
        let e = conn.query_drop("SELECT 1").await.expect_err(name);
        assert_eq!(code(&e), Some((9106, "08S01".into())), "{name}: {e}");
        assert!(conn.query_drop("SELECT 1").await.is_err(), "{name}: connection closed");
    }
    let r = cursor.command(&fetch, Expect::Rows).await;
    assert_eq!(r.err(), Some((9106, "08S01".into())), "open cursor");
    assert!(cursor.closed_within(Duration::from_secs(5)).await);

    // KILL QUERY with the handshake id reaches the moved session's new thread.
    let one: u32 = killable.query_first("SELECT 1").await.unwrap().unwrap();
    assert_eq!(one, 1);
    let killer = opts(port, db);
    let kill = tokio::spawn(async move {
        let mut k = Conn::new(killer).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Through baton, the processlist is the new primary's; find the sleeper.
            let running: Option<u64> =
                k.query_first("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(20)%'").await.unwrap();
            if running.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "the query never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        k.query_drop(format!("KILL QUERY {handshake_id}")).await.unwrap();
    });
    let started = Instant::now();
    let r: Result<Option<u32>, _> = killable.query_first("SELECT SLEEP(20)").await;
    kill.await.unwrap();
    assert_eq!(r.err().as_ref().and_then(code).map(|c| c.0), Some(1317), "interrupted");
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// Item 7: `CALL p()` (INSERT; DO SLEEP; INSERT) whose second INSERT meets
/// read_only: the first INSERT committed, so the CALL gets the server's 1290 and
/// is not sent again (one row, not two), as directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_refused_midway_is_not_sent_again() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start_baton(&info, &primary, SESSION_FAST, "none").await;
    let port = running.mysql_addr.port();
    let primary_port: u16 = primary.rsplit_once(':').unwrap().1.parse().unwrap();
    let mut setup = Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    setup
        .query_drop(
            "DROP TABLE IF EXISTS mv_call; CREATE TABLE mv_call (id INT AUTO_INCREMENT PRIMARY KEY, via VARCHAR(8));
             DROP PROCEDURE IF EXISTS mv_p;
             CREATE PROCEDURE mv_p(via VARCHAR(8)) BEGIN INSERT INTO mv_call (via) VALUES (via); DO SLEEP(1); INSERT INTO mv_call (via) VALUES (via); END",
        )
        .await
        .unwrap();
    let mut admin_conn = admin(&primary).await;
    let mut seen = Vec::new();
    for (via, p) in [("baton", port), ("direct", primary_port)] {
        let mut c = Conn::new(opts(p, Some("baton_test"))).await.unwrap();
        let call = tokio::spawn(async move {
            let r = c.query_drop(format!("CALL mv_p('{via}')")).await;
            r.err().as_ref().and_then(code).map(|c| c.0)
        });
        // Once the first INSERT is in, revoke.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n: u64 = admin_conn.query_first(format!("SELECT COUNT(*) FROM baton_test.mv_call WHERE via = '{via}'")).await.unwrap().unwrap();
            if n > 0 {
                break;
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        admin_conn.query_drop("SET GLOBAL read_only = ON").await.unwrap();
        let err = call.await.unwrap();
        admin_conn.query_drop("SET GLOBAL read_only = OFF").await.unwrap();
        let n: u64 = admin_conn.query_first(format!("SELECT COUNT(*) FROM baton_test.mv_call WHERE via = '{via}'")).await.unwrap().unwrap();
        seen.push((err, n));
    }
    assert_eq!(seen[0], (Some(1290), 1), "through baton: the server's error, one row");
    assert_eq!(seen[0], seen[1], "baton vs direct");
}
