//! The client-driver compatibility matrix (tests/clients/): one program per driver
//! (Connector/J, four Python drivers, Node.js mysql2, PHP PDO and mysqli, Go, Ruby,
//! mysql_async, the mariadb CLI tools) through an in-process baton in front of the
//! reparent cluster, through one planned reparent and one SIGKILL of the primary
//! shared by all. tests/clients/run.py runs the programs, the reparent and the crash,
//! and checks; this test starts baton, hands the runner its addresses, and asserts.

mod common;

use std::time::Duration;

use common::reparent::*;
use common::*;

const TIMINGS: &str = "[buffer]\nwindow_ms = 30000\nmax_failover_duration_ms = 60000\nmin_time_between_failovers_ms = 0\ndrain_concurrency = 4\n\
                       [reparent]\ntransaction_grace_ms = 2000\ncheck_interval_ms = 20\ncatchup_timeout_ms = 10000\nprepare_timeout_ms = 5000\n\
                       [health]\ninterval_ms = 300\ntimeout_ms = 700\nfailure_threshold = 3\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_driver_through_a_reparent_and_a_crash() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start_baton_with(&info, &primary, TIMINGS, "semi_sync", "auto_failover = true\n").await;
    // The mysql_async program is the cargo example `client_rust`, built beside this
    // test's binary (target/<profile>/deps/..) by `cargo build --all-targets`.
    let exe = std::env::current_exe().unwrap();
    let rust_bin = exe.parent().and_then(|d| d.parent()).unwrap().join("examples").join("client_rust");
    assert!(rust_bin.exists(), "{} missing: build it with cargo build --examples", rust_bin.display());
    let args = [
        "tests/clients/run.py".to_string(),
        "--baton".to_string(),
        running.mysql_addr.to_string(),
        "--admin".to_string(),
        running.admin_addr.to_string(),
        "--token".to_string(),
        TOKEN.to_string(),
        "--cluster-info".to_string(),
        std::env::var("BATON_TEST_CLUSTER_REPARENT").unwrap(),
        "--rust-bin".to_string(),
        rust_bin.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").args(&args).current_dir(repo_root()).output().expect("python3 (scripts/setup.sh installs the drivers)")
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    assert!(out.status.success(), "the client matrix failed:\n{stdout}\n{stderr}");
    // The runner restarted the server it killed; the next test heals the cluster.
    running.shutdown(Some(Duration::from_millis(100))).await;
}
