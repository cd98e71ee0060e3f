//! Hostile and broken clients: every bad input gets a clear MySQL error (code and
//! SQLSTATE) or a closed connection, never a panic, and baton keeps serving others.

mod common;

use std::time::Duration;

use common::*;
use mysql_async::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A hand-driven MySQL client for sending exactly the bytes a test wants.
struct Raw {
    s: TcpStream,
}

impl Raw {
    async fn connect(port: u16) -> Raw {
        Raw { s: TcpStream::connect(("127.0.0.1", port)).await.unwrap() }
    }

    async fn send(&mut self, seq: u8, payload: &[u8]) {
        let mut b = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        b.push(seq);
        b.extend_from_slice(payload);
        self.s.write_all(&b).await.unwrap();
    }

    /// Read one packet; None if the connection closed.
    async fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 4];
        match tokio::time::timeout(Duration::from_secs(10), self.s.read_exact(&mut h)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return None,
            Err(_) => panic!("no answer within 10 s"),
        }
        let len = h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16;
        let mut p = vec![0u8; len];
        self.s.read_exact(&mut p).await.ok()?;
        Some((h[3], p))
    }

    /// Read until an ERR packet; returns (code, sqlstate).
    async fn expect_err(&mut self) -> (u16, String) {
        let (_, p) = self.read().await.expect("an ERR packet, not a closed connection");
        assert_eq!(p[0], 0xff, "expected ERR, got {p:?}");
        (u16::from_le_bytes([p[1], p[2]]), String::from_utf8_lossy(&p[4..9]).into_owned())
    }

    async fn expect_closed(&mut self) {
        assert!(self.read().await.is_none(), "connection should be closed");
    }

    /// Read the greeting; returns the 20-byte nonce.
    async fn greeting(&mut self) -> Vec<u8> {
        let (_, g) = self.read().await.unwrap();
        assert_eq!(g[0], 10);
        let nul = g.iter().skip(1).position(|&b| b == 0).unwrap() + 1;
        let rest = &g[nul + 1..];
        let mut nonce = rest[4..12].to_vec();
        nonce.extend_from_slice(&rest[31..43]);
        nonce
    }

    fn response(user: &str, password: &str, nonce: &[u8]) -> Vec<u8> {
        let caps: u32 = 0x0200 | 0x8000 | 0x2000 | 0x0002_0000 | 0x0008_0000 | 0x0001_0000;
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0u8; 23]);
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        let proof = mysql_common::scramble::scramble_native(nonce, password.as_bytes()).unwrap_or([0; 20]);
        p.push(20);
        p.extend_from_slice(&proof);
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    /// Connect and log in as app; panics unless OK.
    async fn login(port: u16) -> Raw {
        let mut r = Raw::connect(port).await;
        let nonce = r.greeting().await;
        r.send(1, &Raw::response(APP_USER, APP_PASSWORD, &nonce)).await;
        let (_, ok) = r.read().await.unwrap();
        assert_eq!(ok[0], 0, "login failed: {ok:?}");
        r
    }

    /// COM_QUERY and read the first packet of the response.
    async fn query_first(&mut self, sql: &str) -> Vec<u8> {
        let mut p = vec![0x03];
        p.extend_from_slice(sql.as_bytes());
        self.send(0, &p).await;
        self.read().await.unwrap().1
    }
}

async fn still_serving(port: u16) {
    let mut c = mysql_async::Conn::new(opts(port, None)).await.expect("baton still accepts sessions");
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn handshake_abuse_gets_clear_errors() {
    let baton = TestBaton::start("handshake_timeout_ms = 500").await;
    let port = baton.port;

    // Bytes before the handshake (an HTTP request sent blindly).
    let mut r = Raw::connect(port).await;
    r.s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    r.greeting().await;
    assert_eq!(r.expect_err().await, (1043, "08S01".into()));
    r.expect_closed().await;

    // A truncated handshake response: too short to parse.
    let mut r = Raw::connect(port).await;
    r.greeting().await;
    r.send(1, &[0x00, 0x02, 0x00]).await;
    assert_eq!(r.expect_err().await, (1043, "08S01".into()));

    // A half-sent packet, then the client goes away: nothing to answer, no panic.
    let mut r = Raw::connect(port).await;
    r.greeting().await;
    r.s.write_all(&[100, 0, 0, 1, 1, 2, 3]).await.unwrap();
    drop(r);

    // Wrong sequence id.
    let mut r = Raw::connect(port).await;
    let nonce = r.greeting().await;
    r.send(7, &Raw::response(APP_USER, APP_PASSWORD, &nonce)).await;
    assert_eq!(r.expect_err().await, (1156, "08S01".into()));

    // Unknown user and wrong password: 1045 (28000).
    for (user, pw) in [("nobody", "x"), (APP_USER, "wrong"), (APP_USER, "")] {
        let mut r = Raw::connect(port).await;
        let nonce = r.greeting().await;
        r.send(1, &Raw::response(user, pw, &nonce)).await;
        assert_eq!(r.expect_err().await, (1045, "28000".into()), "{user}/{pw}");
        r.expect_closed().await;
    }

    // Silence: the handshake times out with an error.
    let mut r = Raw::connect(port).await;
    r.greeting().await;
    assert_eq!(r.expect_err().await, (1043, "08S01".into()));
    r.expect_closed().await;

    still_serving(port).await;
}

#[tokio::test]
async fn command_abuse_gets_clear_errors() {
    let baton = TestBaton::start("max_allowed_packet = 4096").await;
    let port = baton.port;

    // Empty command, unknown commands, malformed and unknown statement ids: ERR, session lives.
    let mut r = Raw::login(port).await;
    r.send(0, &[]).await;
    assert_eq!(r.expect_err().await, (1835, "HY000".into()));
    for cmd in [0x12u8, 0x42, 0x08, 0xff] {
        r.send(0, &[cmd, 1, 2, 3]).await;
        assert_eq!(r.expect_err().await, (1047, "08S01".into()), "command {cmd:#x}");
    }
    r.send(0, &[0x17, 1]).await;
    assert_eq!(r.expect_err().await, (1835, "HY000".into()));
    r.send(0, &[0x17, 99, 0, 0, 0, 0, 1, 0, 0, 0]).await;
    assert_eq!(r.expect_err().await, (1243, "HY000".into()));
    r.send(0, &[0x19, 99, 0, 0, 0]).await; // close of an unknown id: no answer, as MySQL
    let p = r.query_first("SELECT 1").await;
    assert_eq!(p, vec![1], "a one-column result set follows");

    // Wrong sequence id on a command: ERR 1156 and the session closes.
    let mut r = Raw::login(port).await;
    r.send(3, b"\x03SELECT 1").await;
    assert_eq!(r.expect_err().await, (1156, "08S01".into()));
    r.expect_closed().await;

    // A packet over max_allowed_packet: ERR 1153 and the session closes.
    let mut r = Raw::login(port).await;
    let mut big = vec![0x03];
    big.extend(std::iter::repeat_n(b' ', 5000));
    r.send(0, &big).await;
    assert_eq!(r.expect_err().await, (1153, "08S01".into()));
    r.expect_closed().await;

    // A truncated command, then the client vanishes.
    let mut r = Raw::login(port).await;
    r.s.write_all(&[200, 0, 0, 0, 0x03, b'S']).await.unwrap();
    drop(r);

    // Random garbage after login, many times over: never a panic.
    let mut seed = 0x2545F4914F6CDD1Du64;
    for _ in 0..200 {
        let mut r = Raw::login(port).await;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 64) as usize;
        let bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
        let _ = r.s.write_all(&bytes).await;
        drop(r);
    }
    still_serving(port).await;
}

#[tokio::test]
async fn backend_down_is_a_clear_error_and_others_keep_working() {
    let info = cluster();
    let dead = format!("127.0.0.1:{}", baton_testkit::free_port());
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[[clusters]]\nname = \"dead\"\nservers = [{dead:?}]\nprimary = {dead:?}\n",
        config_text(&info, &dir.path().join("topology.json"), "")
    )
    .replace("name = \"admin\"\npassword = \"admin\"", "name = \"admin\"\npassword = \"admin\"\ncluster = \"dead\"");
    let config = baton_control::Config::parse(&text).unwrap();
    let running = baton::start(config).await.unwrap();
    let port = running.mysql_addr.port();

    let opts =
        mysql_async::OptsBuilder::default().ip_or_hostname("127.0.0.1").tcp_port(port).user(Some("admin")).pass(Some("admin")).prefer_socket(false);
    match mysql_async::Conn::new(opts).await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 9107);
            assert!(e.message.contains("dead") && e.message.contains(&dead), "{}", e.message);
        }
        other => panic!("expected ERR 9107, got {other:?}"),
    }
    still_serving(port).await;
    running.shutdown(Some(Duration::from_millis(100))).await;
}

#[tokio::test]
async fn connection_limit_and_graceful_shutdown() {
    let mut baton = TestBaton::start("max_connections = 2").await;
    let port = baton.port;
    let mut a = mysql_async::Conn::new(opts(port, None)).await.unwrap();
    let _b = mysql_async::Conn::new(opts(port, None)).await.unwrap();
    match mysql_async::Conn::new(opts(port, None)).await {
        // Sent in place of the greeting, before capabilities are agreed, so the client
        // reads no SQLSTATE (as with a MariaDB server at its limit).
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1040),
        other => panic!("expected ERR 1040, got {other:?}"),
    }

    // Shutdown: stop accepting; idle sessions are closed with ERR 1053 after the grace period.
    let running = baton.running.take().unwrap();
    let shut = tokio::spawn(running.shutdown(Some(Duration::from_millis(300))));
    wait_for("listener closed", Duration::from_secs(5), || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()).await;
    shut.await.unwrap();
    let e = a.query_drop("SELECT 1").await.unwrap_err();
    match e {
        mysql_async::Error::Server(s) => assert_eq!(s.code, 1053),
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn other_plugins_are_switched_to_native_password() {
    let baton = TestBaton::start("").await;
    let mut r = Raw::connect(baton.port).await;
    let nonce = r.greeting().await;
    // A client starting with caching_sha2_password (as MySQL 8 clients do).
    let mut p = Raw::response(APP_USER, APP_PASSWORD, &nonce);
    let at = p.len() - b"mysql_native_password\0".len();
    p.truncate(at - 21);
    p.push(32);
    p.extend_from_slice(&[7u8; 32]);
    p.extend_from_slice(b"caching_sha2_password\0");
    r.send(1, &p).await;
    let (seq, switch) = r.read().await.unwrap();
    assert_eq!((seq, switch[0]), (2, 0xfe), "an auth switch request");
    assert!(switch.starts_with(b"\xfemysql_native_password\0"));
    let new_nonce = &switch[23..43];
    let proof = mysql_common::scramble::scramble_native(new_nonce, APP_PASSWORD.as_bytes()).unwrap();
    r.send(3, &proof).await;
    let (seq, ok) = r.read().await.unwrap();
    assert_eq!((seq, ok[0]), (4, 0x00), "logged in: {ok:?}");
}

#[tokio::test]
async fn simple_commands_are_relayed() {
    let baton = TestBaton::start("").await;
    let mut r = Raw::login(baton.port).await;
    r.send(0, &[0x0e]).await; // COM_PING
    assert_eq!(r.read().await.unwrap().1[0], 0x00);
    r.send(0, b"\x02baton_test").await; // COM_INIT_DB
    assert_eq!(r.read().await.unwrap().1[0], 0x00);
    r.send(0, b"\x02no_such_db").await;
    assert_eq!(r.expect_err().await, (1049, "42000".into()));
    r.send(0, &[0x09]).await; // COM_STATISTICS: one text packet
    let (_, stats) = r.read().await.unwrap();
    assert!(String::from_utf8_lossy(&stats).contains("Uptime"), "{stats:?}");
    r.send(0, &[0x1b, 1, 0]).await; // COM_SET_OPTION multi-statements off: EOF
    assert_eq!(r.read().await.unwrap().1[0], 0xfe);
    // COM_FIELD_LIST: column definitions, then EOF.
    let p = r.query_first("CREATE TABLE IF NOT EXISTS fl_t (a INT, b TEXT)").await;
    assert_eq!(p[0], 0x00);
    r.send(0, b"\x04fl_t\x00").await;
    let mut defs = 0;
    loop {
        let (_, p) = r.read().await.unwrap();
        if p[0] == 0xfe && p.len() < 9 {
            break;
        }
        assert_ne!(p[0], 0xff, "field list failed: {p:?}");
        defs += 1;
    }
    assert_eq!(defs, 2);
    // The session is in sync afterwards.
    assert_eq!(r.query_first("SELECT 1").await, vec![1]);
}
