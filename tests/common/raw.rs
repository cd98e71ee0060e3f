//! A raw-protocol client for tests that must see exactly what a client library
//! hides: sequence ids, OK packets' session-state entries, commands a library
//! never sends (COM_PROCESS_KILL, COM_CHANGE_USER with a two-byte collation,
//! statement id 0xFFFFFFFF). Responses are framed with baton's own scanner.
#![allow(dead_code)]

use std::time::Duration;

use baton_proxy::packet::{PacketIo, RawPacket};
use baton_proxy::proto::{self, StateChange};
use baton_proxy::relay::{Class, Expect, Scanner};
use tokio::net::TcpStream;

/// Capabilities: LONG_FLAG, CONNECT_WITH_DB, PROTOCOL_41, TRANSACTIONS,
/// SECURE_CONNECTION, MULTI_STATEMENTS, MULTI_RESULTS, PS_MULTI_RESULTS,
/// PLUGIN_AUTH, SESSION_TRACK, DEPRECATE_EOF.
pub const CAPS: u32 = 0x4 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x1_0000 | 0x2_0000 | 0x4_0000 | 0x8_0000 | 0x80_0000 | 0x100_0000;

pub struct Raw {
    pub io: PacketIo<TcpStream>,
    /// Whether CLIENT_DEPRECATE_EOF was asked for (how responses are framed).
    pub deprecate_eof: bool,
    /// The connection id from the greeting.
    pub id: u32,
    pub nonce: Vec<u8>,
}

/// One response: its packets as (sequence id, payload).
#[derive(Debug)]
pub struct Response {
    pub packets: Vec<(u8, Vec<u8>)>,
}

impl Response {
    pub fn err(&self) -> Option<(u16, String)> {
        let p = &self.packets.last()?.1;
        proto::parse_err(p).map(|(c, s, _)| (c, s))
    }
    /// The session-state entries of every OK packet, decoded.
    pub fn state_changes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (_, p) in &self.packets {
            if let Some(ok) = proto::parse_ok(p) {
                for c in proto::session_changes(ok.session_state) {
                    out.push(match c {
                        StateChange::SystemVariable { name, value } => {
                            format!("{}={}", String::from_utf8_lossy(name), String::from_utf8_lossy(value))
                        }
                        StateChange::Schema(s) => format!("schema={}", String::from_utf8_lossy(s)),
                        StateChange::Other => "other".into(),
                    });
                }
            }
        }
        out
    }
    /// The first column of each text-protocol row, as strings ("NULL" for NULL).
    pub fn first_column(&self) -> Vec<String> {
        // column count, column defs, then rows up to the terminator.
        let Some((_, first)) = self.packets.first() else { return vec![] };
        let n = proto::Cursor::new(first).lenenc().unwrap_or(0) as usize;
        self.packets
            .iter()
            .skip(1 + n)
            .filter(|(_, p)| p.first() != Some(&0xfe) && p.first() != Some(&0xff))
            .map(|(_, p)| {
                if p.first() == Some(&0xfb) {
                    "NULL".into()
                } else {
                    String::from_utf8_lossy(proto::Cursor::new(p).lenenc_bytes().unwrap_or_default()).into_owned()
                }
            })
            .collect()
    }
}

impl Raw {
    /// Connect to 127.0.0.1:port and log in as user/password (native password).
    pub async fn login(port: u16, user: &str, password: &str, db: Option<&str>) -> Raw {
        Self::login_with(port, user, password, db, CAPS).await
    }

    /// Log in with these capability flags.
    pub async fn login_with(port: u16, user: &str, password: &str, db: Option<&str>, caps: u32) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut io = PacketIo::new(s);
        let (_, _, g) = io.read_logical(1 << 16).await.unwrap();
        assert_eq!(g[0], 10, "greeting");
        let nul = g.iter().skip(1).position(|&b| b == 0).unwrap() + 1;
        let rest = &g[nul + 1..];
        let id = u32::from_le_bytes(rest[..4].try_into().unwrap());
        let mut nonce = rest[4..12].to_vec();
        nonce.extend_from_slice(&rest[31..43]);
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&(1u32 << 30).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0u8; 23]);
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        let proof = mysql_common::scramble::scramble_native(&nonce, password.as_bytes()).unwrap_or([0; 20]);
        p.push(20);
        p.extend_from_slice(&proof);
        p.extend_from_slice(db.unwrap_or("").as_bytes());
        p.push(0);
        p.extend_from_slice(b"mysql_native_password\0");
        io.send(1, &p).await.unwrap();
        let (_, _, r) = io.read_logical(1 << 16).await.unwrap();
        assert_eq!(r[0], 0, "login OK: {:?}", proto::parse_err(&r));
        Raw { io, id, nonce, deprecate_eof: caps & 0x100_0000 != 0 }
    }

    /// Send a command payload (sequence 0) and read its response.
    pub async fn command(&mut self, payload: &[u8], expect: Expect) -> Response {
        self.io.send(0, payload).await.unwrap();
        self.response(expect).await
    }

    pub async fn response(&mut self, expect: Expect) -> Response {
        let mut scanner = Scanner::new(expect, self.deprecate_eof);
        let mut packets = Vec::new();
        while !scanner.done() {
            let pkt: RawPacket = tokio::time::timeout(Duration::from_secs(20), self.io.read_raw())
                .await
                .expect("a response within 20 s")
                .expect("a response, not a closed connection");
            let class = scanner.feed(&pkt);
            packets.push((pkt.seq(), pkt.payload().to_vec()));
            if class == Class::LocalInfile {
                panic!("LOCAL INFILE not expected");
            }
        }
        Response { packets }
    }

    pub async fn query(&mut self, sql: &str) -> Response {
        let mut p = vec![proto::cmd::QUERY];
        p.extend_from_slice(sql.as_bytes());
        self.command(&p, Expect::ResultSet).await
    }

    /// COM_STMT_PREPARE; returns the statement id.
    pub async fn prepare(&mut self, sql: &str) -> u32 {
        let mut p = vec![proto::cmd::STMT_PREPARE];
        p.extend_from_slice(sql.as_bytes());
        let r = self.command(&p, Expect::Prepare).await;
        assert_eq!(r.packets[0].1[0], 0, "prepare {sql}: {:?}", r.err());
        u32::from_le_bytes(r.packets[0].1[1..5].try_into().unwrap())
    }

    /// COM_STMT_EXECUTE without parameters, with `flags` (1: read-only cursor).
    pub async fn execute(&mut self, id: u32, flags: u8) -> Response {
        let mut p = vec![proto::cmd::STMT_EXECUTE];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(flags);
        p.extend_from_slice(&1u32.to_le_bytes());
        self.command(&p, Expect::ResultSet).await
    }

    /// Is the connection closed (EOF) within `wait`? False if a packet or nothing came.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        matches!(tokio::time::timeout(wait, self.io.read_raw()).await, Ok(Err(_)))
    }

    /// Nothing arrives within `wait`.
    pub async fn silent_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.io.read_raw()).await.is_err()
    }
}
