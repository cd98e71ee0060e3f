//! A backend lost mid-statement, and greetings, with a relay in front of the
//! shared primary that can cut a connection, answer new ones with ERR 1040 (a
//! primary at max_connections), or hang them (a hung primary): the outcomes
//! README "Errors baton itself sends" documents, KILL inside executable
//! comments, greetings at the release boundary. First written by an adversarial
//! review; kept as regression tests.
mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::relay::*;
use common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use tokio::io::AsyncReadExt;

fn code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// A session's backend is closed mid-statement (as KILL CONNECTION does) while the
/// primary is alive but at max_connections (fresh connections get ERR 1040).
/// Directly, the server closes that client's connection; nothing else happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review2_cut_while_primary_busy() {
    let mut info = cluster();
    let relay = Relay::start(info.primary.clone()).await;
    info.primary = relay.addr.clone();
    info.servers = vec![relay.addr.clone()];
    let baton = TestBaton::start_for(&info, "").await;
    let gate = baton.running().proxy.clusters["main"].gate.clone();
    let episode = gate.episode();
    let mut c = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    relay.mode.store(BUSY, Ordering::SeqCst);
    relay.cut_next.store(true, Ordering::SeqCst);
    let r = c.query_drop("DO 1").await;
    let first = r.err().map(|e| (code(&e), e.to_string()));
    let next = c.query_drop("DO 1").await.err().map(|e| (code(&e), e.to_string()));
    println!("first: {first:?}\nnext: {next:?}\nepisode {} -> {}, phase {:?}", episode, gate.episode(), gate.phase());
    relay.mode.store(NORMAL, Ordering::SeqCst);
    assert!(matches!(first, Some((None, _))), "the client's connection closed as the server's would: {first:?}");
    assert_eq!(gate.episode(), episode, "no cluster-wide buffering for one killed session");
}

/// New clients while the primary hangs (accepts TCP, never greets): how long
/// until baton's own greeting reaches the client?
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review2_greeting_waits_for_hung_primary() {
    let mut info = cluster();
    let relay = Relay::start(info.primary.clone()).await;
    info.primary = relay.addr.clone();
    info.servers = vec![relay.addr.clone()];
    let baton = TestBaton::start_for(&info, "").await;
    relay.mode.store(HANG, Ordering::SeqCst);
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", baton.port)).await.unwrap();
    let mut b = [0u8; 4];
    let r = tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut b)).await;
    let waited = started.elapsed();
    println!("greeting after {waited:?}: {r:?}");
    relay.mode.store(NORMAL, Ordering::SeqCst);
    assert!(waited < Duration::from_secs(1), "baton's greeting waited {waited:?} for a hung primary");
}

/// Many clients that connect and never log in: after they go, do logins still
/// get their thread id as connection id, and is every id unique?
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review2_greeting_ids() {
    let baton = TestBaton::start("").await;
    // 40 idle peers (more than the 32 pending greetings).
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(("127.0.0.1", baton.port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conns = Vec::new();
    let mut mismatched = Vec::new();
    for _ in 0..5 {
        let mut c = Conn::new(baton.opts(None)).await.unwrap();
        let id: u32 = c.query_first("SELECT CONNECTION_ID()").await.unwrap().unwrap();
        if id != c.id() {
            mismatched.push((c.id(), id));
        }
        conns.push(c);
    }
    println!("with 40 idle peers: greeting id vs CONNECTION_ID(): {mismatched:?}");
    // Slow login: log in 1.2 s after the greeting.
    let opts = baton.opts(None);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", baton.port)).await.unwrap();
    drop(idle);
    let _ = &mut s;
    drop(s);
    let _ = opts;
    for c in conns {
        let _ = c.disconnect().await;
    }
}

/// A COMMIT behind a version comment the server skips (`/*M!999999 ... */`) is
/// still a COMMIT: cut after it reached the server, with the primary gone, the
/// README promises 9105 ("COMMIT in any spelling"), never 9101 ("rolled back").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review2_hidden_commit_cut() {
    let mut info = cluster();
    let relay = Relay::start(info.primary.clone()).await;
    info.primary = relay.addr.clone();
    info.servers = vec![relay.addr.clone()];
    let baton = TestBaton::start_for(&info, "[buffer]\nmin_time_between_failovers_ms = 0\n").await;
    let gate = baton.running().proxy.clusters["main"].gate.clone();
    let mut setup = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    setup.query_drop("CREATE TABLE IF NOT EXISTS review2_cut (id INT AUTO_INCREMENT PRIMARY KEY, tag VARCHAR(40))").await.unwrap();
    let tag = format!("hidden-{}", std::process::id());
    let mut c = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(format!("INSERT INTO review2_cut (tag) VALUES ('{tag}')")).await.unwrap();
    relay.mode.store(DOWN, Ordering::SeqCst);
    relay.cut_next.store(true, Ordering::SeqCst);
    let e = c.query_drop("/*M!999999 SELECT */ COMMIT").await.expect_err("cut");
    relay.mode.store(NORMAL, Ordering::SeqCst);
    gate.fail(gate.episode(), baton_control::gate::GateError::MaxDuration);
    let mut direct = Conn::new(opts(cluster().primary.rsplit_once(':').unwrap().1.parse().unwrap(), Some("baton_test"))).await.unwrap();
    let mut n = 0u32;
    for _ in 0..50 {
        n = direct.query_first(format!("SELECT COUNT(*) FROM review2_cut WHERE tag = '{tag}'")).await.unwrap().unwrap();
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("client got {:?} ({e}); rows committed on the server: {n}", code(&e));
    assert_eq!(code(&e), Some(9105), "a COMMIT that committed ({n} row) answered {e}");
}

/// `KILL QUERY <id>` inside an executable comment, through baton and directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review2_kill_in_executable_comment() {
    let baton = TestBaton::start("").await;
    let primary: u16 = cluster().primary.rsplit_once(':').unwrap().1.parse().unwrap();
    let mut outcomes = Vec::new();
    for port in [baton.port, primary] {
        let mut victim = Conn::new(opts(port, None)).await.unwrap();
        let mut killer = Conn::new(opts(port, None)).await.unwrap();
        let r = killer.query_drop(format!("/*!50000 KILL QUERY {} */", victim.id())).await;
        let _ = victim.query_drop("DO 1").await;
        outcomes.push(r.map_err(|e| e.to_string()));
    }
    println!("baton: {:?}\ndirect: {:?}", outcomes[0], outcomes[1]);
    assert_eq!(outcomes[0], outcomes[1]);
}

/// Logins that arrive around the 1 s release of the greeted connection: each
/// succeeds, ids stay unique, and no greeted connection is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review2_login_at_release_boundary() {
    use baton_proxy::packet::PacketIo;
    let baton = TestBaton::start("").await;
    let mut tasks = Vec::new();
    for i in 0..30u64 {
        let port = baton.port;
        tasks.push(tokio::spawn(async move {
            let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut io = PacketIo::new(s);
            let (_, _, g) = io.read_logical(1 << 16).await.unwrap();
            let nul = g.iter().skip(1).position(|&b| b == 0).unwrap() + 1;
            let rest = &g[nul + 1..];
            let id = u32::from_le_bytes(rest[..4].try_into().unwrap());
            let mut nonce = rest[4..12].to_vec();
            nonce.extend_from_slice(&rest[31..43]);
            tokio::time::sleep(Duration::from_millis(990 + i)).await;
            let mut p = common::raw::CAPS.to_le_bytes().to_vec();
            p.extend_from_slice(&(1u32 << 30).to_le_bytes());
            p.push(45);
            p.extend_from_slice(&[0u8; 23]);
            p.extend_from_slice(b"app\0");
            let proof = mysql_common::scramble::scramble_native(&nonce, b"app").unwrap();
            p.push(20);
            p.extend_from_slice(&proof);
            p.push(0);
            p.extend_from_slice(b"mysql_native_password\0");
            io.send(1, &p).await.unwrap();
            let (_, _, r) = io.read_logical(1 << 16).await.unwrap();
            if r[0] != 0 {
                return (id, Err(format!("{:?}", baton_proxy::proto::parse_err(&r))));
            }
            let mut q = vec![3u8];
            q.extend_from_slice(b"SELECT CONNECTION_ID()");
            io.send(0, &q).await.unwrap();
            let mut last = Vec::new();
            for _ in 0..4 {
                let (_, _, x) = io.read_logical(1 << 16).await.unwrap();
                last.push(x.to_vec());
            }
            let row = &last[2];
            let v = String::from_utf8_lossy(&row[1..]).to_string();
            // keep the connection for a moment so ids overlap
            tokio::time::sleep(Duration::from_millis(300)).await;
            (id, Ok(v))
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let mut ids: Vec<u32> = results.iter().map(|r| r.0).collect();
    ids.sort();
    ids.dedup();
    let same = results.iter().filter(|(id, v)| v.as_ref().is_ok_and(|v| *v == id.to_string())).count();
    let errs: Vec<_> = results.iter().filter(|r| r.1.is_err()).collect();
    println!("unique greeting ids {} of {}; CONNECTION_ID() = greeting id for {}; errors {errs:?}", ids.len(), results.len(), same);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut admin = Conn::new(opts(cluster().primary.rsplit_once(':').unwrap().1.parse().unwrap(), None)).await.unwrap();
    let left: u64 =
        admin.query_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'unauthenticated user'").await.unwrap().unwrap();
    println!("unauthenticated connections left on the primary: {left}");
    assert!(errs.is_empty());
    assert_eq!(ids.len(), results.len());
}
