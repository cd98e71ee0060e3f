//! Issue 11, items 1 and 2: a reparent is baton's own task (a caller that goes
//! away does not stop it), and a write longer than the grace period does not
//! block the revoke (it is ended, its client gets the documented error).

mod common;

use std::time::Duration;

use common::reparent::*;
use common::*;
use mysql_async::prelude::*;
use tokio::io::AsyncWriteExt;

const FAST: &str = "[buffer]\nwindow_ms = 10000\nmax_failover_duration_ms = 20000\nmin_time_between_failovers_ms = 0\n\
                    [reparent]\ntransaction_grace_ms = 1500\ncatchup_timeout_ms = 5000\nprepare_timeout_ms = 5000\ncheck_interval_ms = 20\n";

/// The cluster's last reparent report, from the status API.
async fn last_reparent(running: &baton::Running) -> serde_json::Value {
    let (status, body) = http(running.admin_addr, "GET", "/api/v1/clusters/main", None, "").await;
    assert_eq!(status, 200);
    body["last_reparent"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reparent_whose_caller_goes_away_runs_to_its_end() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start_baton(&info, &primary, FAST, "none").await;
    let port = running.mysql_addr.port();
    // An open transaction keeps the grace step waiting.
    let mut tx = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    tx.query_drop("BEGIN").await.unwrap();
    tx.query_drop("SELECT 1").await.unwrap();

    // The caller sends the request and hangs up 300 ms later (curl -m 1, Ctrl-C).
    let other = info.servers.iter().find(|s| **s != primary).unwrap().clone();
    let body = format!("{{\"to\": \"{other}\"}}");
    let mut s = tokio::net::TcpStream::connect(running.admin_addr).await.unwrap();
    let req = format!(
        "POST /api/v1/clusters/main/reparent HTTP/1.1\r\nHost: baton\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);

    // It runs on: done, the new primary named, the gate idle again.
    let report = until_ended(&running).await;
    assert_eq!(report["outcome"], "ok", "{report:#}");
    assert_eq!(running.store.current().cluster("main").unwrap().primary, other);
    assert_eq!(running.proxy.clusters["main"].gate.phase(), baton_control::gate::Phase::Idle);
    // A write goes through at once.
    let mut c = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    let p: Option<u16> = c.query_first("SELECT @@port").await.unwrap();
    assert_eq!(format!("127.0.0.1:{}", p.unwrap()), other);
    drop(tx);
    let (status, report) = reparent(&running, &primary).await;
    assert_eq!(status, 200, "{report:#}");
    running.shutdown(Some(Duration::from_millis(200))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_longer_than_the_grace_period_does_not_block_the_revoke() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let extra = FAST.replace("transaction_grace_ms = 1500", "transaction_grace_ms = 300");
    let (running, _dir) = start_baton(&info, &primary, &extra, "none").await;
    let port = running.mysql_addr.port();
    let mut setup = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    setup.query_drop("CREATE TABLE IF NOT EXISTS long_write (id INT PRIMARY KEY AUTO_INCREMENT, v INT); DELETE FROM long_write").await.unwrap();
    // An autocommit write that runs 8 s, longer than grace + the admin timeout (2 s).
    let mut slow = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    let writer = tokio::spawn(async move { slow.query_drop("INSERT INTO long_write (v) SELECT SLEEP(8)").await });
    let mut p = admin(&primary).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n: Option<i64> =
            p.query_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'INSERT INTO long_write%'").await.unwrap();
        if n == Some(1) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the slow insert did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = info.servers.iter().find(|s| **s != primary).unwrap().clone();
    let started = std::time::Instant::now();
    let (status, report) = reparent(&running, &other).await;
    assert_eq!((status, report["outcome"].as_str()), (200, Some("ok")), "{report:#}");
    assert!(started.elapsed() < Duration::from_secs(7), "the revoke waited for the slow write: {report:#}");
    let revoke = report["steps"].as_array().unwrap().iter().find(|s| s["step"] == "revoke").unwrap().clone();
    let detail = revoke["detail"].as_str().unwrap();
    assert!(detail.contains("client statement(s) still running") && !detail.contains("(0 client"), "{revoke}");
    // Its client gets the documented "may have been executed" error, not a success.
    let r = writer.await.unwrap();
    let code = match &r {
        Err(mysql_async::Error::Server(e)) => e.code,
        other => panic!("the killed write answered {other:?}"),
    };
    assert!(code == 9105 || code == 9101, "{r:?}");
    // The row is not there: the kill rolled the statement back.
    let mut n = admin(&other).await;
    let rows: Option<i64> = n.query_first("SELECT COUNT(*) FROM baton_test.long_write").await.unwrap();
    assert_eq!(rows, Some(0));
    let (status, report) = reparent(&running, &primary).await;
    assert_eq!(status, 200, "{report:#}");
    running.shutdown(Some(Duration::from_millis(200))).await;
}

/// Item 5: a replica that cannot follow the new primary (here: a wrong
/// replication password) is named in the report, with the server's own error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_that_cannot_follow_are_reported_not_called_success() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let dir = tempfile::tempdir().unwrap();
    let tables = cluster_tables(&info, &primary, "none").replace("repl_password = \"repl\"", "repl_password = \"wrong\"");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\n[topology]\npath = {:?}\n{FAST}\n{tables}",
        dir.path().join("topology.json").display().to_string()
    );
    let running = baton::start(baton_control::Config::parse(&text).unwrap()).await.unwrap();
    let other = info.servers.iter().find(|s| **s != primary).unwrap().clone();
    let (status, report) = reparent(&running, &other).await;
    assert_eq!(status, 200, "{report:#}");
    let not_following: Vec<String> = report["not_following"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(not_following.len(), 2, "{report:#}");
    for s in info.servers.iter().filter(|s| **s != other) {
        let line = not_following.iter().find(|l| l.starts_with(s.as_str())).unwrap_or_else(|| panic!("{s} not named: {not_following:?}"));
        assert!(line.contains("Access denied"), "{line}");
    }
    let repoint = report["steps"].as_array().unwrap().iter().find(|s| s["step"] == "repoint").unwrap().clone();
    assert!(repoint["detail"].as_str().unwrap().contains("NOT following"), "{repoint}");
    running.shutdown(Some(Duration::from_millis(200))).await;
    heal(&info).await;
}

/// Item 5: `--check-config` refuses a reparentable cluster without replication
/// credentials; `--probe` logs in with both accounts and says which fails.
#[test]
fn check_config_probe_logs_in_with_both_accounts() {
    let _l = LOCK.blocking_lock();
    let info = info();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.toml");
    let run = |text: &str, probe: bool| {
        std::fs::write(&path, text).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_baton"));
        cmd.arg("--check-config").arg(&path);
        if probe {
            cmd.arg("--probe");
        }
        let out = cmd.output().unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let base = format!("[topology]\npath = {:?}\n{}", dir.path().join("t.json").display().to_string(), cluster_tables(&info, &info.primary, "none"));
    let (code, out) = run(&base.replace("repl_password = \"repl\"\n", ""), false);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no replication password"), "{out}");
    let (code, out) = run(&base.replace("repl_password = \"repl\"", "repl_password_file = \"/nonexistent/repl\""), false);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("/nonexistent/repl"), "{out}");
    let (code, out) = run(&base, true);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("\": ok").count(), 2 * info.servers.len(), "{out}");
    assert_eq!(out.matches("gtid_strict_mode: ok").count(), info.servers.len(), "{out}");
    assert_eq!(out.matches("log_slave_updates: ok").count(), info.servers.len(), "{out}");
    // A server without gtid_strict_mode: errant detection relies on it.
    let strict = |on: u8| {
        let (_, port) = info.servers[1].rsplit_once(':').unwrap();
        let sql = format!("SET GLOBAL gtid_strict_mode={on}");
        let st = std::process::Command::new("mariadb").args(["-h127.0.0.1", "-P", port, "-uadmin", "-padmin", "-e", &sql]).status().unwrap();
        assert!(st.success());
    };
    strict(0);
    let (code, out) = run(&base, true);
    strict(1);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(&format!("server {}: gtid_strict_mode: FAILED", info.servers[1])), "{out}");
    let (code, out) = run(&base.replace("repl_password = \"repl\"", "repl_password = \"wrong\""), true);
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(out.matches("replication account \"repl\": FAILED").count(), info.servers.len(), "{out}");
    assert!(out.contains("Access denied"), "{out}");
}

/// Wait until the gate holds requests (the reparent is past its announce step).
async fn until_buffering(running: &baton::Running) {
    let gate = running.proxy.clusters["main"].gate.clone();
    wait_for("the reparent to announce", Duration::from_secs(10), || gate.phase() == baton_control::gate::Phase::Buffering).await;
}

/// Wait until the cluster's last reparent is over; returns its report.
async fn until_ended(running: &baton::Running) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = last_reparent(running).await;
        if r["outcome"] != "running" && !r.is_null() {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "the reparent never ended: {r:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Item 1: cancellation is an explicit, authenticated request that undoes cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_cancel_undoes_a_reparent_before_the_revoke() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let extra = FAST.replace("transaction_grace_ms = 1500", "transaction_grace_ms = 8000");
    let (running, _dir) = start_baton(&info, &primary, &extra, "none").await;
    let port = running.mysql_addr.port();
    let admin_addr = running.admin_addr;
    // Nothing to cancel yet.
    let (status, body) = http(admin_addr, "POST", "/api/v1/clusters/main/cancel", Some(TOKEN), "").await;
    assert_eq!((status, body["error"].as_str()), (409, Some("not_running")), "{body:#}");
    // An open transaction keeps the grace step waiting (8 s).
    let mut tx = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    tx.query_drop("BEGIN").await.unwrap();
    tx.query_drop("SELECT 1").await.unwrap();
    let other = info.servers.iter().find(|s| **s != primary).unwrap().clone();
    let to = other.clone();
    let req =
        tokio::spawn(async move { http(admin_addr, "POST", "/api/v1/clusters/main/reparent", Some(TOKEN), &format!("{{\"to\": \"{to}\"}}")).await });
    until_buffering(&running).await;
    // Without the token: refused, and nothing changes.
    let (status, _) = http(admin_addr, "POST", "/api/v1/clusters/main/cancel", None, "").await;
    assert_eq!(status, 401);
    let started = std::time::Instant::now();
    let (status, body) = http(admin_addr, "POST", "/api/v1/clusters/main/cancel", Some(TOKEN), "").await;
    assert_eq!(status, 202, "{body:#}");
    drop(tx);
    let (status, report) = req.await.unwrap();
    assert_eq!(status, 500, "{report:#}");
    assert_eq!(report["outcome"], "undone", "{report:#}");
    assert_eq!(report["cancel_requested"], true, "{report:#}");
    assert!(report["error"].as_str().unwrap_or("").contains("cancelled by an operator"), "{report:#}");
    assert!(!report["steps"].as_array().unwrap().iter().any(|s| s["step"] == "revoke"), "undone before the revoke: {report:#}");
    assert!(started.elapsed() < Duration::from_secs(7), "the cancel waited out the grace period");
    // Undone cleanly: same primary and term, writable, writes go through at once.
    let record = running.store.current().cluster("main").cloned().unwrap();
    assert_eq!(record.primary, primary);
    let mut p = admin(&primary).await;
    assert_eq!(scalar(&mut p, "SELECT @@GLOBAL.read_only").await, "0");
    let mut c = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    let port_now: Option<u16> = c.query_first("SELECT @@port").await.unwrap();
    assert_eq!(format!("127.0.0.1:{}", port_now.unwrap()), primary);
    assert_eq!(running.proxy.clusters["main"].gate.phase(), baton_control::gate::Phase::Idle);
    let (status, body) = http(admin_addr, "POST", "/api/v1/clusters/main/cancel", Some(TOKEN), "").await;
    assert_eq!((status, body["error"].as_str()), (409, Some("not_running")), "{body:#}");
    running.shutdown(Some(Duration::from_millis(200))).await;
}

/// Item 1: Ctrl-C on `baton ctl reparent` stops watching, says the reparent is
/// still running and how to follow and cancel it; the reparent ends `ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctl_interrupted_says_still_running_and_the_reparent_ends() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start_baton(&info, &primary, FAST, "none").await;
    let port = running.mysql_addr.port();
    let mut tx = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    tx.query_drop("BEGIN").await.unwrap();
    tx.query_drop("SELECT 1").await.unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["ctl", "--admin", &running.admin_addr.to_string(), "--token", TOKEN, "reparent", "main"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    until_buffering(&running).await;
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("still running") && stderr.contains("baton ctl cancel main"), "{stderr}");
    drop(tx);
    let report = until_ended(&running).await;
    assert_eq!(report["outcome"], "ok", "{report:#}");
    assert_ne!(running.store.current().cluster("main").unwrap().primary, primary);
    let (status, report) = reparent(&running, &primary).await;
    assert_eq!(status, 200, "{report:#}");
    running.shutdown(Some(Duration::from_millis(200))).await;
}
