//! Hostile and unusual inputs to session fidelity on one primary (no topology
//! change), each first found failing by an adversarial review: tracking changes
//! the server does not report, `INSERT ... RETURNING` for old-EOF clients, lexer
//! cases where a read-only refusal does not prove nothing ran, a refused
//! re-login, a lost backend during baton's own follow-up, the packet-size
//! boundary's sequence id, OK packets byte for byte against the server, silent
//! TCP peers, and the gate's active count when a granted waiter is dropped.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use baton_proxy::proto::{self, cmd};
use baton_proxy::relay::{Class, Expect, Scanner};
use common::raw::Raw;
use common::relay::Relay;
use common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn acked_contains(baton: &TestBaton, gtid: &str) -> bool {
    let acked = baton.running().proxy.clusters["main"].acked.position();
    baton_control::gtid::contains(&acked, gtid).is_ok()
}

/// Finding: `SET @@session.session_track_system_variables = ''` is not seen by the
/// lexer (`@@name` is skipped) and the server does not report it: baton's own
/// tracking is off for the rest of the session, so the GTIDs of the session's
/// writes are never acknowledged (and variables are no longer tracked for restore).
#[tokio::test]
async fn at_at_tracking_change_stops_gtid_acks() {
    let baton = TestBaton::start("").await;
    let mut setup = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    setup.query_drop("CREATE TABLE IF NOT EXISTS rv_gtid (id INT AUTO_INCREMENT PRIMARY KEY, v INT)").await.unwrap();
    let mut failures = Vec::new();
    for set in [
        "SET @@session.session_track_system_variables = ''",
        "SET @@session_track_system_variables = ''",
        "SET session_track_system_variables = ''", // control: handled
    ] {
        let mut c = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
        c.query_drop(set).await.unwrap();
        c.query_drop("INSERT INTO rv_gtid (v) VALUES (1)").await.unwrap();
        let gtid: String = c.query_first("SELECT @@last_gtid").await.unwrap().unwrap();
        if !acked_contains(&baton, &gtid) {
            failures.push(format!("{set}: write {gtid} not acknowledged (acked {})", baton.running().proxy.clusters["main"].acked.position()));
        }
    }
    // Prepared (binary protocol) SET of the tracking variable: after() only re-reads for COM_QUERY.
    {
        let mut raw = Raw::login(baton.port, APP_USER, APP_PASSWORD, Some("baton_test")).await;
        let id = raw.prepare("SET session_track_system_variables = ''").await;
        let r = raw.execute(id, 0).await;
        assert_eq!(r.err(), None);
        let r = raw.query("INSERT INTO rv_gtid (v) VALUES (2)").await;
        assert_eq!(r.err(), None);
        let g = raw.query("SELECT @@last_gtid").await.first_column();
        if !acked_contains(&baton, &g[0]) {
            failures.push(format!("COM_STMT_PREPARE'd SET session_track_system_variables: write {} not acknowledged", g[0]));
        }
    }
    // SET STATEMENT ... FOR <write>: the write itself runs with tracking off.
    {
        let mut c = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
        c.query_drop("SET STATEMENT session_track_system_variables = '' FOR INSERT INTO rv_gtid (v) VALUES (3)").await.unwrap();
        let gtid: String = c.query_first("SELECT @@last_gtid").await.unwrap().unwrap();
        if !acked_contains(&baton, &gtid) {
            failures.push(format!("SET STATEMENT ... FOR INSERT: write {gtid} not acknowledged"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A raw client with chosen capabilities (e.g. without DEPRECATE_EOF, as PyMySQL).
async fn login_caps(port: u16, caps: u32, db: &str) -> Raw {
    Raw::login_with(port, APP_USER, APP_PASSWORD, Some(db), caps).await
}

async fn query_caps(raw: &mut Raw, sql: &str, deprecate_eof: bool) -> Vec<(u8, Vec<u8>)> {
    let mut p = vec![cmd::QUERY];
    p.extend_from_slice(sql.as_bytes());
    raw.io.send(0, &p).await.unwrap();
    let mut scanner = Scanner::new(Expect::ResultSet, deprecate_eof);
    let mut out = Vec::new();
    while !scanner.done() {
        let pkt = tokio::time::timeout(Duration::from_secs(20), raw.io.read_raw()).await.unwrap().unwrap();
        let c = scanner.feed(&pkt);
        assert_ne!(c, Class::LocalInfile);
        out.push((pkt.seq(), pkt.payload().to_vec()));
    }
    out
}

/// Finding: a write answered with a result set (INSERT ... RETURNING) by a client
/// without CLIENT_DEPRECATE_EOF (PyMySQL, old connectors): the response ends
/// with an EOF packet, which has no session state, so baton never learns the
/// write's last_gtid: an acknowledged write that failover does not protect.
#[tokio::test]
async fn insert_returning_gtid_is_acknowledged() {
    let baton = TestBaton::start("").await;
    let mut setup = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    setup.query_drop("CREATE TABLE IF NOT EXISTS rv_ret (id INT AUTO_INCREMENT PRIMARY KEY, v INT)").await.unwrap();
    let mut failures = Vec::new();
    for (name, caps, deprecate) in [("old EOF", common::raw::CAPS & !0x100_0000, false), ("deprecate EOF", common::raw::CAPS, true)] {
        let mut raw = login_caps(baton.port, caps, "baton_test").await;
        let r = query_caps(&mut raw, "INSERT INTO rv_ret (v) VALUES (1) RETURNING id", deprecate).await;
        assert!(proto::parse_err(&r.last().unwrap().1).is_none());
        // Read the GTID on another connection path that returns no OK: a result set.
        let r = query_caps(&mut raw, "SELECT @@last_gtid", deprecate).await;
        let n = proto::Cursor::new(&r[0].1).lenenc().unwrap() as usize;
        let row = &r[1 + n + usize::from(!deprecate)].1;
        let gtid = String::from_utf8_lossy(proto::Cursor::new(row).lenenc_bytes().unwrap()).into_owned();
        if !acked_contains(&baton, &gtid) {
            failures.push(format!("{name}: INSERT ... RETURNING wrote {gtid}; acked {}", baton.running().proxy.clusters["main"].acked.position()));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Lexer classification of statements whose ERR 1290 does not prove nothing ran.
#[test]
fn lexer_refusal_proof_misses() {
    let mut wrong = Vec::new();
    for s in [
        "SET STATEMENT max_statement_time = 0 FOR BEGIN NOT ATOMIC INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); END",
        "SET STATEMENT max_statement_time = 0 FOR CALL p()",
        "SET STATEMENT max_statement_time = 0 FOR EXECUTE s",
        "SET STATEMENT max_statement_time = 0 FOR EXECUTE IMMEDIATE 'CALL p()'",
    ] {
        if baton_proxy::sql::analyse(s.as_bytes()).refusal_proves_unexecuted {
            wrong.push(s);
        }
    }
    assert!(wrong.is_empty(), "held and re-sent after ERR 1290 although earlier statements may have run: {wrong:#?}");
}

/// Finding: one session whose re-login is refused by the server (its password
/// was changed, max_user_connections, ...) starts a cluster-wide buffering
/// episode ("primary unreachable") although the primary answers: route.rs's
/// NotReady::Unavailable branch calls begin_reactive without a probe and for
/// server ERR packets too.
#[tokio::test]
async fn one_refused_relogin_starts_an_episode() {
    let socket = cluster().sockets[0].clone();
    let _ = baton_testkit::sql(&socket, "DROP USER IF EXISTS 'rv_user'@'%'");
    baton_testkit::sql(&socket, "CREATE USER 'rv_user'@'%' IDENTIFIED BY 'pw1'; GRANT ALL ON baton_test.* TO 'rv_user'@'%'").unwrap();
    let mut info = cluster();
    let relay = Relay::start(info.primary.clone()).await;
    info.primary = relay.addr.clone();
    info.servers = vec![relay.addr.clone()];
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&info, &dir.path().join("topology.json"), "") + "[[users]]\nname = \"rv_user\"\npassword = \"pw1\"\ncluster = \"main\"\n";
    let config = baton_control::Config::parse(&text).unwrap();
    let running = baton::start(config).await.unwrap();
    let port = running.mysql_addr.port();
    let gate = running.proxy.clusters["main"].gate.clone();
    let episode = gate.episode();
    let o: mysql_async::Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("rv_user"))
        .pass(Some("pw1"))
        .db_name(Some("baton_test"))
        .prefer_socket(false)
        .into();
    let mut c = Conn::new(o).await.unwrap();
    relay.cut_next.store(true, Ordering::SeqCst);
    let e = c.query_drop("SELECT 1").await.expect_err("cut");
    eprintln!("cut: {e}");
    baton_testkit::sql(&socket, "ALTER USER 'rv_user'@'%' IDENTIFIED BY 'pw2'").unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), c.query_drop("SELECT 1")).await;
    eprintln!("after the password change: {r:?}");
    let ep = gate.episode();
    let _ = baton_testkit::sql(&socket, "DROP USER IF EXISTS 'rv_user'@'%'");
    assert_eq!(ep, episode, "one session's refused login began a cluster-wide buffering episode");
}

/// A relay that cuts both directions right after forwarding the `n`-th chunk
/// of client bytes (n set by the test; 0 = never).
struct CountRelay {
    addr: String,
    cut_after: Arc<std::sync::atomic::AtomicUsize>,
}

impl CountRelay {
    async fn start(target: String) -> CountRelay {
        use std::sync::atomic::AtomicUsize;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let cut_after = Arc::new(AtomicUsize::new(0));
        let cut = cut_after.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = l.accept().await else { return };
                let target = target.clone();
                let cut = cut.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(&target).await else { return };
                    let (mut dr, mut dw) = down.split();
                    let (mut ur, mut uw) = up.split();
                    let to_server = async {
                        let mut b = vec![0u8; 1 << 16];
                        loop {
                            let n = match dr.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if uw.write_all(&b[..n]).await.is_err() {
                                return;
                            }
                            let c = cut.load(Ordering::SeqCst);
                            if c > 0 {
                                cut.store(c - 1, Ordering::SeqCst);
                                if c == 1 {
                                    return;
                                }
                            }
                        }
                    };
                    let to_client = async {
                        let mut b = vec![0u8; 1 << 16];
                        loop {
                            let n = match ur.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if dw.write_all(&b[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! { _ = to_server => {}, _ = to_client => {} }
                });
            }
        });
        CountRelay { addr, cut_after }
    }
}

/// Finding: when baton's own follow-up query (after SET NAMES: SELECT
/// @@collation_connection; after a session_track_* change: the read-back and
/// SET) loses the backend, the client has already received its complete
/// response, and then gets one more, unsolicited ERR 2013 packet (seq 1): the
/// client reads it as the answer to its next command (desync).
#[tokio::test]
async fn no_extra_packet_after_a_complete_response() {
    let mut info = cluster();
    let relay = CountRelay::start(info.primary.clone()).await;
    info.primary = relay.addr.clone();
    info.servers = vec![relay.addr.clone()];
    let baton = TestBaton::start_for(&info, "").await;
    let mut raw = Raw::login(baton.port, APP_USER, APP_PASSWORD, None).await;
    // chunk 1: the SET NAMES; chunk 2: baton's SELECT @@collation_connection.
    relay.cut_after.store(2, Ordering::SeqCst);
    let r = raw.query("SET NAMES latin1").await;
    assert_eq!(r.err(), None, "the SET NAMES itself succeeded: {:?}", r.packets);
    // Nothing more may arrive until the client sends its next command.
    let extra = tokio::time::timeout(Duration::from_secs(2), raw.io.read_raw()).await;
    if let Ok(Ok(p)) = extra {
        panic!("unsolicited packet after a complete OK: seq {} {:?}", p.seq(), proto::parse_err(p.payload()));
    }
}

/// Item 10: commands at and around the backend's max_allowed_packet: first
/// reply packet (seq, ERR code) through baton vs direct.
#[tokio::test]
async fn max_allowed_packet_boundary() {
    let baton = TestBaton::start("").await;
    let mut seen = Vec::new();
    for size in [16 * 1024 * 1024 - 1, 16 * 1024 * 1024, 16 * 1024 * 1024 + 1] {
        let mut row = Vec::new();
        for port in [baton.port, primary_port()] {
            let mut raw = Raw::login(port, APP_USER, APP_PASSWORD, None).await;
            let mut p = vec![cmd::QUERY];
            p.extend_from_slice(b"DO 1 /*");
            p.resize(size - 2, b'x');
            p.extend_from_slice(b"*/");
            assert_eq!(p.len(), size);
            raw.io.send(0, &p).await.unwrap();
            let r = tokio::time::timeout(Duration::from_secs(30), raw.io.read_raw()).await.unwrap();
            row.push(match r {
                Ok(pkt) => format!("seq {} {:?}", pkt.seq(), proto::parse_err(pkt.payload()).map(|e| e.0)),
                Err(e) => format!("closed: {e}"),
            });
        }
        seen.push((size, row));
    }
    let diff: Vec<_> = seen.iter().filter(|(_, r)| r[0] != r[1]).collect();
    assert!(diff.is_empty(), "(size, [baton, direct]): {seen:#?}");
}

/// Item 3: every OK packet byte for byte (status flags, warnings, session
/// state) through baton vs direct, for a CLIENT_SESSION_TRACK client.
#[tokio::test]
async fn ok_packets_byte_for_byte() {
    let baton = TestBaton::start("").await;
    let mut setup = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    setup.query_drop("CREATE TABLE IF NOT EXISTS rv_ok (id INT AUTO_INCREMENT PRIMARY KEY, v INT)").await.unwrap();
    let steps = [
        "SET sql_mode = 'ANSI_QUOTES'",
        "SET session_track_state_change = ON",
        "SET sql_mode = ''",
        "SET max_sort_length = 1",
        "SET NAMES latin1",
        "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
        "SET character_set_connection = latin1, max_sort_length = 2",
        "USE mysql",
        "USE baton_test",
        "SET session_track_transaction_info = CHARACTERISTICS",
        "START TRANSACTION READ ONLY",
        "COMMIT",
        "SET session_track_transaction_info = STATE",
        "BEGIN",
        "INSERT INTO rv_ok (v) VALUES (1)",
        "COMMIT",
        "SET session_track_system_variables = 'autocommit,sql_mode'",
        "SET sql_mode = 'ANSI'",
        "SET session_track_system_variables = 'nonexistent_var'",
        "SET time_zone = '+01:00'",
        "SET session_track_system_variables = DEFAULT",
        "SET time_zone = '+02:00'",
    ];
    let mut seen = Vec::new();
    for port in [baton.port, primary_port()] {
        let mut raw = Raw::login(port, APP_USER, APP_PASSWORD, Some("baton_test")).await;
        let mut out = Vec::new();
        for s in steps {
            let r = raw.query(s).await;
            let last = r.packets.last().unwrap().1.clone();
            let ok = proto::parse_ok(&last).map(|o| {
                // The server's order of entries is not fixed (a hash table's):
                // compared as a set, each entry byte for byte.
                let mut changes: Vec<String> = proto::session_changes(o.session_state)
                    .into_iter()
                    .map(|c| match c {
                        proto::StateChange::SystemVariable { name, value } => {
                            format!("{}={}", String::from_utf8_lossy(name), String::from_utf8_lossy(value))
                        }
                        proto::StateChange::Schema(s) => format!("schema={}", String::from_utf8_lossy(s)),
                        proto::StateChange::Other => "other".into(),
                    })
                    .collect();
                changes.sort();
                format!(
                    "status {:#06x} warnings {} info {:?} state {changes:?} state bytes {}",
                    o.status,
                    o.warnings,
                    String::from_utf8_lossy(o.info),
                    o.session_state.len()
                )
            });
            let w = raw.query("SHOW WARNINGS").await.packets.len();
            out.push((s, ok.unwrap_or_else(|| format!("{:?}", r.err())), format!("SHOW WARNINGS packets {w}")));
        }
        seen.push(out);
    }
    let mut diffs = Vec::new();
    for (b, d) in seen[0].iter().zip(&seen[1]) {
        if b != d {
            diffs.push(format!("{}\n  baton:  {} / {}\n  direct: {} / {}", b.0, b.1, b.2, d.1, d.2));
        }
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// Finding (gate admission vs client_gone): a held request whose waiting
/// future is dropped (the session's select! picked client_gone, or the window
/// timeout fired) after drain() sent its permit but before the future was
/// polled again: drain() already counted it `active` (enter) and `drained`; the
/// Admission is never built, so `leave` never runs: `active` stays >0 forever
/// and every later reparent waits the whole transaction grace for it.
#[tokio::test(flavor = "current_thread")]
async fn gate_active_leaks_when_a_granted_waiter_is_dropped() {
    use baton_control::gate::{BufferLimits, Gate};
    let gate = Gate::new(BufferLimits {
        window: Duration::from_secs(10),
        size: 100,
        max_failover_duration: Duration::from_secs(20),
        min_time_between_failovers: Duration::from_secs(0),
        drain_concurrency: 4,
    });
    let ep = gate.begin(1, "x", "test", true).unwrap();
    let mut fut = Box::pin(gate.admit());
    // Poll once: queued.
    assert!(futures_poll_once(fut.as_mut()).await.is_none());
    assert_eq!(gate.status().queued, 1);
    assert!(gate.release(ep, baton_control::gate::Release::ConditionsHold));
    // Let drain() run and hand the permit over.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    drop(fut); // the client went away in the same instant
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let c = &gate.counters;
    eprintln!("drained {} client_gone {}", c.drained.load(Ordering::Relaxed), c.evicted_client_gone.load(Ordering::Relaxed));
    assert_eq!(gate.active(), 0, "active leaked by a waiter dropped after its grant");
}

async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut f).poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}
