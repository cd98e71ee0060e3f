//! sysbench oltp_read_write through baton, 4 threads, 20 s: no error but the
//! server's own deadlocks.
//!
//! oltp_read_write's transactions can deadlock on the server itself (1213, one
//! in ~5,000 transactions here); sysbench retries them. Only 1213 is ignored
//! (any other error ends the run), and each one must be a deadlock the primary
//! counted (`Innodb_deadlocks`, read directly), so baton adds none of its own.

mod common;

use std::process::Command;

use common::*;
use mysql_async::prelude::*;

fn sysbench(port: u16, db: &str, args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .arg("120")
        .arg("sysbench")
        .args(["oltp_read_write", "--db-driver=mysql", "--mysql-host=127.0.0.1"])
        .arg(format!("--mysql-port={port}"))
        .args([format!("--mysql-user={APP_USER}"), format!("--mysql-password={APP_PASSWORD}")])
        .arg(format!("--mysql-db={db}"))
        .args(["--tables=4", "--table-size=20000"])
        .args(args)
        .output()
        .expect("sysbench installed")
}

/// The primary's `Innodb_deadlocks` counter, read directly.
async fn server_deadlocks() -> u64 {
    let mut c = mysql_async::Conn::new(opts(primary_port(), None)).await.unwrap();
    let row: Option<(String, u64)> = c.query_first("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'").await.unwrap();
    c.disconnect().await.unwrap();
    row.expect("Innodb_deadlocks").1
}

#[tokio::test(flavor = "multi_thread")]
async fn sysbench_read_write_has_no_errors_but_server_deadlocks() {
    let baton = TestBaton::start("").await;
    let port = baton.port;
    let deadlocks_before = server_deadlocks().await;
    let out = tokio::task::spawn_blocking(move || {
        let _ = sysbench(port, "sbtest", &["cleanup"]);
        let prep = sysbench(port, "sbtest", &["prepare"]);
        assert!(prep.status.success(), "prepare: {}", String::from_utf8_lossy(&prep.stderr));
        let run = sysbench(port, "sbtest", &["--threads=4", "--time=20", "--report-interval=0", "--mysql-ignore-errors=1213", "run"]);
        let _ = sysbench(port, "sbtest", &["cleanup"]);
        run
    })
    .await
    .unwrap();
    let deadlocks = server_deadlocks().await - deadlocks_before;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sysbench run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.contains("ignored errors:")).expect("sysbench summary");
    let errors: u64 = line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    // Other tests share the cluster: their deadlocks only loosen the bound.
    assert!(errors <= deadlocks, "{errors} errors but the primary counted {deadlocks} deadlocks:\n{stdout}");
    let tx_line = stdout.lines().find(|l| l.trim_start().starts_with("transactions:")).unwrap();
    let txs: u64 = tx_line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(txs > 100, "sysbench ran only {txs} transactions:\n{stdout}");
    println!("{stdout}");
}
