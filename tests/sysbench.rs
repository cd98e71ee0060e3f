//! sysbench oltp_read_write through baton, 4 threads, 20 s: zero errors.

mod common;

use std::process::Command;

use common::*;

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

#[tokio::test(flavor = "multi_thread")]
async fn sysbench_read_write_has_zero_errors() {
    let baton = TestBaton::start("").await;
    let port = baton.port;
    let out = tokio::task::spawn_blocking(move || {
        let _ = sysbench(port, "sbtest", &["cleanup"]);
        let prep = sysbench(port, "sbtest", &["prepare"]);
        assert!(prep.status.success(), "prepare: {}", String::from_utf8_lossy(&prep.stderr));
        let run = sysbench(port, "sbtest", &["--threads=4", "--time=20", "--report-interval=0", "run"]);
        let _ = sysbench(port, "sbtest", &["cleanup"]);
        run
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sysbench run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.contains("ignored errors:")).expect("sysbench summary");
    let errors: u64 = line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(errors, 0, "{stdout}");
    let tx_line = stdout.lines().find(|l| l.trim_start().starts_with("transactions:")).unwrap();
    let txs: u64 = tx_line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(txs > 100, "sysbench ran only {txs} transactions:\n{stdout}");
    println!("{stdout}");
}
