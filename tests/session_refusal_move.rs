//! Read-only refusals midway through statements the lexer once misread
//! (version-gated comments, long SET STATEMENT prefixes) on the reparent
//! cluster: the server's 1290 relayed once, nothing run twice. First written by
//! an adversarial review; kept as regression tests.
mod common;

use std::time::{Duration, Instant};

use common::reparent::*;
use common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;

fn code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review2_refused_midway_misread() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start_baton(&info, &primary, SESSION_FAST, "none").await;
    let port = running.mysql_addr.port();
    let primary_port: u16 = primary.rsplit_once(':').unwrap().1.parse().unwrap();
    let mut setup = Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    setup
        .query_drop(
            "DROP TABLE IF EXISTS r2_call; CREATE TABLE r2_call (id INT AUTO_INCREMENT PRIMARY KEY, via VARCHAR(40));
             DROP PROCEDURE IF EXISTS r2_p;
             CREATE PROCEDURE r2_p(via VARCHAR(40)) BEGIN INSERT INTO r2_call (via) VALUES (via); DO SLEEP(1); INSERT INTO r2_call (via) VALUES (via); END",
        )
        .await
        .unwrap();
    let mut admin_conn = admin(&primary).await;
    let mut bad = Vec::new();
    let cases: &[(&str, &str)] = &[
        ("version-comment", "/*M!999999 SELECT */ CALL r2_p('{via}')"),
        (
            "setstmt-24",
            "SET STATEMENT max_statement_time=+0, lock_wait_timeout=+5, sql_select_limit=1, max_join_size=1000000, long_query_time=1 FOR CALL r2_p('{via}')",
        ),
    ];
    for (name, sql) in cases {
        let mut seen = Vec::new();
        for (target, p) in [("baton", port), ("direct", primary_port)] {
            let via = format!("{name}-{target}");
            let mut c = Conn::new(opts(p, Some("baton_test"))).await.unwrap();
            let q = sql.replace("{via}", &via);
            let call = tokio::spawn(async move {
                let r = c.query_drop(q).await;
                r.err().as_ref().and_then(code)
            });
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let n: u64 = admin_conn.query_first(format!("SELECT COUNT(*) FROM baton_test.r2_call WHERE via = '{via}'")).await.unwrap().unwrap();
                if n > 0 {
                    break;
                }
                assert!(Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            admin_conn.query_drop("SET GLOBAL read_only = ON").await.unwrap();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            admin_conn.query_drop("SET GLOBAL read_only = OFF").await.unwrap();
            let err = tokio::time::timeout(Duration::from_secs(30), call).await.unwrap().unwrap();
            let n: u64 = admin_conn.query_first(format!("SELECT COUNT(*) FROM baton_test.r2_call WHERE via = '{via}'")).await.unwrap().unwrap();
            seen.push((err, n));
        }
        println!("{name}: baton {:?} direct {:?}", seen[0], seen[1]);
        if seen[0] != seen[1] {
            bad.push(format!("{name}: baton (error, rows) {:?} vs direct {:?}", seen[0], seen[1]));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
