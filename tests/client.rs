//! mysql_async through baton: prepared statements round-trip every type,
//! multi-result sets, commit and rollback, server errors keep their code and
//! SQLSTATE, COM_RESET_CONNECTION really resets, COM_CHANGE_USER re-authenticates,
//! and baton learns the GTID of every write it acknowledges.

mod common;

use common::*;
use mysql_async::prelude::*;
use mysql_async::{Conn, Value};

fn server_error(e: mysql_async::Error) -> (u16, String) {
    match e {
        mysql_async::Error::Server(s) => (s.code, s.state),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn prepared_statements_round_trip_every_type() {
    let baton = TestBaton::start("").await;
    let mut c = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    c.query_drop(
        "DROP TABLE IF EXISTS ps_types; CREATE TABLE ps_types (
           id INT PRIMARY KEY, ti TINYINT, ubi BIGINT UNSIGNED, bi BIGINT, de DECIMAL(30,10), fl FLOAT, db DOUBLE,
           d DATE, t TIME(6), dt DATETIME(6), ts TIMESTAMP(6) NULL, vc VARCHAR(200), bl LONGBLOB, js JSON,
           en ENUM('a','b'), st SET('x','y'), bt BIT(12)) DEFAULT CHARSET=utf8mb4",
    )
    .await
    .unwrap();
    let blob: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let row: Vec<Value> = vec![
        Value::Int(1),
        Value::Int(-128),
        Value::UInt(u64::MAX),
        Value::Int(i64::MIN),
        Value::Bytes(b"-12345678901234567890.0123456789".to_vec()),
        Value::Float(1.5),
        Value::Double(-2.25e300),
        Value::Date(2024, 2, 29, 0, 0, 0, 0),
        Value::Time(true, 1, 10, 11, 12, 123456),
        Value::Date(2024, 12, 31, 23, 59, 59, 999999),
        Value::Date(2030, 1, 1, 0, 0, 1, 5),
        Value::Bytes("ünïcødé 🎉 日本".as_bytes().to_vec()),
        Value::Bytes(blob.clone()),
        Value::Bytes(br#"{"a": [1, null]}"#.to_vec()),
        Value::Bytes(b"b".to_vec()),
        Value::Bytes(b"x,y".to_vec()),
        Value::Bytes(vec![0x0a, 0xbc]),
    ];
    let stmt = c.prep("INSERT INTO ps_types VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)").await.unwrap();
    c.exec_drop(&stmt, row.clone()).await.unwrap();
    let mut nulls = vec![Value::NULL; 17];
    nulls[0] = Value::Int(2);
    c.exec_drop(&stmt, nulls).await.unwrap();
    c.close(stmt).await.unwrap();

    let got: Vec<mysql_async::Row> = c.exec("SELECT * FROM ps_types WHERE id >= ? ORDER BY id", (1,)).await.unwrap();
    assert_eq!(got.len(), 2);
    let r0 = got[0].clone().unwrap();
    assert_eq!(r0[0], Value::Int(1));
    assert_eq!(r0[1], Value::Int(-128));
    assert_eq!(r0[2], Value::UInt(u64::MAX));
    assert_eq!(r0[3], Value::Int(i64::MIN));
    assert_eq!(r0[4], Value::Bytes(b"-12345678901234567890.0123456789".to_vec()));
    assert_eq!(r0[5], Value::Float(1.5));
    assert_eq!(r0[6], Value::Double(-2.25e300));
    assert_eq!(r0[7], Value::Date(2024, 2, 29, 0, 0, 0, 0));
    assert_eq!(r0[8], Value::Time(true, 1, 10, 11, 12, 123456));
    assert_eq!(r0[9], Value::Date(2024, 12, 31, 23, 59, 59, 999999));
    assert_eq!(r0[10], Value::Date(2030, 1, 1, 0, 0, 1, 5));
    assert_eq!(r0[11], Value::Bytes("ünïcødé 🎉 日本".as_bytes().to_vec()));
    assert_eq!(r0[12], Value::Bytes(blob));
    assert_eq!(r0[13], Value::Bytes(br#"{"a": [1, null]}"#.to_vec()));
    assert_eq!(r0[14], Value::Bytes(b"b".to_vec()));
    assert_eq!(r0[15], Value::Bytes(b"x,y".to_vec()));
    assert_eq!(r0[16], Value::Bytes(vec![0x0a, 0xbc]));
    let r1 = got[1].clone().unwrap();
    assert!(r1[1..].iter().all(|v| *v == Value::NULL), "{r1:?}");

    // Statement ids are baton's own: many statements, closed and reused, stay distinct.
    let a = c.prep("SELECT ?").await.unwrap();
    let b = c.prep("SELECT ? + 1").await.unwrap();
    assert_ne!(a.id(), b.id());
    let x: Option<i64> = c.exec_first(&b, (41,)).await.unwrap();
    assert_eq!(x, Some(42));
    c.close(a.clone()).await.unwrap();
    let err = c.exec_drop(&a, (1,)).await.unwrap_err();
    assert_eq!(server_error(err).0, 1243);
    let x: Option<i64> = c.exec_first(&b, (1,)).await.unwrap();
    assert_eq!(x, Some(2), "the session survives an unknown statement id");
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn multi_results_transactions_and_errors() {
    let baton = TestBaton::start("").await;
    let mut c = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    c.query_drop(
        "DROP TABLE IF EXISTS tx_t; CREATE TABLE tx_t (id INT PRIMARY KEY, v VARCHAR(10));
         DROP PROCEDURE IF EXISTS two_sets;
         CREATE PROCEDURE two_sets() BEGIN SELECT 1 AS a; SELECT 2 AS b, 3 AS c; END",
    )
    .await
    .unwrap();

    // Multi-statement text query: three result sets.
    let mut res = c.query_iter("SELECT 1; SELECT 'x', 'y'; SELECT 2").await.unwrap();
    let s1: Vec<i64> = res.collect().await.unwrap();
    let s2: Vec<(String, String)> = res.collect().await.unwrap();
    let s3: Vec<i64> = res.collect().await.unwrap();
    drop(res);
    assert_eq!((s1, s2, s3), (vec![1], vec![("x".into(), "y".into())], vec![2]));

    // CALL: two result sets plus the final OK.
    let mut res = c.query_iter("CALL two_sets()").await.unwrap();
    let a: Vec<i64> = res.collect().await.unwrap();
    let bc: Vec<(i64, i64)> = res.collect().await.unwrap();
    drop(res);
    assert_eq!((a, bc), (vec![1], vec![(2, 3)]));

    // Commit keeps, rollback discards.
    let mut tx = c.start_transaction(Default::default()).await.unwrap();
    tx.exec_drop("INSERT INTO tx_t VALUES (?, ?)", (1, "kept")).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = c.start_transaction(Default::default()).await.unwrap();
    tx.exec_drop("INSERT INTO tx_t VALUES (?, ?)", (2, "gone")).await.unwrap();
    tx.rollback().await.unwrap();
    let ids: Vec<i64> = c.query("SELECT id FROM tx_t ORDER BY id").await.unwrap();
    assert_eq!(ids, vec![1]);

    // Server errors keep their own code and SQLSTATE, and the session lives on.
    let e = c.query_drop("INSERT INTO tx_t VALUES (1, 'dup')").await.unwrap_err();
    assert_eq!(server_error(e), (1062, "23000".into()));
    let e = c.query_drop("SELEC 1").await.unwrap_err();
    assert_eq!(server_error(e), (1064, "42000".into()));
    let e = c.query_drop("SELECT * FROM no_such_table").await.unwrap_err();
    assert_eq!(server_error(e), (1146, "42S02".into()));
    let e = c.exec_drop("INSERT INTO tx_t VALUES (?, ?)", (1, "dup")).await.unwrap_err();
    assert_eq!(server_error(e), (1062, "23000".into()));
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn reset_connection_and_change_user() {
    let baton = TestBaton::start("").await;
    let mut c = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    c.query_drop("SET @marker = 42, SESSION sql_mode = 'ANSI_QUOTES'").await.unwrap();
    let v: Option<Option<i64>> = c.query_first("SELECT @marker").await.unwrap();
    assert_eq!(v, Some(Some(42)));
    c.reset().await.unwrap();
    let v: Option<Option<i64>> = c.query_first("SELECT @marker").await.unwrap();
    assert_eq!(v, Some(None), "COM_RESET_CONNECTION clears user variables");
    let mode: Option<String> = c.query_first("SELECT @@SESSION.sql_mode").await.unwrap();
    assert_ne!(mode.as_deref(), Some("ANSI_QUOTES"));

    // Change to another configured user: really re-authenticated, then that user.
    let good = mysql_async::ChangeUserOpts::default().with_user(Some("admin".into())).with_pass(Some("admin".into()));
    c.change_user(good).await.unwrap();
    let who: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who.as_deref(), Some("admin@%"));

    // Wrong password: refused with 1045.
    let bad = mysql_async::ChangeUserOpts::default().with_user(Some("app".into())).with_pass(Some("wrong".into()));
    let e = c.change_user(bad).await.unwrap_err();
    assert_eq!(server_error(e), (1045, "28000".into()));

    // baton stays healthy for new sessions.
    let mut c2 = Conn::new(baton.opts(None)).await.unwrap();
    let who: Option<String> = c2.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who.as_deref(), Some("app@%"));
}

#[tokio::test]
async fn acknowledged_gtids_are_tracked() {
    let baton = TestBaton::start("").await;
    let mut c = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    c.query_drop("CREATE TABLE IF NOT EXISTS gtid_t (id INT AUTO_INCREMENT PRIMARY KEY)").await.unwrap();
    for _ in 0..5 {
        c.query_drop("INSERT INTO gtid_t VALUES ()").await.unwrap();
    }
    let last: Option<String> = c.query_first("SELECT @@last_gtid").await.unwrap();
    let last = last.unwrap();
    let acked = baton.running().proxy.clusters["main"].acked.position();
    // Other tests write concurrently, so baton's position is at least our last GTID.
    let (d, _, n) = baton_control::gtid::parse_gtid(&last).unwrap();
    let ours = acked
        .split(',')
        .filter_map(baton_control::gtid::parse_gtid)
        .find(|g| g.0 == d)
        .unwrap_or_else(|| panic!("domain {d} missing from {acked:?}"));
    assert!(ours.2 >= n, "acked {acked} should contain {last}");
}
