//! One client session: the command loop. Reads a command, decides what to do with
//! it (relay, rewrite a statement id, answer it itself, refuse it), relays the
//! backend's response and keeps [`SessionState`] up to date from it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use mysql_common::packets::AuthSwitchRequest;
use mysql_common::proto::MySerialize;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Stage1, NATIVE_PLUGIN};
use crate::backend::{Backend, BackendError, Login, SESSION_SETUP_SQL};
use crate::context::{ClusterRuntime, ProxyContext};
use crate::error::{MysqlError, ProxyError, Result};
use crate::handshake::Hello;
use crate::packet::PacketIo;
use crate::proto::{self, cmd, StateChange};
use crate::relay::{Class, Expect, Scanner};
use crate::state::SessionState;

/// Flush relayed bytes to the client once this many are queued.
const FLUSH_AT: usize = 64 * 1024;

pub struct Session {
    pub(crate) ctx: Arc<ProxyContext>,
    pub(crate) client: PacketIo<TcpStream>,
    pub(crate) peer: SocketAddr,
    pub(crate) caps: CapabilityFlags,
    pub(crate) ext_caps: MariadbCapabilities,
    pub(crate) user: String,
    pub(crate) stage1: Stage1,
    pub(crate) nonce: [u8; 20],
    pub(crate) collation: u8,
    pub(crate) cluster: String,
    pub(crate) runtime: Arc<ClusterRuntime>,
    pub(crate) backend: Backend,
    pub(crate) state: SessionState,
    /// The SQL of the COM_STMT_PREPARE whose response is being relayed.
    pending_prepare: Option<Bytes>,
}

/// Connect a backend session for the client on the cluster's current primary.
pub(crate) async fn connect_primary(
    ctx: &ProxyContext,
    cluster: &str,
    login: &Login<'_>,
) -> std::result::Result<Backend, MysqlErrorOrRaw> {
    let Some(addr) = ctx.primary_of(cluster) else {
        return Err(MysqlErrorOrRaw::Mysql(MysqlError::backend_unavailable(cluster, "?", "no primary in the topology")));
    };
    Backend::connect(&addr, login, ctx.limits.backend_connect_timeout).await.map_err(|e| match e {
        BackendError::Refused(raw) => MysqlErrorOrRaw::Raw(raw),
        other => MysqlErrorOrRaw::Mysql(MysqlError::backend_unavailable(cluster, &addr, &other.to_string())),
    })
}

/// An error to send the client: made by baton, or relayed from the server.
pub(crate) enum MysqlErrorOrRaw {
    Mysql(MysqlError),
    Raw(Vec<u8>),
}

impl MysqlErrorOrRaw {
    pub(crate) fn payload(&self) -> Vec<u8> {
        match self {
            MysqlErrorOrRaw::Mysql(e) => proto::err_payload(e),
            MysqlErrorOrRaw::Raw(r) => r.clone(),
        }
    }
}

impl Session {
    /// Finish the connection phase: log in to the primary, answer the client.
    pub async fn establish(
        ctx: Arc<ProxyContext>,
        mut client: PacketIo<TcpStream>,
        peer: SocketAddr,
        hello: Hello,
    ) -> Result<Option<Session>> {
        let login = Login {
            user: &hello.user,
            stage1: &hello.stage1,
            db: hello.db.as_deref(),
            collation: hello.collation,
            client_caps: hello.caps,
            client_ext_caps: hello.ext_caps,
        };
        let cluster = hello.entry.cluster.clone();
        let backend = match connect_primary(&ctx, &cluster, &login).await {
            Ok(b) => b,
            Err(e) => {
                client.send(hello.next_seq, &e.payload()).await?;
                return Ok(None);
            }
        };
        client.send(hello.next_seq, &proto::ok_payload(0, proto::SERVER_STATUS_AUTOCOMMIT)).await?;
        let runtime = ctx.clusters.get(&cluster).cloned().unwrap_or_default();
        Ok(Some(Session {
            ctx,
            client,
            peer,
            caps: hello.caps,
            ext_caps: hello.ext_caps,
            user: hello.user,
            stage1: hello.stage1,
            nonce: hello.nonce,
            collation: hello.collation,
            cluster,
            runtime,
            backend,
            state: SessionState::new(hello.db),
            pending_prepare: None,
        }))
    }

    /// The command loop, until the client quits or `close` is cancelled.
    pub async fn run(mut self, close: CancellationToken) -> Result<()> {
        loop {
            let read = tokio::select! {
                r = self.client.read_logical(self.ctx.limits.max_allowed_packet) => r,
                _ = close.cancelled() => {
                    let _ = self.client.send(0, &proto::err_payload(&MysqlError::shutdown())).await;
                    self.backend.quit().await;
                    return Ok(());
                }
            };
            let (seq, _, payload) = match read {
                Ok(p) => p,
                Err(e) => return self.fail(e, 1).await,
            };
            if seq != 0 {
                return self.fail(ProxyError::Fatal(MysqlError::packets_out_of_order()), seq.wrapping_add(1)).await;
            }
            let outcome = self.command(payload).await;
            match outcome {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return self.fail(e, 1).await,
            }
        }
    }

    /// Tell the client why the session ends (if it is still there), then end it.
    async fn fail(&mut self, e: ProxyError, seq: u8) -> Result<()> {
        if let Some(err) = e.client_error() {
            let _ = self.client.send(seq, &proto::err_payload(&err)).await;
        }
        Err(e)
    }

    async fn reply_err(&mut self, seq: u8, e: MysqlError) -> Result<bool> {
        self.client.send(seq, &proto::err_payload(&e)).await?;
        Ok(true)
    }

    /// Handle one command. Ok(false) ends the session cleanly.
    async fn command(&mut self, payload: Bytes) -> Result<bool> {
        let Some(&code) = payload.first() else {
            return self.reply_err(1, MysqlError::malformed_packet("empty command")).await;
        };
        match code {
            cmd::QUIT => {
                let _ = self.backend.io.send(0, &[cmd::QUIT]).await;
                return Ok(false);
            }
            cmd::QUERY => {
                self.forward(&payload, Expect::ResultSet).await?;
            }
            cmd::INIT_DB | cmd::PING | cmd::STATISTICS | cmd::PROCESS_KILL => {
                self.forward(&payload, Expect::Single).await?;
            }
            cmd::FIELD_LIST => {
                self.forward(&payload, Expect::Rows).await?;
            }
            cmd::SET_OPTION => {
                if payload.len() < 3 {
                    return self.reply_err(1, MysqlError::malformed_packet("COM_SET_OPTION")).await;
                }
                self.forward(&payload, Expect::Single).await?;
                self.state.multi_statements = Some(payload[1] == 0);
            }
            cmd::STMT_PREPARE => {
                self.pending_prepare = Some(payload.slice(1..));
                self.forward(&payload, Expect::Prepare).await?;
                self.pending_prepare = None;
            }
            cmd::STMT_EXECUTE | cmd::STMT_FETCH | cmd::STMT_RESET => {
                let name = match code {
                    cmd::STMT_EXECUTE => "mysqld_stmt_execute",
                    cmd::STMT_FETCH => "mysqld_stmt_fetch",
                    _ => "mysqld_stmt_reset",
                };
                let Some(rewritten) = self.map_statement(&payload) else {
                    let id = proto::Cursor::new(&payload[1..]).u32();
                    return match id {
                        Some(id) => self.reply_err(1, MysqlError::unknown_statement(id, name)).await,
                        None => self.reply_err(1, MysqlError::malformed_packet(name)).await,
                    };
                };
                let expect = match code {
                    cmd::STMT_EXECUTE => Expect::ResultSet,
                    cmd::STMT_FETCH => Expect::Rows,
                    _ => Expect::Single,
                };
                self.forward(&rewritten, expect).await?;
            }
            cmd::STMT_SEND_LONG_DATA | cmd::STMT_CLOSE => {
                // No response either way; an unknown id is ignored, as the server does.
                if let Some(rewritten) = self.map_statement(&payload) {
                    if code == cmd::STMT_CLOSE {
                        if let Some(id) = proto::Cursor::new(&payload[1..]).u32() {
                            self.state.statements.remove(&id);
                        }
                    }
                    self.backend.io.send(0, &rewritten).await.map_err(backend_lost)?;
                }
            }
            cmd::RESET_CONNECTION => {
                let ok = self.forward(&payload, Expect::Single).await?;
                if ok {
                    self.state.reset();
                    self.backend.simple_command(SESSION_SETUP_SQL).await.map_err(|e| ProxyError::BackendLost(e.to_string()))?;
                }
            }
            cmd::CHANGE_USER => self.change_user(&payload).await?,
            other => return self.reply_err(1, MysqlError::unknown_command(other)).await,
        }
        Ok(true)
    }

    /// Replace the client's statement id in a COM_STMT_* packet by the backend's.
    fn map_statement(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let id = proto::Cursor::new(payload.get(1..)?).u32()?;
        let backend_id = if id == u32::MAX {
            u32::MAX // MariaDB: "the statement prepared last"
        } else {
            self.state.statements.get(&id)?.backend_id
        };
        let mut out = payload.to_vec();
        out[1..5].copy_from_slice(&backend_id.to_le_bytes());
        Some(out)
    }

    /// Send a command to the backend and relay its response. Returns whether the
    /// (last) response packet was OK rather than ERR.
    async fn forward(&mut self, payload: &[u8], expect: Expect) -> Result<bool> {
        self.backend.io.send(0, payload).await.map_err(backend_lost)?;
        self.relay(expect).await
    }

    async fn relay(&mut self, expect: Expect) -> Result<bool> {
        let deprecate_eof = self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        let mut scanner = Scanner::new(expect, deprecate_eof);
        let mut last_ok = false;
        loop {
            let pkt = self.backend.io.read_raw().await.map_err(backend_lost)?;
            match scanner.feed(&pkt) {
                Class::Data => self.client.queue_raw(&pkt.bytes),
                Class::Ok { header, status } => {
                    self.state.status = status;
                    last_ok = true;
                    self.relay_ok(header, &pkt.bytes);
                }
                Class::Eof { status } => {
                    self.state.status = status;
                    last_ok = true;
                    self.client.queue_raw(&pkt.bytes);
                }
                Class::Err => {
                    last_ok = false;
                    self.client.queue_raw(&pkt.bytes);
                }
                Class::PrepareOk { backend_id } => {
                    let sql = self.pending_prepare.take().unwrap_or_default();
                    let id = self.state.add_statement(backend_id, sql);
                    let mut bytes = pkt.bytes.to_vec();
                    bytes[5..9].copy_from_slice(&id.to_le_bytes());
                    self.client.queue_raw(&bytes);
                    last_ok = true;
                }
                Class::LocalInfile => {
                    self.client.queue_raw(&pkt.bytes);
                    self.client.flush().await?;
                    self.relay_local_infile().await?;
                }
            }
            if scanner.done() {
                break;
            }
            if !self.backend.io.has_buffered_packet() || self.client.queued() >= FLUSH_AT {
                self.client.flush().await?;
            }
        }
        self.client.flush().await?;
        Ok(last_ok)
    }

    /// Track what an OK packet says, and relay it in the form the client expects.
    fn relay_ok(&mut self, header: u8, bytes: &[u8]) {
        let payload = &bytes[4..];
        let Some(ok) = proto::parse_ok(payload) else {
            self.client.queue_raw(bytes);
            return;
        };
        for change in proto::session_changes(ok.session_state) {
            match change {
                StateChange::SystemVariable { name, value } => {
                    if name == b"last_gtid" {
                        if !value.is_empty() {
                            self.runtime.acked.record(value);
                        }
                    } else {
                        self.state.variables.insert(name.to_vec(), value.to_vec());
                    }
                }
                StateChange::Schema(s) => self.state.schema = Some(s.to_vec()),
                StateChange::Other => {}
            }
        }
        if self.caps.contains(CapabilityFlags::CLIENT_SESSION_TRACK) {
            self.client.queue_raw(bytes);
        } else {
            let plain = proto::ok_without_session_track(header, &ok);
            self.client.queue(bytes[3], &plain);
        }
    }

    /// LOCAL INFILE: relay the client's file packets up to the empty one.
    async fn relay_local_infile(&mut self) -> Result<()> {
        loop {
            let pkt = self.client.read_raw().await?;
            self.backend.io.queue_raw(&pkt.bytes);
            if self.backend.io.queued() >= FLUSH_AT || pkt.payload_len() == 0 {
                self.backend.io.flush().await.map_err(backend_lost)?;
            }
            if pkt.payload_len() == 0 {
                return Ok(());
            }
        }
    }

    /// COM_CHANGE_USER: authenticate the new user against baton's users, then log
    /// in to a fresh backend session as that user. Never a silent OK.
    async fn change_user(&mut self, payload: &[u8]) -> Result<()> {
        let malformed = || ProxyError::Fatal(MysqlError::malformed_packet("COM_CHANGE_USER"));
        let mut c = proto::Cursor::new(&payload[1..]);
        let user = String::from_utf8_lossy(c.null_str().ok_or_else(malformed)?).into_owned();
        let mut proof = if self.caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
            let n = c.u8().ok_or_else(malformed)?;
            c.take(n as usize).ok_or_else(malformed)?.to_vec()
        } else {
            c.null_str().ok_or_else(malformed)?.to_vec()
        };
        let db = c.null_str().unwrap_or_default().to_vec();
        let collation = c.u16().map(|cs| cs as u8).filter(|&c| c != 0).unwrap_or(self.collation);
        let plugin = if self.caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) { c.null_str() } else { None };
        let mut seq = 1u8;
        if plugin.is_some_and(|p| !p.is_empty() && p != NATIVE_PLUGIN) {
            let mut data = self.nonce.to_vec();
            data.push(0);
            let mut sw = Vec::new();
            AuthSwitchRequest::new(NATIVE_PLUGIN, data).serialize(&mut sw);
            self.client.send(seq, &sw).await?;
            let (s, _, reply) = self.client.read_logical(64 * 1024).await?;
            proof = reply.to_vec();
            seq = s.wrapping_add(1);
        }
        let denied = MysqlError::access_denied(&user, &self.peer.ip().to_string(), !proof.is_empty());
        let Some(entry) = self.ctx.users.get(&user).cloned() else {
            self.client.send(seq, &proto::err_payload(&denied)).await?;
            return Err(ProxyError::Io(std::io::ErrorKind::PermissionDenied.into()));
        };
        let Some(stage1) = auth::verify(&entry.hash, &self.nonce, &proof) else {
            self.client.send(seq, &proto::err_payload(&denied)).await?;
            return Err(ProxyError::Io(std::io::ErrorKind::PermissionDenied.into()));
        };
        let db = (!db.is_empty()).then_some(db);
        let login = Login { user: &user, stage1: &stage1, db: db.as_deref(), collation, client_caps: self.caps, client_ext_caps: self.ext_caps };
        match connect_primary(&self.ctx, &entry.cluster, &login).await {
            Ok(backend) => {
                let old = std::mem::replace(&mut self.backend, backend);
                old.quit().await;
                self.user = user;
                self.stage1 = stage1;
                self.collation = collation;
                self.runtime = self.ctx.clusters.get(&entry.cluster).cloned().unwrap_or_default();
                self.cluster = entry.cluster;
                self.state = SessionState::new(db);
                self.client.send(seq, &proto::ok_payload(0, proto::SERVER_STATUS_AUTOCOMMIT)).await?;
                Ok(())
            }
            Err(e) => {
                self.client.send(seq, &e.payload()).await?;
                Err(ProxyError::Io(std::io::ErrorKind::ConnectionAborted.into()))
            }
        }
    }
}

fn backend_lost(e: ProxyError) -> ProxyError {
    ProxyError::BackendLost(e.to_string())
}
