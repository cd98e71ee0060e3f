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

use baton_control::server::{AdminLogin, MariaDb, ServerSql};
use baton_testkit::Cluster;
use mysql_async::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WRITERS: usize = 8;

#[derive(Default)]
struct Log {
    acks: Vec<Instant>,
    errors: Vec<Instant>,
    /// (writer, seq) of every acknowledged write.
    keys: Vec<(usize, u64)>,
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
            Ok(()) => {
                let mut l = log.lock().unwrap();
                l.acks.push(now);
                l.keys.push((w, seq));
            }
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
    let login = AdminLogin { user: "admin".into(), password: "admin".into(), timeout: Duration::from_secs(5), tls: None };
    let mut o = MariaDb::connect(old, &login).await.unwrap();
    o.exec("SET GLOBAL read_only=ON").await.unwrap();
    let pos = o.gtid_binlog_pos().await.unwrap();
    let mut n = MariaDb::connect(new, &login).await.unwrap();
    n.wait_for_gtid(&pos, Duration::from_secs(30)).await.unwrap();
    n.exec("STOP SLAVE").await.unwrap();
    n.exec("RESET SLAVE ALL").await.unwrap();
    n.exec("SET GLOBAL read_only=OFF").await.unwrap();
    o.replicate_from(new, "repl", "repl", true).await.unwrap();
    for s in all.iter().filter(|s| **s != old && **s != new) {
        let mut c = MariaDb::connect(s, &login).await.unwrap();
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
        let steps: Vec<String> =
            report["steps"].as_array().into_iter().flatten().map(|s| format!("{}={}", s["step"].as_str().unwrap_or("?"), s["ms"])).collect();
        eprintln!("reparent {}: {}", i + 1, steps.join(" "));
        let drain = tokio::time::timeout(Duration::from_secs(5), watcher).await.ok().and_then(|r| r.ok()).unwrap_or_default();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let l = log.lock().unwrap();
        let errors = l.errors.iter().filter(|t| **t >= t0 && **t <= t1 + Duration::from_secs(1)).count();
        let during = l.acks.iter().filter(|t| **t >= t0 && **t <= t1).count() as f64 / (t1 - t0).as_secs_f64();
        let before = l.acks.iter().filter(|t| **t >= t0 - Duration::from_secs(1) && **t < t0).count() as f64;
        rows.push((
            i + 1,
            report["outcome"].as_str().unwrap_or("?").to_string(),
            pause(&l.acks, t0, t1 + Duration::from_millis(500)),
            report["buffered"].as_u64().unwrap_or(0),
            drain,
            errors,
            report["total_ms"].as_u64().unwrap_or(0),
            before,
            during,
        ));
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
    let (direct_errors, last_ok) = {
        let l = log.lock().unwrap();
        (l.errors.iter().filter(|t| **t >= t0).count(), l.acks.iter().filter(|t| **t >= t0).max().copied().unwrap_or(t0))
    };
    let without = t_end - last_ok;

    println!("\n## Failover benchmark: {WRITERS} writers (autocommit INSERT), {n} planned reparents\n");
    println!("Through baton ({baton_total} writes acknowledged, {baton_errors} client errors in total):\n");
    println!(
        "| reparent | outcome | write pause ms | requests buffered | drain ms | client errors | reparent ms | writes/s before | writes/s during |"
    );
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
    crash(&cluster, &servers, &to).await;
    drop(cluster);
}

fn kill_primary(cluster: &Cluster, addr: &str) {
    let i = cluster.info.servers.iter().position(|s| s == addr).unwrap();
    let pid = std::fs::read_to_string(cluster.info.sockets[i].with_file_name("mariadbd.pid")).unwrap();
    std::process::Command::new("kill").arg("-KILL").arg(pid.trim()).status().unwrap();
}

/// The crash case: SIGKILL the primary under load, baton with automatic failover,
/// then the same crash with the clients connected directly.
async fn crash(cluster: &Cluster, servers: &[String], primary: &str) {
    let dir = tempfile::tempdir().unwrap();
    let list = servers.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[topology]\npath = {:?}\n\
         [buffer]\nwindow_ms = 30000\nmax_failover_duration_ms = 60000\nmin_time_between_failovers_ms = 0\ndrain_concurrency = 4\n\
         [health]\ninterval_ms = 300\ntimeout_ms = 700\nfailure_threshold = 3\n\
         [[users]]\nname = \"app\"\npassword = \"app\"\n\
         [[clusters]]\nname = \"main\"\nservers = [{list}]\nprimary = {primary:?}\nadmin_user = \"admin\"\nadmin_password = \"admin\"\n\
         repl_password = \"repl\"\ndurability = \"semi_sync\"\nauto_failover = true\n",
        dir.path().join("topology.json").display().to_string()
    );
    let running = baton::start(baton_control::Config::parse(&text).unwrap()).await.unwrap();
    let addr = running.mysql_addr.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let tasks: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(writer(addr.clone(), 200 + w, stop.clone(), log.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let handle = running.proxy.clusters["main"].clone();
    let mut gate = handle.gate.watch();
    let t0 = Instant::now();
    kill_primary(cluster, primary);
    let _ = tokio::time::timeout(Duration::from_secs(30), gate.wait_for(|s| s.phase == baton_control::gate::Phase::Buffering)).await;
    let detected = t0.elapsed();
    let mut topo = running.store.watch();
    let _ = tokio::time::timeout(Duration::from_secs(60), topo.wait_for(|t| t.cluster("main").is_some_and(|r| r.term > 1))).await;
    let promoted = t0.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(30), gate.wait_for(|s| s.phase == baton_control::gate::Phase::Idle)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let new_primary = running.store.current().cluster("main").unwrap().primary.clone();
    let (errors, p, keys) = {
        let l = log.lock().unwrap();
        (l.errors.iter().filter(|t| **t >= t0).count(), pause(&l.acks, t0, Instant::now()), l.keys.clone())
    };
    let buffered = handle.gate.counters.buffered.load(Ordering::Relaxed);
    let mut c = mysql_async::Conn::new(opts(&new_primary, "admin", "admin")).await.unwrap();
    let present: std::collections::HashSet<(u64, u64)> =
        c.query::<(u64, u64), _>("SELECT writer, seq FROM fo_rows WHERE writer >= 200").await.unwrap().into_iter().collect();
    let lost = keys.iter().filter(|(w, s)| !present.contains(&(*w as u64, *s))).count();
    let acked = keys.len();
    running.shutdown(Some(Duration::from_millis(200))).await;

    // The same crash, clients connected directly to the (new) primary.
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let tasks: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(writer(new_primary.clone(), 300 + w, stop.clone(), log.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d0 = Instant::now();
    kill_primary(cluster, &new_primary);
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let dl = log.lock().unwrap();
    let direct_errors = dl.errors.iter().filter(|t| **t >= d0).count();
    let last_ok = dl.acks.iter().filter(|t| **t >= d0).max().copied().unwrap_or(d0);

    println!("\n## Crash: SIGKILL of the primary under {WRITERS} writers (semi_sync, automatic failover)\n");
    println!("| | detection ms | new primary at ms | write pause ms | requests buffered | client errors | acknowledged | lost acknowledged |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| through baton | {} | {} | {} | {buffered} | {errors} | {acked} | {lost} |",
        detected.as_millis(),
        promoted.as_millis(),
        p.as_millis()
    );
    println!(
        "\nDirect to MariaDB, same crash (no proxy; the clients keep the dead primary's address): {direct_errors} client errors \
         in the 5 s after it; no successful write for the last {:.1} s.",
        (Instant::now() - last_ok).as_secs_f64()
    );
}
