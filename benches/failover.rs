//! Failover benchmark: write load (8 sessions of autocommit inserts) through baton
//! with N planned reparents, against the same load sent directly to MariaDB with
//! the same switchover done by hand. Per reparent: the write pause (longest gap
//! between acknowledged writes), requests buffered, drain time, client errors.
//!
//! `cargo bench --bench failover` (optionally `-- --reparents N`). It starts its
//! own 3-node MariaDB cluster on loopback. Under `cargo test` it does nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_control::server::{AdminLogin, Server};
use baton_testkit::Cluster;
use mysql_async::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WRITERS: usize = 8;

#[derive(Default)]
struct Log {
    acks: Vec<Instant>,
    errors: Vec<Instant>,
}

fn opts(addr: &str, user: &str, pw: &str) -> mysql_async::Opts {
    let (h, p) = addr.rsplit_once(':').unwrap();
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(h)
        .tcp_port(p.parse().unwrap())
        .user(Some(user))
        .pass(Some(pw))
        .db_name(Some("baton_test"))
        .prefer_socket(false)
        .into()
}

async fn writer(addr: String, w: usize, stop: Arc<AtomicBool>, log: Arc<Mutex<Log>>) {
    let mut conn: Option<mysql_async::Conn> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match mysql_async::Conn::new(opts(&addr, "app", "app")).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    log.lock().unwrap().errors.push(Instant::now());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        seq += 1;
        let c = conn.as_mut().unwrap();
        let r = c.query_drop(format!("INSERT INTO fo_rows (writer, seq) VALUES ({w}, {seq})")).await;
        let now = Instant::now();
        match r {
            Ok(()) => log.lock().unwrap().acks.push(now),
            Err(e) => {
                log.lock().unwrap().errors.push(now);
                if !matches!(e, mysql_async::Error::Server(_)) {
                    conn = None;
                }
                // A client with a retry loop: back off a little.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Longest gap between consecutive acknowledged writes within [from, to].
fn pause(acks: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut worst = Duration::ZERO;
    for &t in acks.iter().filter(|t| **t >= from && **t <= to) {
        worst = worst.max(t - last);
        last = t;
    }
    worst.max(to - last)
}

async fn post(addr: std::net::SocketAddr, path: &str, token: &str, body: &str) -> serde_json::Value {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    serde_json::from_str(text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("")).unwrap_or_default()
}

/// The same switchover by hand (what an operator's script would do).
async fn manual_switchover(old: &str, new: &str, all: &[String]) {
    let login = AdminLogin { user: "admin".into(), password: "admin".into(), timeout: Duration::from_secs(5) };
    let mut o = Server::connect(old, &login).await.unwrap();
    o.exec("SET GLOBAL read_only=ON").await.unwrap();
    let pos = o.gtid_binlog_pos().await.unwrap();
    let mut n = Server::connect(new, &login).await.unwrap();
    n.wait_for_gtid(&pos, Duration::from_secs(30)).await.unwrap();
    n.exec("STOP SLAVE").await.unwrap();
    n.exec("RESET SLAVE ALL").await.unwrap();
    n.exec("SET GLOBAL read_only=OFF").await.unwrap();
    o.replicate_from(new, "repl", "repl", true).await.unwrap();
    for s in all.iter().filter(|s| **s != old && **s != new) {
        let mut c = Server::connect(s, &login).await.unwrap();
        c.replicate_from(new, "repl", "repl", false).await.unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("failover benchmark: run it with `cargo bench --bench failover`");
        return;
    }
    let n: usize = args.iter().position(|a| a == "--reparents").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(n));
}

async fn run(n: usize) {
    let cluster = Cluster::start(3, None).expect("cluster");
    let servers = cluster.info.servers.clone();
    let dir = tempfile::tempdir().unwrap();
    let list = servers.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_token = \"bench\"\n\
         [topology]\npath = {:?}\n[buffer]\nmin_time_between_failovers_ms = 0\n\
         [[users]]\nname = \"app\"\npassword = \"app\"\n\
         [[clusters]]\nname = \"main\"\nservers = [{list}]\nprimary = {:?}\nadmin_user = \"admin\"\nadmin_password = \"admin\"\nrepl_password = \"repl\"\n",
        dir.path().join("topology.json").display().to_string(),
        servers[0]
    );
    let running = baton::start(baton_control::Config::parse(&text).unwrap()).await.unwrap();
    let mut setup = mysql_async::Conn::new(opts(&servers[0], "app", "app")).await.unwrap();
    setup.query_drop("CREATE TABLE fo_rows (id BIGINT AUTO_INCREMENT PRIMARY KEY, writer INT, seq BIGINT)").await.unwrap();
    drop(setup);

    // A: through baton.
    let baton_addr = running.mysql_addr.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let tasks: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(writer(baton_addr.clone(), w, stop.clone(), log.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let handle = running.proxy.clusters["main"].clone();
    let mut rows = Vec::new();
    for i in 0..n {
        let to = servers[(i + 1) % servers.len()].clone();
        let mut gate = handle.gate.watch();
        let watcher = tokio::spawn(async move {
            let _ = gate.wait_for(|s| s.phase == baton_control::gate::Phase::Draining).await;
            let d0 = Instant::now();
            let _ = gate.wait_for(|s| s.phase == baton_control::gate::Phase::Idle).await;
            d0.elapsed()
        });
        let t0 = Instant::now();
        let report = post(running.admin_addr, "/api/v1/clusters/main/reparent", "bench", &format!("{{\"to\":\"{to}\"}}")).await;
        let t1 = Instant::now();
        let steps: Vec<String> = report["steps"].as_array().into_iter().flatten().map(|s| format!("{}={}", s["step"].as_str().unwrap_or("?"), s["ms"])).collect();
        eprintln!("reparent {}: {}", i + 1, steps.join(" "));
        let drain = tokio::time::timeout(Duration::from_secs(5), watcher).await.ok().and_then(|r| r.ok()).unwrap_or_default();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let l = log.lock().unwrap();
        let errors = l.errors.iter().filter(|t| **t >= t0 && **t <= t1 + Duration::from_secs(1)).count();
        let during = l.acks.iter().filter(|t| **t >= t0 && **t <= t1).count() as f64 / (t1 - t0).as_secs_f64();
        let before = l.acks.iter().filter(|t| **t >= t0 - Duration::from_secs(1) && **t < t0).count() as f64;
        rows.push((i + 1, report["outcome"].as_str().unwrap_or("?").to_string(), pause(&l.acks, t0, t1 + Duration::from_millis(500)), report["buffered"].as_u64().unwrap_or(0), drain, errors, report["total_ms"].as_u64().unwrap_or(0), before, during));
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let baton_total = log.lock().unwrap().acks.len();
    let baton_errors = log.lock().unwrap().errors.len();
    let primary_now = running.store.current().cluster("main").unwrap().primary.clone();
    running.shutdown(Some(Duration::from_millis(200))).await;

    // B: directly to the primary, same switchover.
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let tasks: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(writer(primary_now.clone(), 100 + w, stop.clone(), log.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to = servers.iter().find(|s| **s != primary_now).unwrap().clone();
    let t0 = Instant::now();
    manual_switchover(&primary_now, &to, &servers).await;
    let switched = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t_end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let l = log.lock().unwrap();
    let direct_errors = l.errors.iter().filter(|t| **t >= t0).count();
    let last_ok = l.acks.iter().filter(|t| **t >= t0).max().copied().unwrap_or(t0);
    let without = t_end - last_ok;

    println!("\n## Failover benchmark: {WRITERS} writers (autocommit INSERT), {n} planned reparents\n");
    println!("Through baton ({baton_total} writes acknowledged, {baton_errors} client errors in total):\n");
    println!("| reparent | outcome | write pause ms | requests buffered | drain ms | client errors | reparent ms | writes/s before | writes/s during |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut pauses: Vec<u128> = Vec::new();
    for (i, outcome, p, b, d, e, total, before, during) in &rows {
        pauses.push(p.as_millis());
        println!("| {i} | {outcome} | {} | {b} | {} | {e} | {total} | {before:.0} | {during:.0} |", p.as_millis(), d.as_millis());
    }
    pauses.sort();
    println!("\nmedian write pause: {} ms", pauses[pauses.len() / 2]);
    println!(
        "\nDirect to MariaDB, same switchover by hand (clients keep the old primary's address): {direct_errors} client errors \
         in the {:.1} s after it began; no successful write for the last {:.1} s of the run (switchover itself took {} ms).",
        (t_end - t0).as_secs_f64(),
        without.as_secs_f64(),
        (switched - t0).as_millis()
    );
    drop(cluster);
}
