//! The admin port and `baton ctl` against a real cluster: Prometheus metrics that
//! pass `promtool check metrics` and count what the traffic did; status (JSON and
//! ctl) before, during and after a reparent; bad requests get their documented
//! status and change nothing; config reload applies without dropping sessions and
//! refuses a bad file.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use baton_control::gate::Phase;
use baton_control::ClusterRecord;
use common::reparent::*;
use common::*;
use mysql_async::prelude::*;

const CONFIG: &str = "[buffer]\nwindow_ms = 3000\nmax_failover_duration_ms = 60000\nmin_time_between_failovers_ms = 0\n[reparent]\ncheck_interval_ms = 20\nprepare_timeout_ms = 3000\ncatchup_timeout_ms = 500\n";

async fn scrape(running: &baton::Running) -> (String, HashMap<String, f64>) {
    let mut s = tokio::net::TcpStream::connect(running.admin_addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).split_once("\r\n\r\n").unwrap().1.to_string();
    let values = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse().unwrap_or(f64::NAN))))
        .collect();
    (text, values)
}

fn promtool(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.txt");
    std::fs::write(&path, text).unwrap();
    let out =
        Command::new("sh").arg("-c").arg(format!("promtool check metrics < {}", path.display())).output().expect("promtool (Debian's prometheus)");
    assert!(out.status.success(), "promtool: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn ctl(running: &baton::Running, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("ctl")
        .arg("--admin")
        .arg(running.admin_addr.to_string())
        .args(args)
        .env_remove("BATON_ADMIN_TOKEN")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_status_and_bad_requests() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let other = info.servers.iter().find(|s| **s != primary).unwrap().clone();
    let (running, _dir) = start_baton(&info, &primary, CONFIG, "none").await;
    let port = running.mysql_addr.port();

    // Traffic: 3 connections, 10 queries each, 2 prepared executions (counted from
    // after the connections' own set-up queries).
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(mysql_async::Conn::new(opts(port, None)).await.unwrap());
    }
    let mut c = mysql_async::Conn::new(opts(port, None)).await.unwrap();
    let (_, before) = scrape(&running).await;
    for conn in &mut conns {
        for _ in 0..10 {
            let _: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
        }
    }
    for conn in conns {
        conn.disconnect().await.unwrap();
    }
    let _: Vec<i64> = c.exec("SELECT ?", (1,)).await.unwrap();
    let _: Vec<i64> = c.exec("SELECT ?", (2,)).await.unwrap();
    let (text, m) = scrape(&running).await;
    promtool(&text);
    let delta = |k: &str| m.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    assert_eq!(delta("baton_queries_total{command=\"query\"}"), 30.0);
    assert_eq!(delta("baton_queries_total{command=\"stmt_execute\"}"), 2.0);
    assert_eq!(m["baton_client_connections_total"], 4.0);
    assert_eq!(m["baton_client_connections"], 1.0);
    assert_eq!(m["baton_cluster_term{cluster=\"main\"}"], 1.0);

    // Status before: primary, term 1, idle.
    let (status, body) = http(running.admin_addr, "GET", "/api/v1/clusters/main", None, "").await;
    assert_eq!(status, 200);
    assert_eq!((body["primary"].as_str(), body["term"].as_u64(), body["buffer"]["phase"].as_str()), (Some(primary.as_str()), Some(1), Some("idle")));
    let roles: Vec<&str> = body["servers"].as_array().unwrap().iter().map(|s| s["role"].as_str().unwrap()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "primary").count(), 1);
    let (code, out, _) = ctl(&running, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("primary {primary}")) && out.contains("term 1"), "{out}");
    let (status, _) = http(running.admin_addr, "GET", "/readyz", None, "").await;
    assert_eq!(status, 200);

    // Bad requests: documented status, nothing changes.
    let bad = [
        ("POST", "/api/v1/clusters/nope/reparent", Some(TOKEN), "{}", 404, "not_found"),
        ("GET", "/api/v1/clusters/nope", None, "", 404, "not_found"),
        ("POST", "/api/v1/clusters/main/reparent", Some(TOKEN), "{not json", 400, "bad_request"),
        ("POST", "/api/v1/clusters/main/reparent", Some(TOKEN), "[1]", 400, "bad_request"),
        ("POST", "/api/v1/clusters/main/reparent", None, "{}", 401, "unauthorized"),
        ("POST", "/api/v1/clusters/main/reparent", Some("wrong"), "{}", 403, "forbidden"),
        ("POST", "/api/v1/clusters/main/reparent", Some(TOKEN), "{\"to\": \"127.0.0.1:1\"}", 404, "not_found"),
        ("POST", "/api/v1/clusters/nope/failover", Some(TOKEN), "", 404, "not_found"),
        ("POST", "/api/v1/clusters/main/failover", None, "", 401, "unauthorized"),
        ("POST", "/api/v1/config/reload", Some(TOKEN), "", 400, "invalid_config"),
    ];
    for (method, path, token, body, want, err) in bad {
        let (status, reply) = http(running.admin_addr, method, path, token, body).await;
        assert_eq!((status, reply["error"].as_str()), (want, Some(err)), "{method} {path} {body}: {reply}");
    }
    let (code, _, err) = ctl(&running, &["reparent", "main"]);
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = ctl(&running, &["--token", TOKEN, "conditions", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(running.store.current().cluster("main").unwrap().term, 1, "nothing changed");

    // A second reparent while one runs: 409. The first is slow because its
    // candidate lags (SQL thread stopped), and is then undone.
    c.query_drop("CREATE TABLE IF NOT EXISTS baton_test.adm_t (id INT PRIMARY KEY AUTO_INCREMENT)").await.unwrap();
    let mut lag = admin(&other).await;
    lag.query_drop("STOP SLAVE SQL_THREAD").await.unwrap();
    c.query_drop("INSERT INTO baton_test.adm_t VALUES ()").await.unwrap();
    let addr = running.admin_addr;
    let to = other.clone();
    let first =
        tokio::spawn(async move { http(addr, "POST", "/api/v1/clusters/main/reparent", Some(TOKEN), &format!("{{\"to\": \"{to}\"}}")).await });
    let handle = running.proxy.clusters["main"].clone();
    wait_for("the first reparent to start", Duration::from_secs(10), || {
        handle.last_reparent.lock().unwrap().is_some() || handle.reparent_lock.try_lock().is_err()
    })
    .await;
    let (status, reply) = reparent(&running, &other).await;
    assert_eq!((status, reply["error"].as_str()), (409, Some("conflict")), "{reply}");
    let (status, report) = first.await.unwrap();
    assert_eq!((status, report["outcome"].as_str()), (500, Some("undone")), "{report}");
    lag.query_drop("START SLAVE SQL_THREAD").await.unwrap();
    assert_eq!(running.store.current().cluster("main").unwrap().term, 1);

    // During: a condition held false on purpose (the topology does not name the new
    // primary yet): status and ctl say which; then after, the new primary at term 2.
    let ep = handle.gate.begin(1, &primary, "operator switchover", true).unwrap();
    admin(&primary).await.query_drop("SET GLOBAL read_only=ON").await.unwrap();
    let pos = scalar(&mut admin(&primary).await, "SELECT @@gtid_binlog_pos").await;
    assert_eq!(scalar(&mut admin(&other).await, &format!("SELECT MASTER_GTID_WAIT('{pos}', 30)")).await, "0");
    admin(&other).await.query_drop("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=OFF").await.unwrap();
    // An evaluation that began before read_only landed may still say C1 false:
    // wait for one taken after it (C1 holds, C2 does not).
    wait_for("C1 holding and C2 evaluated false", Duration::from_secs(10), || {
        let r = handle.conditions.borrow();
        r.episode == ep && r.conditions.iter().any(|c| c.id == "C2" && !c.holds) && r.conditions.iter().any(|c| c.id == "C1" && c.holds)
    })
    .await;
    let (_, body) = http(running.admin_addr, "GET", "/api/v1/clusters/main", None, "").await;
    assert_eq!(body["buffer"]["phase"], "buffering");
    let (code, out, _) = ctl(&running, &["conditions", "main"]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.contains("C2") && l.contains("FALSE")), "{out}");
    assert!(out.lines().any(|l| l.contains("C1") && l.contains("holds")), "{out}");
    let (_, m) = scrape(&running).await;
    assert_eq!(m["baton_leadership_condition{cluster=\"main\",condition=\"C2_named\"}"], 0.0);
    let record = running.store.current().cluster("main").unwrap().clone();
    running.store.put_cluster("main", ClusterRecord { primary: other.clone(), term: 2, servers: record.servers }).await.unwrap();
    let (_, port_other) = other.rsplit_once(':').unwrap();
    admin(&primary)
        .await
        .query_drop(format!("SET GLOBAL gtid_slave_pos=@@gtid_binlog_pos; CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port_other}, MASTER_USER='repl', MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos; START SLAVE"))
        .await
        .unwrap();
    handle.gate.watch().wait_for(|s| s.phase == Phase::Idle).await.unwrap();
    let (code, out, _) = ctl(&running, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("primary {other}")) && out.contains("term 2"), "{out}");

    // A held request, then after the reparent: the invariant and the counters.
    let _: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    let (text, m) = scrape(&running).await;
    promtool(&text);
    let v = |k: &str| m.get(k).copied().unwrap_or(0.0);
    let evicted: f64 = ["buffer_full", "window_expired", "max_duration", "client_gone"]
        .iter()
        .map(|r| v(&format!("baton_buffer_requests_evicted_total{{cluster=\"main\",reason=\"{r}\"}}")))
        .sum();
    assert_eq!(
        v("baton_buffer_requests_buffered_total{cluster=\"main\"}"),
        v("baton_buffer_requests_drained_total{cluster=\"main\"}") + evicted + v("baton_buffer_requests_queued{cluster=\"main\"}"),
        "buffered = drained + evicted + queued"
    );
    assert_eq!(v("baton_reparents_total{cluster=\"main\",kind=\"planned\",result=\"undone\"}"), 1.0);
    assert_eq!(v("baton_buffer_episodes_total{cluster=\"main\"}"), 2.0);
    assert_eq!(v("baton_cluster_term{cluster=\"main\"}"), 2.0);
    assert!(v("baton_reparent_step_duration_seconds_count{step=\"revoke\"}") >= 1.0);
    drop(c);
    running.shutdown(Some(Duration::from_millis(100))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_applies_without_dropping_sessions_and_refuses_bad_files() {
    let info = cluster();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.toml");
    let base = config_text(&info, &dir.path().join("topology.json"), "admin_token = \"t\"")
        .replace("[[users]]\nname = \"admin\"\npassword = \"admin\"\n", "");
    std::fs::write(&path, &base).unwrap();
    let config = baton_control::Config::load(&path).unwrap();
    let running = baton::start_with_path(config, Some(path.clone())).await.unwrap();
    let port = running.mysql_addr.port();
    let admin_opts = |port| {
        mysql_async::Opts::from(
            mysql_async::OptsBuilder::default()
                .ip_or_hostname("127.0.0.1")
                .tcp_port(port)
                .user(Some("admin"))
                .pass(Some("admin"))
                .prefer_socket(false),
        )
    };
    let mut app = mysql_async::Conn::new(opts(port, None)).await.unwrap();
    let e = mysql_async::Conn::new(admin_opts(port)).await.unwrap_err();
    assert!(matches!(e, mysql_async::Error::Server(ref s) if s.code == 1045), "{e:?}");

    // A valid change: a new user; the open session keeps working.
    std::fs::write(&path, format!("{base}\n[[users]]\nname = \"admin\"\npassword = \"admin\"\n")).unwrap();
    let (status, body) = http(running.admin_addr, "POST", "/api/v1/config/reload", Some("t"), "").await;
    assert_eq!(status, 200, "{body}");
    let mut adm = mysql_async::Conn::new(admin_opts(port)).await.unwrap();
    let who: Option<String> = adm.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who.as_deref(), Some("admin@%"));
    let one: Option<i64> = app.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the session opened before the reload still works");

    // An invalid file: refused, the running config keeps serving.
    std::fs::write(&path, "[server]\nlisten = \"nonsense\"\n").unwrap();
    let (status, body) = http(running.admin_addr, "POST", "/api/v1/config/reload", Some("t"), "").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_config")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("server.listen"), "{body}");
    // A change that needs a restart: refused too.
    std::fs::write(&path, base.replace("admin_listen = \"127.0.0.1:0\"", "admin_listen = \"127.0.0.1:1\"")).unwrap();
    let (status, body) = http(running.admin_addr, "POST", "/api/v1/config/reload", Some("t"), "").await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("needs a restart"), "{body}");
    let mut again = mysql_async::Conn::new(admin_opts(port)).await.unwrap();
    let one: Option<i64> = again.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the last good config still serves");
    let one: Option<i64> = app.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    running.shutdown(Some(Duration::from_millis(100))).await;
}
