//! A backend connection: connect to a MariaDB/MySQL server and log in as the
//! client's user, with capabilities mirrored from the client (see
//! [`crate::proto::backend_capabilities`]) and session tracking switched on.
//!
//! Two stages, so that a client's greeting can carry the backend's own thread id
//! (what `CONNECTION_ID()` returns, what `KILL` takes): [`Backend::greet`] opens
//! the connection and reads the server's greeting; [`Greeted::login`] finishes
//! once the client has proved who it is. Errors on the socket of a logged-in
//! backend are marked as backend errors here, where it is read or written
//! ([`Backend::send`], [`Backend::read_raw`]), not by each caller.

use std::time::Duration;

use bytes::BufMut;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use mysql_common::io::ParseBuf;
use mysql_common::packets::HandshakePacket;
use tokio::net::TcpStream;

use crate::auth::{BackendSecret, NATIVE_PLUGIN, SHA2_PLUGIN};
use crate::error::ProxyError;
use crate::packet::{PacketIo, RawPacket};
use crate::proto::{self, backend_capabilities};
use crate::stream::Stream;
use crate::tls::BackendTls;
use crate::tracking::ClientTracking;

/// What baton runs on every new backend session: track every system variable
/// (so session state can be restored elsewhere) including `last_gtid` (so baton
/// knows the GTID of every write it acknowledges).
pub const SESSION_SETUP_SQL: &str = "SET SESSION session_track_system_variables='*', session_track_schema=ON, session_track_state_change=ON";

/// Read before [`SESSION_SETUP_SQL`]: what a direct session would have.
const DEFAULTS_SQL: &str =
    "SELECT @@session_track_system_variables, @@session_track_schema, @@max_allowed_packet, @@session_track_state_change, @@server_id";

/// The collation a login names when the client's does not fit the handshake's
/// one byte (utf8mb4_general_ci); the real one is set right after.
const FALLBACK_COLLATION: u8 = 45;

/// What a new session on this server starts with.
#[derive(Debug, Clone)]
pub struct ServerDefaults {
    /// Session tracking as a direct client would have it.
    pub tracking: ClientTracking,
    /// `@@max_allowed_packet`: the largest command the server accepts.
    pub max_allowed_packet: usize,
    /// `@@server_id`: the server of this session's GTIDs (transaction replay's commit decision).
    pub server_id: Option<u32>,
}

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
    pub secret: &'a BackendSecret,
    pub db: Option<&'a [u8]>,
    /// Two bytes: COM_CHANGE_USER can name collations above 255.
    pub collation: u16,
    pub client_caps: CapabilityFlags,
    pub client_ext_caps: MariadbCapabilities,
}

/// A logged-in backend session.
pub struct Backend {
    pub io: PacketIo<Stream>,
    pub addr: String,
    pub caps: CapabilityFlags,
    /// The server's thread id for this session.
    pub connection_id: u32,
    pub defaults: ServerDefaults,
    /// The greeting's nonce (COM_CHANGE_USER proofs answer it).
    nonce: Vec<u8>,
    /// When this backend last delivered a packet.
    last_read: std::time::Instant,
    /// Its place in the cluster's fence (closed when a failover begins); None
    /// until the session registers it.
    pub fence: Option<baton_control::fence::Registration>,
}

/// A connection whose greeting was read; not logged in yet.
///
/// Dropped unused (the client failed to log in, left, or its id was taken), it
/// is not just closed: an interrupted handshake counts toward the server's
/// `max_connect_errors`, after which the server blocks baton's host. It finishes
/// the handshake instead, as a user that cannot log in ([`UNUSED_LOGIN_USER`]),
/// which the server answers with an access-denied error that does not count.
pub struct Greeted {
    /// None once logged in (or being abandoned).
    io: Option<PacketIo<Stream>>,
    /// A slot of the listener's bound on connections greeted before their client
    /// logged in (released when this is logged in or dropped).
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
    addr: String,
    seq: u8,
    connection_id: u32,
    server_caps: CapabilityFlags,
    server_ext_caps: MariadbCapabilities,
    nonce: Vec<u8>,
    /// The plugin the greeting names.
    plugin: Vec<u8>,
    /// TLS to start at login (the SSL request must carry the login's capabilities:
    /// the server keeps those it gets first).
    tls: Option<BackendTls>,
}

impl Greeted {
    /// The server's thread id for this connection.
    pub fn connection_id(&self) -> u32 {
        self.connection_id
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Log in as `login`, within `timeout`.
    pub async fn login(self, login: &Login<'_>, timeout: Duration) -> Result<Backend, BackendError> {
        match tokio::time::timeout(timeout, self.login_inner(login)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Unreachable(format!("login timed out after {} ms", timeout.as_millis()))),
        }
    }

    async fn login_inner(self, login: &Login<'_>) -> Result<Backend, BackendError> {
        let mut this = self;
        let Some(mut io) = this.io.take() else { return Err(BackendError::Protocol("greeted connection already used".into())) };
        let (addr, seq, connection_id, server_caps, server_ext_caps, nonce, plugin) = (
            this.addr.clone(),
            this.seq,
            this.connection_id,
            this.server_caps,
            this.server_ext_caps,
            std::mem::take(&mut this.nonce),
            std::mem::take(&mut this.plugin),
        );
        let lost = |e: crate::error::ProxyError| BackendError::Unreachable(e.to_string());
        let mut caps = backend_capabilities(login.client_caps);
        if login.db.is_some() {
            caps |= CapabilityFlags::CLIENT_CONNECT_WITH_DB;
        }
        caps &= server_caps;
        let mut seq = seq;
        if let Some(tls) = this.tls.take() {
            caps |= CapabilityFlags::CLIENT_SSL;
            // The SSL request: the handshake response's first 32 bytes.
            let ext = if caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) { 0 } else { (login.client_ext_caps & server_ext_caps).bits() };
            let mut req = Vec::with_capacity(32);
            req.put_u32_le(caps.bits());
            req.put_u32_le(crate::packet::MAX_PAYLOAD as u32 + 1);
            req.put_u8(u8::try_from(login.collation).unwrap_or(FALLBACK_COLLATION));
            req.put_slice(&[0u8; 19]);
            req.put_u32_le(ext);
            seq = seq.wrapping_add(1);
            io.send(seq, &req).await.map_err(lost)?;
            let tcp = io.get_mut().take_plain().map_err(|e| BackendError::Protocol(e.to_string()))?;
            let stream = tls.connect(&addr, tcp).await.map_err(|e| BackendError::Unreachable(format!("TLS handshake: {e}")))?;
            *io.get_mut() = Stream::ClientTls(Box::new(stream));
        }
        // Answer the greeting's plugin when the secret can; else native (the
        // server switches to the account's own plugin).
        let (plugin, proof) = match login.secret.answer(&plugin, &nonce) {
            Ok(p) => (plugin, p),
            Err(_) => (NATIVE_PLUGIN.to_vec(), login.secret.answer(NATIVE_PLUGIN, &nonce).unwrap_or_default()),
        };

        let mut resp = Vec::with_capacity(128);
        resp.put_u32_le(caps.bits());
        resp.put_u32_le(crate::packet::MAX_PAYLOAD as u32 + 1);
        resp.put_u8(u8::try_from(login.collation).unwrap_or(FALLBACK_COLLATION));
        resp.put_slice(&[0u8; 19]);
        let ext = if caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) { 0 } else { (login.client_ext_caps & server_ext_caps).bits() };
        resp.put_u32_le(ext);
        resp.put_slice(login.user.as_bytes());
        resp.put_u8(0);
        proto::put_lenenc(&mut resp, proof.len() as u64);
        resp.put_slice(&proof);
        if let Some(db) = login.db {
            resp.put_slice(db);
            resp.put_u8(0);
        }
        resp.put_slice(&plugin);
        resp.put_u8(0);
        io.send(seq.wrapping_add(1), &resp).await.map_err(lost)?;

        auth_reply(&mut io, login, &plugin).await?;
        let defaults = ServerDefaults { tracking: ClientTracking::default(), max_allowed_packet: 16 << 20, server_id: None };
        let mut backend = Backend { io, addr, caps, connection_id, defaults, nonce, last_read: std::time::Instant::now(), fence: None };
        backend.setup(login.collation, true).await?;
        Ok(backend)
    }
}

/// The user an unused greeted connection logs in as, to end its handshake with
/// an authentication error rather than an interrupted one (no such account).
pub const UNUSED_LOGIN_USER: &str = "baton-unused-greeting";

impl Drop for Greeted {
    fn drop(&mut self) {
        let Some(mut io) = self.io.take() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let seq = self.seq.wrapping_add(1);
        rt.spawn(async move {
            let mut resp = Vec::with_capacity(64);
            let mut caps = CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SECURE_CONNECTION | CapabilityFlags::CLIENT_PLUGIN_AUTH;
            if io.get_ref().is_tls() {
                caps |= CapabilityFlags::CLIENT_SSL;
            }
            resp.put_u32_le(caps.bits());
            resp.put_u32_le(1 << 24);
            resp.put_u8(FALLBACK_COLLATION);
            resp.put_slice(&[0u8; 23]);
            resp.put_slice(UNUSED_LOGIN_USER.as_bytes());
            resp.put_u8(0);
            resp.put_u8(0); // no proof
            resp.put_slice(NATIVE_PLUGIN);
            resp.put_u8(0);
            if io.send(seq, &resp).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(2), io.read_logical(1 << 16)).await;
            }
        });
    }
}

/// Read the server's answer to a login or COM_CHANGE_USER: OK, ERR, an auth
/// switch (answered from the session's secret for the new plugin and nonce), or
/// caching_sha2_password's more-data packets (fast path done; full
/// authentication: the password, sent only inside TLS).
async fn auth_reply(io: &mut PacketIo<Stream>, login: &Login<'_>, plugin: &[u8]) -> Result<(), BackendError> {
    let lost = |e: crate::error::ProxyError| BackendError::Unreachable(e.to_string());
    let mut plugin = plugin.to_vec();
    for _ in 0..8 {
        let (s, _, reply) = io.read_logical(1 << 16).await.map_err(lost)?;
        match reply.first() {
            Some(0x00) => return Ok(()),
            Some(0xff) => return Err(BackendError::Refused(reply.to_vec())),
            Some(0xfe) => {
                // Auth switch: plugin name NUL, then the new nonce (NUL-ended for the SHA plugins).
                let mut c = proto::Cursor::new(&reply[1..]);
                plugin = c.null_str().unwrap_or_default().to_vec();
                let data = switch_nonce(&plugin, c.rest());
                let answer = login.secret.answer(&plugin, data).map_err(BackendError::Protocol)?;
                io.send(s.wrapping_add(1), &answer).await.map_err(lost)?;
            }
            Some(0x01) if plugin == SHA2_PLUGIN => match reply.get(1) {
                Some(3) => {} // fast authentication succeeded; OK follows
                Some(4) => {
                    let BackendSecret::Password(p) = login.secret else {
                        return Err(BackendError::Protocol("caching_sha2_password full authentication needs the password".into()));
                    };
                    if !io.get_ref().is_tls() {
                        return Err(BackendError::Protocol(
                            "caching_sha2_password full authentication needs TLS to the backend (set tls in [[clusters]])".into(),
                        ));
                    }
                    let mut clear = p.bytes().to_vec();
                    clear.push(0);
                    io.send(s.wrapping_add(1), &clear).await.map_err(lost)?;
                    zeroize::Zeroize::zeroize(&mut clear);
                }
                _ => return Err(BackendError::Protocol("unexpected caching_sha2_password packet".into())),
            },
            _ => return Err(BackendError::Protocol("unexpected packet during login".into())),
        }
    }
    Err(BackendError::Protocol("too many authentication round trips".into()))
}

/// The nonce an auth switch to `plugin` carries in `data`: the SHA plugins'
/// 20 bytes end with a NUL (MariaDB `sql_acl.cc`); `client_ed25519`'s are 32 raw
/// bytes, any of which may be 0 (`plugin/auth_ed25519/server_ed25519.c`).
fn switch_nonce<'a>(plugin: &[u8], data: &'a [u8]) -> &'a [u8] {
    if plugin == crate::auth::ED25519_PLUGIN {
        data
    } else {
        data.strip_suffix(&[0]).unwrap_or(data)
    }
}

impl Backend {
    /// Register this connection with `fence` (its socket is shut down, and its
    /// acknowledgements refused, when a failover begins).
    /// `generation` is the fence's, read before this connection was opened.
    pub fn fence_with(&mut self, fence: &std::sync::Arc<baton_control::fence::BackendFence>, generation: u64) {
        if let Some(tcp) = self.io.get_ref().tcp() {
            self.fence = Some(fence.register_at(tcp, generation));
        }
    }

    /// The fence generation this connection was registered at.
    pub fn fence_generation(&self) -> Option<u64> {
        self.fence.as_ref().map(|r| r.generation)
    }

    /// After a login or COM_CHANGE_USER: read the session's defaults, switch
    /// baton's tracking on, and set a collation the login could not name.
    async fn setup(&mut self, collation: u16, set_collation: bool) -> Result<(), BackendError> {
        let row = self.query_row(DEFAULTS_SQL).await?;
        let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        self.defaults = ServerDefaults {
            tracking: ClientTracking::from_server(&col(0), &col(1), &col(3)),
            max_allowed_packet: String::from_utf8_lossy(&col(2)).parse().unwrap_or(16 << 20),
            server_id: String::from_utf8_lossy(&col(4)).parse().ok(),
        };
        self.simple_command(SESSION_SETUP_SQL).await?;
        if set_collation && u8::try_from(collation).is_err() {
            // The handshake's collation byte cannot name it: set it as the server
            // would for COM_CHANGE_USER with this id.
            let sql = format!("SELECT CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS WHERE ID = {collation}");
            let row = self.query_row(&sql).await?;
            match (row.first().cloned().flatten(), row.get(1).cloned().flatten()) {
                (Some(cs), Some(co)) => {
                    let (cs, co) = (String::from_utf8_lossy(&cs).into_owned(), String::from_utf8_lossy(&co).into_owned());
                    self.simple_command(&format!("SET NAMES '{cs}' COLLATE '{co}'")).await?;
                }
                _ => return Err(BackendError::Protocol(format!("unknown collation id {collation}"))),
            }
        }
        Ok(())
    }

    /// COM_CHANGE_USER on this backend session: same thread, new user; the server
    /// resets the session (baton's tracking is put back).
    pub async fn change_user(&mut self, login: &Login<'_>) -> Result<(), BackendError> {
        let lost = |e: crate::error::ProxyError| BackendError::Unreachable(e.to_string());
        let proof = login.secret.answer(NATIVE_PLUGIN, &self.nonce).unwrap_or_default();
        let mut p = vec![proto::cmd::CHANGE_USER];
        p.extend_from_slice(login.user.as_bytes());
        p.push(0);
        p.push(proof.len() as u8);
        p.extend_from_slice(&proof);
        p.extend_from_slice(login.db.unwrap_or_default());
        p.push(0);
        p.extend_from_slice(&login.collation.to_le_bytes());
        if self.caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
            p.extend_from_slice(NATIVE_PLUGIN);
            p.push(0);
        }
        self.io.send(0, &p).await.map_err(lost)?;
        auth_reply(&mut self.io, login, NATIVE_PLUGIN).await?;
        self.setup(login.collation, false).await
    }

    /// Connect and log in, all within `timeout`.
    pub async fn connect(addr: &str, tls: Option<&BackendTls>, login: &Login<'_>, timeout: Duration) -> Result<Backend, BackendError> {
        let started = tokio::time::Instant::now();
        let greeted = Self::greet(addr, tls, timeout).await?;
        greeted.login(login, timeout.saturating_sub(started.elapsed())).await
    }

    /// Open a connection and read the server's greeting, within `timeout`; with
    /// `tls`, send the SSL request and run the TLS handshake too.
    pub async fn greet(addr: &str, tls: Option<&BackendTls>, timeout: Duration) -> Result<Greeted, BackendError> {
        match tokio::time::timeout(timeout, Self::greet_inner(addr, tls)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Unreachable(format!("timed out after {} ms", timeout.as_millis()))),
        }
    }

    async fn greet_inner(addr: &str, tls: Option<&BackendTls>) -> Result<Greeted, BackendError> {
        let stream = TcpStream::connect(addr).await.map_err(|e| BackendError::Unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut io = PacketIo::new(Stream::Plain(stream));
        let lost = |e: crate::error::ProxyError| BackendError::Unreachable(e.to_string());
        let (_, seq, greeting) = io.read_logical(1 << 16).await.map_err(lost)?;
        if greeting.first() == Some(&0xff) {
            return Err(BackendError::Refused(greeting.to_vec()));
        }
        let hs: HandshakePacket<'_> = ParseBuf(&greeting).parse(()).map_err(|e| BackendError::Protocol(format!("bad greeting: {e}")))?;
        if !hs.capabilities().contains(CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SESSION_TRACK) {
            return Err(BackendError::Protocol("server lacks protocol 4.1 or session tracking".into()));
        }
        if let Some(tls) = tls {
            if !hs.capabilities().contains(CapabilityFlags::CLIENT_SSL) {
                return Err(BackendError::Unreachable(format!("the server offers no TLS (cluster tls = {:?})", tls.mode)));
            }
        }
        Ok(Greeted {
            tls: tls.cloned(),
            plugin: hs.auth_plugin().map(|p| p.as_bytes().to_vec()).unwrap_or_else(|| NATIVE_PLUGIN.to_vec()),
            seq,
            connection_id: hs.connection_id(),
            server_caps: hs.capabilities(),
            server_ext_caps: hs.mariadb_ext_capabilities(),
            nonce: hs.nonce().to_vec(),
            addr: addr.to_string(),
            io: Some(io),
            slot: None,
        })
    }

    /// Send one command packet; a failure is this backend lost.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) -> Result<(), ProxyError> {
        self.io.send(seq, payload).await.map(|_| ()).map_err(|e| ProxyError::BackendLost(e.to_string()))
    }

    /// Read one physical packet of a response; a failure is this backend lost.
    pub async fn read_raw(&mut self) -> Result<RawPacket, ProxyError> {
        let p = self.io.read_raw().await.map_err(|e| ProxyError::BackendLost(e.to_string()))?;
        self.last_read = std::time::Instant::now();
        Ok(p)
    }

    /// How long since this backend last delivered a packet.
    pub fn idle_for(&self) -> std::time::Duration {
        self.last_read.elapsed()
    }

    /// Queue a packet already framed (relayed from the client: LOCAL INFILE
    /// data) with sequence id `seq`.
    pub fn queue_raw_with_seq(&mut self, bytes: &[u8], seq: u8) {
        self.io.queue_raw_with_seq(bytes, seq);
    }

    /// Bytes queued for this backend and not yet written.
    pub fn queued(&self) -> usize {
        self.io.queued()
    }

    /// Write what is queued; a failure is this backend lost.
    pub async fn flush(&mut self) -> Result<(), ProxyError> {
        self.io.flush().await.map_err(|e| ProxyError::BackendLost(e.to_string()))
    }

    /// Run a query returning at most one row, for baton's own use: the row's
    /// values (None for NULL); empty when no row.
    pub async fn query_row(&mut self, sql: &str) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        use crate::relay::{Class, Expect, Scanner};
        let lost = |e: crate::error::ProxyError| BackendError::Unreachable(e.to_string());
        let mut payload = Vec::with_capacity(1 + sql.len());
        payload.push(proto::cmd::QUERY);
        payload.extend_from_slice(sql.as_bytes());
        self.io.send(0, &payload).await.map_err(lost)?;
        let deprecate_eof = self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        let mut scanner = Scanner::new(Expect::ResultSet, deprecate_eof);
        let (mut data, mut columns, mut row, mut err) = (0u64, 0u64, Vec::new(), None);
        while !scanner.done() {
            let pkt = self.io.read_raw().await.map_err(lost)?;
            match scanner.feed(&pkt) {
                Class::Data => {
                    if data == 0 {
                        columns = proto::Cursor::new(pkt.payload()).lenenc().unwrap_or(0);
                    } else if data == columns + 1 {
                        let mut c = proto::Cursor::new(pkt.payload());
                        for _ in 0..columns {
                            if c.rest().first() == Some(&0xfb) {
                                c.u8();
                                row.push(None);
                            } else {
                                row.push(c.lenenc_bytes().map(<[u8]>::to_vec));
                            }
                        }
                    }
                    data += 1;
                }
                Class::Err => err = Some(pkt.payload().to_vec()),
                _ => {}
            }
        }
        match err {
            Some(e) => Err(BackendError::Refused(e)),
            None => Ok(row),
        }
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

    /// Has the server closed this idle connection or sent something unasked?
    /// Either way it must not be used for the next command. Cheap: tokio answers
    /// from the readiness it already knows, without a system call when idle.
    pub fn is_stale(&mut self) -> bool {
        self.io.has_buffered_bytes() || self.io.get_mut().closed_or_unasked_data()
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
    pub async fn prepare(&mut self, sql: &[u8]) -> Result<u32, BackendError> {
        let deprecate_eof = self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ed25519_nonce_ending_in_zero_is_kept_whole() {
        let mut nonce = [7u8; 32];
        nonce[31] = 0;
        assert_eq!(switch_nonce(crate::auth::ED25519_PLUGIN, &nonce), &nonce[..]);
        let mut sha = [9u8; 21];
        sha[20] = 0;
        assert_eq!(switch_nonce(NATIVE_PLUGIN, &sha), &sha[..20]);
        assert_eq!(switch_nonce(SHA2_PLUGIN, &sha), &sha[..20]);
    }
}
