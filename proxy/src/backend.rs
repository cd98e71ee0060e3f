//! A backend connection: connect to a MariaDB/MySQL server and log in as the
//! client's user, with capabilities mirrored from the client (see
//! [`crate::proto::backend_capabilities`]) and session tracking switched on.

use std::time::Duration;

use bytes::BufMut;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use mysql_common::io::ParseBuf;
use mysql_common::packets::HandshakePacket;
use tokio::net::TcpStream;

use crate::auth::{proof_for, Stage1, NATIVE_PLUGIN};
use crate::packet::PacketIo;
use crate::proto::{self, backend_capabilities};

/// What baton runs on every new backend session: track every system variable
/// (so session state can be restored elsewhere) including `last_gtid` (so baton
/// knows the GTID of every write it acknowledges).
pub const SESSION_SETUP_SQL: &str = "SET SESSION session_track_system_variables='*', session_track_schema=ON";

/// Why a backend connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    Unreachable(String),
    /// The server answered with an ERR packet (its payload, to relay as it is).
    #[error("server refused: {}", proto::parse_err(.0).map(|e| e.2).unwrap_or_default())]
    Refused(Vec<u8>),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Who to log in as, and how.
pub struct Login<'a> {
    pub user: &'a str,
    pub stage1: &'a Stage1,
    pub db: Option<&'a [u8]>,
    pub collation: u8,
    pub client_caps: CapabilityFlags,
    pub client_ext_caps: MariadbCapabilities,
}

/// A logged-in backend session.
pub struct Backend {
    pub io: PacketIo<TcpStream>,
    pub addr: String,
    pub caps: CapabilityFlags,
    pub connection_id: u32,
}

impl Backend {
    /// Connect and log in, all within `timeout`.
    pub async fn connect(addr: &str, login: &Login<'_>, timeout: Duration) -> Result<Backend, BackendError> {
        match tokio::time::timeout(timeout, Self::connect_inner(addr, login)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Unreachable(format!("timed out after {} ms", timeout.as_millis()))),
        }
    }

    async fn connect_inner(addr: &str, login: &Login<'_>) -> Result<Backend, BackendError> {
        let stream = TcpStream::connect(addr).await.map_err(|e| BackendError::Unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut io = PacketIo::new(stream);
        let lost = |e: crate::error::ProxyError| BackendError::Unreachable(e.to_string());
        let (_, seq, greeting) = io.read_logical(1 << 16).await.map_err(lost)?;
        if greeting.first() == Some(&0xff) {
            return Err(BackendError::Refused(greeting.to_vec()));
        }
        let hs: HandshakePacket<'_> = ParseBuf(&greeting)
            .parse(())
            .map_err(|e| BackendError::Protocol(format!("bad greeting: {e}")))?;
        let connection_id = hs.connection_id();
        let mut caps = backend_capabilities(login.client_caps);
        if login.db.is_some() {
            caps |= CapabilityFlags::CLIENT_CONNECT_WITH_DB;
        }
        if !hs.capabilities().contains(CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SESSION_TRACK) {
            return Err(BackendError::Protocol("server lacks protocol 4.1 or session tracking".into()));
        }
        caps &= hs.capabilities();
        let nonce = hs.nonce();
        let proof = proof_for(login.stage1, &nonce[..nonce.len().min(20)]);

        let mut resp = Vec::with_capacity(128);
        resp.put_u32_le(caps.bits());
        resp.put_u32_le(crate::packet::MAX_PAYLOAD as u32 + 1);
        resp.put_u8(login.collation);
        resp.put_slice(&[0u8; 19]);
        let ext = if caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) {
            0
        } else {
            (login.client_ext_caps & hs.mariadb_ext_capabilities()).bits()
        };
        resp.put_u32_le(ext);
        resp.put_slice(login.user.as_bytes());
        resp.put_u8(0);
        proto::put_lenenc(&mut resp, proof.len() as u64);
        resp.put_slice(&proof);
        if let Some(db) = login.db {
            resp.put_slice(db);
            resp.put_u8(0);
        }
        resp.put_slice(NATIVE_PLUGIN);
        resp.put_u8(0);
        io.send(seq.wrapping_add(1), &resp).await.map_err(lost)?;

        loop {
            let (s, _, reply) = io.read_logical(1 << 16).await.map_err(lost)?;
            match reply.first() {
                Some(0x00) => break,
                Some(0xff) => return Err(BackendError::Refused(reply.to_vec())),
                Some(0xfe) => {
                    // Auth switch: plugin name NUL, then the new nonce.
                    let mut c = proto::Cursor::new(&reply[1..]);
                    let plugin = c.null_str().unwrap_or_default();
                    if plugin != NATIVE_PLUGIN {
                        return Err(BackendError::Protocol(format!(
                            "backend asks for auth plugin {:?}; baton logs in with mysql_native_password",
                            String::from_utf8_lossy(plugin)
                        )));
                    }
                    let data = c.rest();
                    let nonce = &data[..data.len().min(20)];
                    io.send(s.wrapping_add(1), &proof_for(login.stage1, nonce)).await.map_err(lost)?;
                }
                _ => return Err(BackendError::Protocol("unexpected packet during login".into())),
            }
        }
        let mut backend = Backend { io, addr: addr.to_string(), caps, connection_id };
        backend.simple_command(SESSION_SETUP_SQL).await?;
        Ok(backend)
    }

    /// Run a statement that returns no rows, for baton's own use (not relayed).
    pub async fn simple_command(&mut self, sql: &str) -> Result<(), BackendError> {
        let mut payload = Vec::with_capacity(1 + sql.len());
        payload.push(proto::cmd::QUERY);
        payload.extend_from_slice(sql.as_bytes());
        let lost = |e: crate::error::ProxyError| BackendError::Unreachable(e.to_string());
        self.io.send(0, &payload).await.map_err(lost)?;
        let (_, _, reply) = self.io.read_logical(1 << 24).await.map_err(lost)?;
        match reply.first() {
            Some(0x00) => Ok(()),
            Some(0xff) => Err(BackendError::Refused(reply.to_vec())),
            _ => Err(BackendError::Protocol(format!("{sql:?} returned rows"))),
        }
    }

    /// Has the server closed this idle connection or sent something unasked (the
    /// notice of a KILL)? Either way it must not be used for the next command.
    pub fn is_stale(&self) -> bool {
        if self.io.has_buffered_bytes() {
            return true;
        }
        let mut b = [0u8; 1];
        match self.io.get_ref().try_read(&mut b) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    /// COM_SET_OPTION (multi-statements on or off), for baton's own use.
    pub async fn set_option(&mut self, multi_statements: bool) -> Result<(), BackendError> {
        let lost = |e: crate::error::ProxyError| BackendError::Unreachable(e.to_string());
        let opt: u16 = if multi_statements { 0 } else { 1 };
        let [a, b] = opt.to_le_bytes();
        self.io.send(0, &[proto::cmd::SET_OPTION, a, b]).await.map_err(lost)?;
        let (_, _, reply) = self.io.read_logical(1 << 24).await.map_err(lost)?;
        match reply.first() {
            Some(0xff) => Err(BackendError::Refused(reply.to_vec())),
            _ => Ok(()),
        }
    }

    /// COM_STMT_PREPARE for baton's own use (restoring a session); returns the id.
    pub async fn prepare(&mut self, sql: &[u8], deprecate_eof: bool) -> Result<u32, BackendError> {
        use crate::relay::{Class, Expect, Scanner};
        let lost = |e: crate::error::ProxyError| BackendError::Unreachable(e.to_string());
        let mut payload = Vec::with_capacity(1 + sql.len());
        payload.push(proto::cmd::STMT_PREPARE);
        payload.extend_from_slice(sql);
        self.io.send(0, &payload).await.map_err(lost)?;
        let mut scanner = Scanner::new(Expect::Prepare, deprecate_eof);
        let mut result = Err(BackendError::Protocol("empty prepare response".into()));
        while !scanner.done() {
            let pkt = self.io.read_raw().await.map_err(lost)?;
            match scanner.feed(&pkt) {
                Class::PrepareOk { backend_id } => result = Ok(backend_id),
                Class::Err => result = Err(BackendError::Refused(pkt.payload().to_vec())),
                _ => {}
            }
        }
        result
    }

    /// Say goodbye politely (best effort).
    pub async fn quit(mut self) {
        let _ = self.io.send(0, &[proto::cmd::QUIT]).await;
    }
}
