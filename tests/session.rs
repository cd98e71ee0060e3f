//! Session fidelity on one primary (no reparent): each failing input of the
//! session-fidelity issue, run through baton and, where the server has an
//! answer, directly against the primary, and the two compared.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use baton_control::gate::{GateError, Phase};
use baton_proxy::proto::cmd;
use baton_proxy::relay::Expect;
use common::raw::Raw;
use common::relay::*;
use common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;

fn is_server_error(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// Item 1: the handshake's id is CONNECTION_ID(); `KILL QUERY <that id>` from
/// another session interrupts exactly that session's query (baton and direct).
#[tokio::test]
async fn connection_id_is_the_thread_and_kill_reaches_it() {
    let baton = TestBaton::start("").await;
    let mut outcomes = Vec::new();
    for port in [baton.port, primary_port()] {
        let mut a = Conn::new(opts(port, None)).await.unwrap();
        let mut bystander = Conn::new(opts(port, None)).await.unwrap();
        let id: u32 = a.query_first("SELECT CONNECTION_ID()").await.unwrap().unwrap();
        assert_eq!(id, a.id(), "port {port}: handshake id vs CONNECTION_ID()");
        let killer = opts(port, None);
        let a_id = a.id();
        let kill = tokio::spawn(async move {
            let mut k = Conn::new(killer).await.unwrap();
            // Wait until the query runs, then kill it.
            loop {
                let state: Option<String> =
                    k.query_first(format!("SELECT INFO FROM information_schema.PROCESSLIST WHERE ID = {a_id}")).await.unwrap();
                if state.is_some_and(|s| s.contains("SLEEP")) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            k.query_drop(format!("KILL QUERY {a_id}")).await.unwrap();
        });
        let started = Instant::now();
        let r: Result<Option<u32>, _> = a.query_first("SELECT SLEEP(20)").await;
        kill.await.unwrap();
        let outcome = match r {
            Ok(v) => format!("value {v:?}"),
            Err(e) => format!("error {:?}", is_server_error(&e)),
        };
        outcomes.push(outcome);
        assert!(started.elapsed() < Duration::from_secs(15), "port {port}: interrupted");
        // The killed query's session and the bystander both live on.
        let one: u32 = a.query_first("SELECT 1").await.unwrap().unwrap();
        assert_eq!(one, 1);
        let one: u32 = bystander.query_first("SELECT 1").await.unwrap().unwrap();
        assert_eq!(one, 1);
        // COM_PROCESS_KILL with the id ends that connection only.
        let mut raw = Raw::login(port, APP_USER, APP_PASSWORD, None).await;
        let mut p = vec![cmd::PROCESS_KILL];
        p.extend_from_slice(&a.id().to_le_bytes());
        let r = raw.command(&p, Expect::Single).await;
        assert_eq!(r.err(), None, "port {port}: COM_PROCESS_KILL");
        assert!(a.query_drop("SELECT 1").await.is_err(), "port {port}: killed connection");
        let one: u32 = bystander.query_first("SELECT 1").await.unwrap().unwrap();
        assert_eq!(one, 1);
    }
    assert_eq!(outcomes[0], "error Some(1317)", "the killed query through baton");
    assert_eq!(outcomes[0], outcomes[1], "baton vs the server");
}

/// Item 2: a backend its server closed while idle: the client's connection is
/// closed, as directly (no 9105), and no buffering episode begins.
#[tokio::test]
async fn backend_closed_while_idle_closes_the_client_without_an_episode() {
    let baton = TestBaton::start("").await;
    let gate = baton.running().proxy.clusters["main"].gate.clone();
    let episode = gate.episode();
    for port in [baton.port, primary_port()] {
        // wait_timeout
        let mut a = Conn::new(opts(port, None)).await.unwrap();
        a.query_drop("SET SESSION wait_timeout = 1").await.unwrap();
        wait_gone(a.id()).await;
        let e = a.query_drop("SELECT 1").await.expect_err("the server closed it");
        assert_eq!(is_server_error(&e), None, "port {port}: a connection error, not {e}");
        // KILL CONNECTION from another session
        let mut b = Conn::new(opts(port, None)).await.unwrap();
        let mut k = Conn::new(opts(port, None)).await.unwrap();
        k.query_drop(format!("KILL CONNECTION {}", b.id())).await.unwrap();
        wait_gone(b.id()).await;
        let e = b.query_drop("SELECT 1").await.expect_err("killed");
        assert_eq!(is_server_error(&e), None, "port {port}: a connection error, not {e}");
    }
    assert_eq!(gate.episode(), episode, "no buffering episode for one session's lost backend");
    assert_eq!(gate.phase(), Phase::Idle);
}

/// Wait until thread `id` is gone from the primary's process list.
async fn wait_gone(id: u32) {
    let mut admin = Conn::new(opts(primary_port(), None)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: u32 = admin.query_first(format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {id}")).await.unwrap().unwrap();
        if n == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "thread {id} still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Item 3: the session tracking a client sets is what it receives (compared
/// with the server), and baton still learns each write's GTID.
#[tokio::test]
async fn session_tracking_is_the_clients_and_gtids_still_flow() {
    let baton = TestBaton::start("").await;
    let mut setup = Conn::new(opts(baton.port, Some("baton_test"))).await.unwrap();
    setup.query_drop("CREATE TABLE IF NOT EXISTS st_rows (id INT AUTO_INCREMENT PRIMARY KEY, v INT)").await.unwrap();
    let steps = [
        "SET time_zone = '+01:00'",
        "INSERT INTO st_rows (v) VALUES (1)",
        "SET session_track_system_variables = 'autocommit'",
        "SET time_zone = '+02:00'",
        "SET autocommit = 0",
        "SET autocommit = 1",
        "INSERT INTO st_rows (v) VALUES (2)",
        "USE mysql",
        "SET session_track_schema = OFF",
        "USE baton_test",
        "SET session_track_system_variables = 'last_gtid,time_zone'",
        "INSERT INTO st_rows (v) VALUES (3)",
        "SET session_track_system_variables = '*'",
        "SET sql_mode = 'ANSI_QUOTES'",
    ];
    let mut seen = Vec::new();
    for port in [baton.port, primary_port()] {
        let mut raw = Raw::login(port, APP_USER, APP_PASSWORD, Some("baton_test")).await;
        let mut changes = Vec::new();
        for s in steps {
            let r = raw.query(s).await;
            assert_eq!(r.err(), None, "{s}");
            // Entries as a set: the server's order is a hash table's, not fixed.
            let mut c: Vec<String> =
                r.state_changes().into_iter().map(|c| if c.starts_with("last_gtid=") { "last_gtid=*".into() } else { c }).collect();
            c.sort();
            changes.push((s, c));
        }
        seen.push(changes);
    }
    for (b, d) in seen[0].iter().zip(&seen[1]) {
        assert_eq!(b, d, "session state through baton vs direct");
    }
    // GTIDs keep flowing while the client tracks only autocommit.
    let acked = &baton.running().proxy.clusters["main"].acked;
    let mut c = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    c.query_drop("SET session_track_system_variables = 'autocommit', session_track_schema = OFF").await.unwrap();
    let before = acked.position();
    c.query_drop("INSERT INTO st_rows (v) VALUES (4)").await.unwrap();
    let gtid: String = c.query_first("SELECT @@last_gtid").await.unwrap().unwrap();
    assert_ne!(acked.position(), before);
    assert!(baton_control::gtid::contains(&acked.position(), &gtid).is_ok(), "{gtid} acknowledged");
}

/// Item 5: COM_CHANGE_USER with a collation over 255 (608, utf8mb4_croatian_ci)
/// keeps it, and the thread id, as the server does.
#[tokio::test]
async fn change_user_keeps_a_two_byte_collation_and_the_thread() {
    let baton = TestBaton::start("").await;
    let mut seen = Vec::new();
    for port in [baton.port, primary_port()] {
        let mut raw = Raw::login(port, APP_USER, APP_PASSWORD, None).await;
        let mut p = vec![cmd::CHANGE_USER];
        p.extend_from_slice(APP_USER.as_bytes());
        p.push(0);
        let proof = mysql_common::scramble::scramble_native(&raw.nonce, APP_PASSWORD.as_bytes()).unwrap();
        p.push(20);
        p.extend_from_slice(&proof);
        p.extend_from_slice(b"baton_test\0");
        p.extend_from_slice(&608u16.to_le_bytes());
        p.extend_from_slice(b"mysql_native_password\0");
        let mut r = raw.command(&p, Expect::Single).await;
        if r.packets[0].1[0] == 0xfe {
            // Auth switch: plugin NUL nonce; answer with a proof for the new nonce.
            let body = &r.packets[0].1[1..];
            let nul = body.iter().position(|&b| b == 0).unwrap();
            let nonce = &body[nul + 1..body.len().min(nul + 21)];
            let proof = mysql_common::scramble::scramble_native(nonce, APP_PASSWORD.as_bytes()).unwrap();
            raw.io.send(r.packets[0].0 + 1, &proof).await.unwrap();
            r = raw.response(Expect::Single).await;
        }
        assert_eq!(r.err(), None, "port {port}: change user");
        let coll = raw.query("SELECT @@collation_connection").await.first_column();
        let id = raw.query("SELECT CONNECTION_ID()").await.first_column();
        assert_eq!(id, vec![raw.id.to_string()], "port {port}: same thread after COM_CHANGE_USER");
        seen.push(coll);
    }
    assert_eq!(seen[0], vec!["utf8mb4_croatian_ci".to_string()]);
    assert_eq!(seen[0], seen[1]);
}

/// Item 10: a command the server accepts works through baton, and baton's own
/// error after a multi-packet command carries the next sequence id.
#[tokio::test]
async fn large_commands_and_sequence_ids() {
    let socket = cluster().sockets[0].clone();
    baton_testkit::sql(&socket, "SET GLOBAL max_allowed_packet = 67108864").unwrap();
    let baton = TestBaton::start("").await;
    let mut seen = Vec::new();
    for port in [baton.port, primary_port()] {
        let mut c = Conn::new(opts(port, Some("baton_test"))).await.unwrap();
        c.query_drop("CREATE TABLE IF NOT EXISTS big_rows (id INT PRIMARY KEY, b LONGBLOB)").await.unwrap();
        let id = i32::from(port == baton.port);
        c.exec_drop("REPLACE INTO big_rows VALUES (?, ?)", (id, vec![7u8; 20 << 20])).await.unwrap();
        let len: u64 = c.query_first(format!("SELECT LENGTH(b) FROM big_rows WHERE id = {id}")).await.unwrap().unwrap();
        assert_eq!(len, 20 << 20);
        // COM_STMT_EXECUTE of an unknown statement, 17 MiB: two packets (0, 1).
        let mut raw = Raw::login(port, APP_USER, APP_PASSWORD, None).await;
        let mut p = vec![cmd::STMT_EXECUTE];
        p.extend_from_slice(&999u32.to_le_bytes());
        p.resize(17 << 20, 0);
        let r = raw.command(&p, Expect::Single).await;
        seen.push((r.packets[0].0, r.err().map(|e| e.0)));
    }
    baton_testkit::sql(&socket, "SET GLOBAL max_allowed_packet = 16777216").unwrap();
    assert_eq!(seen[0], (2, Some(1243)), "baton's reply");
    assert_eq!(seen[0], seen[1], "baton vs the server");
}

/// Items 8, 11, 12 while the cluster buffers: COM_STMT_SEND_LONG_DATA is never
/// answered (its error comes with COM_STMT_EXECUTE); a client that hangs up is
/// removed and its statement never runs (counted as client_gone); COM_PING and
/// COM_STATISTICS are answered at once.
#[tokio::test]
async fn commands_while_buffering() {
    let baton = TestBaton::start("").await;
    let handle = baton.running().proxy.clusters["main"].clone();
    let gate = handle.gate.clone();
    let mut c = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    c.query_drop("CREATE TABLE IF NOT EXISTS gone_rows (tag VARCHAR(40) PRIMARY KEY)").await.unwrap();
    let mut raw = Raw::login(baton.port, APP_USER, APP_PASSWORD, Some("baton_test")).await;
    let stmt = raw.prepare("SELECT ?").await;
    let mut pinger = Conn::new(baton.opts(None)).await.unwrap();
    let mut quitter = Raw::login(baton.port, APP_USER, APP_PASSWORD, Some("baton_test")).await;
    let (primary, term) = baton.running().proxy.primary_of("main").unwrap();
    let episode = gate.begin(term, &primary, "test", false).expect("buffering");

    // 12: ping and statistics at once.
    tokio::time::timeout(Duration::from_secs(2), pinger.ping()).await.expect("answered at once").unwrap();
    let stats = raw.command(&[cmd::STATISTICS], Expect::Single).await;
    assert!(String::from_utf8_lossy(&stats.packets[0].1).starts_with("Uptime: "));

    // 11: a held INSERT whose client hangs up.
    let gone_before = gate.counters.evicted_client_gone.load(Ordering::Relaxed);
    let queued = gate.status().queued;
    quitter.io.send(0, &[&[cmd::QUERY][..], b"INSERT INTO gone_rows VALUES ('client-gone')"].concat()).await.unwrap();
    wait_for("the insert held", Duration::from_secs(5), || gate.status().queued > queued).await;
    drop(quitter);
    wait_for("client_gone counted", Duration::from_secs(5), || gate.counters.evicted_client_gone.load(Ordering::Relaxed) > gone_before).await;

    // 8: long data held, then the episode fails: no reply to it.
    let mut ld = vec![cmd::STMT_SEND_LONG_DATA];
    ld.extend_from_slice(&stmt.to_le_bytes());
    ld.extend_from_slice(&0u16.to_le_bytes());
    ld.extend_from_slice(b"data");
    let queued = gate.status().queued;
    raw.io.send(0, &ld).await.unwrap();
    wait_for("the long data held", Duration::from_secs(5), || gate.status().queued > queued).await;
    gate.fail(episode, GateError::MaxDuration);
    assert!(raw.silent_for(Duration::from_millis(300)).await, "no reply to COM_STMT_SEND_LONG_DATA");
    let r = raw.execute(stmt, 0).await;
    assert_eq!(r.err().map(|e| e.0), Some(9104), "the long data's error, on execute");
    let r = raw.command(&[cmd::PING], Expect::Single).await;
    assert_eq!((r.packets[0].0, r.packets[0].1[0]), (1, 0), "the next reply is in step");
    let n: u32 = c.query_first("SELECT COUNT(*) FROM gone_rows WHERE tag = 'client-gone'").await.unwrap().unwrap();
    assert_eq!(n, 0, "a held statement whose client left never runs");
}

/// Items 2 and 6, primary gone: a statement cut after it reached the server,
/// while the primary does not answer a fresh connection, gets the outcome it may
/// have had: 9105 for anything that can commit (autocommit statements, COMMIT in
/// any spelling, a multi-statement with COMMIT, `SET autocommit=1`, DDL), 9101
/// only for what cannot end a transaction; and buffering begins.
#[tokio::test]
async fn cut_statements_get_the_outcome_they_may_have_had() {
    let mut info = cluster();
    let relay = Relay::start(info.primary.clone()).await;
    info.primary = relay.addr.clone();
    info.servers = vec![relay.addr.clone()];
    // Each case begins an episode: no minimum gap between them.
    let baton = TestBaton::start_for(&info, "[buffer]\nmin_time_between_failovers_ms = 0\n").await;
    let gate = baton.running().proxy.clusters["main"].gate.clone();
    let mut setup = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    setup.query_drop("CREATE TABLE IF NOT EXISTS cut_rows (id INT AUTO_INCREMENT PRIMARY KEY, v INT)").await.unwrap();
    let cases: &[(&[&str], &str, u16)] = &[
        (&[], "INSERT INTO cut_rows (v) VALUES (1)", 9105),
        (&["BEGIN", "INSERT INTO cut_rows (v) VALUES (2)"], "INSERT INTO cut_rows (v) VALUES (3)", 9101),
        (&["BEGIN", "INSERT INTO cut_rows (v) VALUES (4)"], "/*x*/ COMMIT", 9105),
        (&["BEGIN", "INSERT INTO cut_rows (v) VALUES (5)"], "INSERT INTO cut_rows (v) VALUES (6); COMMIT", 9105),
        (&["SET autocommit = 0", "INSERT INTO cut_rows (v) VALUES (7)"], "SET autocommit = 1", 9105),
        (&["BEGIN", "INSERT INTO cut_rows (v) VALUES (8)"], "CREATE TABLE IF NOT EXISTS cut_ddl (a INT)", 9105),
    ];
    for (before, cut, code) in cases {
        let mut c = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
        for s in *before {
            c.query_drop(*s).await.unwrap();
        }
        let episode = gate.episode();
        relay.mode.store(DOWN, Ordering::SeqCst);
        relay.cut_next.store(true, Ordering::SeqCst);
        let e = c.query_drop(*cut).await.expect_err("cut");
        assert_eq!(is_server_error(&e), Some(*code), "{cut}: {e}");
        assert!(gate.episode() > episode, "{cut}: the probe failed, so buffering began");
        relay.mode.store(NORMAL, Ordering::SeqCst);
        gate.fail(gate.episode(), GateError::MaxDuration);
    }
}

/// Items 1 and 2, primary alive: a backend closed while its statement ran
/// (`KILL CONNECTION` from another session; a cut link) closes the client's
/// connection, as the server's own closing does, and begins no buffering.
#[tokio::test]
async fn a_backend_closed_midway_closes_the_client_as_the_server_does() {
    let mut info = cluster();
    let relay = Relay::start(info.primary.clone()).await;
    info.primary = relay.addr.clone();
    info.servers = vec![relay.addr.clone()];
    let baton = TestBaton::start_for(&info, "").await;
    let gate = baton.running().proxy.clusters["main"].gate.clone();
    let episode = gate.episode();
    let mut c = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    relay.cut_next.store(true, Ordering::SeqCst);
    let e = c.query_drop("DO 1").await.expect_err("cut");
    assert_eq!(is_server_error(&e), None, "a connection error, not {e}");
    // KILL CONNECTION of a busy session, through baton and directly.
    let mut outcomes = Vec::new();
    for port in [baton.port, primary_port()] {
        let mut a = Conn::new(opts(port, None)).await.unwrap();
        let a_id = a.id();
        let killer = opts(port, None);
        let kill = tokio::spawn(async move {
            let mut k = Conn::new(killer).await.unwrap();
            loop {
                let info: Option<String> = k.query_first(format!("SELECT INFO FROM information_schema.PROCESSLIST WHERE ID = {a_id}")).await.unwrap();
                if info.is_some_and(|s| s.contains("SLEEP")) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            k.query_drop(format!("KILL CONNECTION {a_id}")).await.unwrap();
        });
        let r = a.query_drop("SELECT SLEEP(20)").await;
        kill.await.unwrap();
        let first = r.err().map(|e| is_server_error(&e));
        let next = a.query_drop("SELECT 1").await.err().map(|e| is_server_error(&e));
        outcomes.push((first, next));
    }
    assert_eq!(outcomes[0], outcomes[1], "KILL CONNECTION mid-query: baton vs direct");
    assert!(matches!(outcomes[0].1, Some(None)), "the killed session's connection is closed: {:?}", outcomes[0]);
    assert_eq!(gate.episode(), episode, "the primary answered a fresh probe: no episode");
}

/// A client without CLIENT_DEPRECATE_EOF (PyMySQL, older connectors) gets the
/// server's own packets, sequence ids included, for every response shape: baton
/// asks its backends for CLIENT_DEPRECATE_EOF (so writes answered with rows,
/// `INSERT ... RETURNING`, carry their GTID) and writes the EOFs back in.
#[tokio::test]
async fn old_eof_clients_get_the_servers_packets() {
    let baton = TestBaton::start("").await;
    let mut setup = Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    setup.query_drop("CREATE TABLE IF NOT EXISTS eof_rows (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(10))").await.unwrap();
    let caps = common::raw::CAPS & !0x100_0000;
    let mut seen = Vec::new();
    for port in [baton.port, primary_port()] {
        let mut raw = Raw::login_with(port, APP_USER, APP_PASSWORD, Some("baton_test"), caps).await;
        let mut out = Vec::new();
        let mut keep = |what: &str, r: common::raw::Response| {
            out.push((what.to_string(), r.packets.iter().map(|(s, p)| (*s, p.clone())).collect::<Vec<_>>()));
        };
        keep("select", raw.query("SELECT 1 AS a, 'x' AS b UNION SELECT 2, 'y'").await);
        keep("empty", raw.query("SELECT * FROM eof_rows WHERE id < 0").await);
        keep("multi", raw.query("SELECT 1; SELECT 2, 3; DO 1").await);
        keep("error", raw.query("SELECT * FROM no_such_table").await);
        let r = raw.query("INSERT INTO eof_rows (v) VALUES ('r') RETURNING v").await;
        keep("returning", r);
        let mut p = vec![cmd::FIELD_LIST];
        p.extend_from_slice(b"eof_rows\0");
        keep("field list", raw.command(&p, Expect::Rows).await);
        keep("set option", raw.command(&[cmd::SET_OPTION, 1, 0], Expect::Single).await);
        let mut prep = vec![cmd::STMT_PREPARE];
        prep.extend_from_slice(b"SELECT seq, ? FROM seq_1_to_5 WHERE seq > ?");
        let r = raw.command(&prep, Expect::Prepare).await;
        let id = u32::from_le_bytes(r.packets[0].1[1..5].try_into().unwrap());
        let mut masked = r;
        masked.packets[0].1[1..5].copy_from_slice(&[0; 4]); // ids are per connection
        keep("prepare", masked);
        let mut exec = vec![cmd::STMT_EXECUTE];
        exec.extend_from_slice(&id.to_le_bytes());
        exec.push(0);
        exec.extend_from_slice(&1u32.to_le_bytes());
        exec.push(0); // null bitmap for 2 params
        exec.push(1); // new params bound
        exec.extend_from_slice(&[8, 0, 8, 0]); // LONGLONG, LONGLONG
        exec.extend_from_slice(&7i64.to_le_bytes());
        exec.extend_from_slice(&2i64.to_le_bytes());
        keep("execute", raw.command(&exec, Expect::ResultSet).await);
        let mut cursor = exec.clone();
        cursor[5] = 1; // CURSOR_TYPE_READ_ONLY
        keep("execute with cursor", raw.command(&cursor, Expect::ResultSet).await);
        let mut fetch = vec![cmd::STMT_FETCH];
        fetch.extend_from_slice(&id.to_le_bytes());
        fetch.extend_from_slice(&2u32.to_le_bytes());
        keep("fetch 2", raw.command(&fetch, Expect::Rows).await);
        keep("fetch rest", raw.command(&fetch, Expect::Rows).await);
        seen.push(out);
    }
    for (b, d) in seen[0].iter().zip(&seen[1]) {
        assert_eq!(b, d, "{}: through baton vs direct", b.0);
    }
}
