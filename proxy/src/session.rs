//! One client session: the command loop. Reads a command, passes the cluster's
//! gate (unless inside a transaction), makes sure its backend session is on the
//! primary the topology names now (moving it there, state restored, between
//! transactions), relays the command and its response, and keeps
//! [`SessionState`] up to date from what the server says.

use std::net::SocketAddr;
use std::sync::Arc;

use baton_control::cluster::ClusterHandle;
use baton_control::gate::{Admission, Phase};
use baton_control::metrics::BackendErrorClass;
use bytes::Bytes;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use mysql_common::packets::AuthSwitchRequest;
use mysql_common::proto::MySerialize;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Stage1, NATIVE_PLUGIN};
use crate::backend::{Backend, BackendError, Login, SESSION_SETUP_SQL};
use crate::context::ProxyContext;
use crate::error::{MysqlError, ProxyError, Result};
use crate::handshake::Hello;
use crate::packet::PacketIo;
use crate::proto::{self, cmd, StateChange};
use crate::relay::{Class, Expect, Scanner};
use crate::state::SessionState;

/// Flush relayed bytes to the client once this many are queued.
const FLUSH_AT: usize = 64 * 1024;
/// ER_OPTION_PREVENTS_STATEMENT: the server is read-only.
const ER_READ_ONLY: u16 = 1290;

/// ERR 1290 ("running with the %s option") because of `--read-only`, not another
/// option (e.g. `--secure-file-priv`, which is the application's error to see).
fn is_read_only(err: &(u16, String, String)) -> bool {
    err.0 == ER_READ_ONLY && {
        let m = err.2.to_ascii_lowercase();
        m.contains("read-only") || m.contains("read_only")
    }
}
/// How many times one command is held again after the primary refused it as read-only.
const READ_ONLY_RETRIES: usize = 3;

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

/// How a relayed command ended.
enum Relayed {
    /// The response was relayed; whether its last packet was OK rather than ERR.
    Done(bool),
    /// The primary refused the command as read-only (ERR 1290) before anything
    /// was relayed: the command was not executed. The ERR packet, unrelayed.
    ReadOnly(Bytes),
}

pub struct Session {
    ctx: Arc<ProxyContext>,
    client: PacketIo<TcpStream>,
    peer: SocketAddr,
    caps: CapabilityFlags,
    ext_caps: MariadbCapabilities,
    user: String,
    stage1: Stage1,
    nonce: [u8; 20],
    collation: u8,
    cluster: Arc<ClusterHandle>,
    /// The backend session; None after it was lost (re-made before the next command).
    backend: Option<Backend>,
    /// The topology term of the primary `backend` is connected to.
    backend_term: u64,
    /// The gate episode when `backend` was last checked for staleness.
    checked_episode: u64,
    state: SessionState,
    /// Held while a transaction is open: the session stays on its backend and
    /// counts as active for the reparent's grace period.
    pin: Option<Admission>,
    /// COM_STMT_SEND_LONG_DATA was sent; the session stays on its backend until
    /// the statement is executed or reset.
    long_data_pending: bool,
    /// The SQL of the COM_STMT_PREPARE whose response is being relayed.
    pending_prepare: Option<Bytes>,
    /// Whether any byte of the current response reached the client.
    relayed_any: bool,
    /// The topology, watched while waiting on the backend: a newer term means the
    /// primary was replaced (a hung one never answers), so the wait ends.
    topo_rx: tokio::sync::watch::Receiver<Arc<baton_control::Topology>>,
}

/// Connect a backend session for `login` on the cluster's current primary.
async fn connect_primary(ctx: &ProxyContext, cluster: &str, login: &Login<'_>) -> std::result::Result<(Backend, u64), MysqlErrorOrRaw> {
    let Some((addr, term)) = ctx.primary_of(cluster) else {
        return Err(MysqlErrorOrRaw::Mysql(MysqlError::backend_unavailable(cluster, "?", "no primary in the topology")));
    };
    match Backend::connect(&addr, login, ctx.limits().backend_connect_timeout).await {
        Ok(b) => Ok((b, term)),
        Err(BackendError::Refused(raw)) => Err(MysqlErrorOrRaw::Raw(raw)),
        Err(other) => Err(MysqlErrorOrRaw::Mysql(MysqlError::backend_unavailable(cluster, &addr, &other.to_string()))),
    }
}

impl Session {
    /// Finish the connection phase: pass the gate, log in to the primary, answer the client.
    pub async fn establish(ctx: Arc<ProxyContext>, mut client: PacketIo<TcpStream>, peer: SocketAddr, hello: Hello) -> Result<Option<Session>> {
        let Some(cluster) = ctx.clusters.get(&hello.entry.cluster).cloned() else {
            let e = MysqlError::backend_unavailable(&hello.entry.cluster, "?", "unknown cluster");
            client.send(hello.next_seq, &proto::err_payload(&e)).await?;
            return Ok(None);
        };
        let admission = match cluster.gate.admit().await {
            Ok(a) => a,
            Err(e) => {
                client.send(hello.next_seq, &proto::err_payload(&MysqlError::from_gate(e, &cluster.name))).await?;
                return Ok(None);
            }
        };
        let login = Login {
            user: &hello.user,
            stage1: &hello.stage1,
            db: hello.db.as_deref(),
            collation: hello.collation,
            client_caps: hello.caps,
            client_ext_caps: hello.ext_caps,
        };
        let (backend, term) = match connect_primary(&ctx, &cluster.name, &login).await {
            Ok(b) => b,
            Err(e) => {
                client.send(hello.next_seq, &e.payload()).await?;
                return Ok(None);
            }
        };
        drop(admission);
        client.send(hello.next_seq, &proto::ok_payload(0, proto::SERVER_STATUS_AUTOCOMMIT)).await?;
        Ok(Some(Session {
            topo_rx: ctx.topology.clone(),
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
            backend: Some(backend),
            backend_term: term,
            checked_episode: 0,
            state: SessionState::new(hello.db),
            pin: None,
            long_data_pending: false,
            pending_prepare: None,
            relayed_any: false,
        }))
    }

    /// The command loop, until the client quits or `close` is cancelled.
    pub async fn run(mut self, close: CancellationToken) -> Result<()> {
        let max_packet = self.ctx.limits().max_allowed_packet;
        loop {
            let read = tokio::select! {
                r = self.client.read_logical(max_packet) => r,
                _ = close.cancelled() => {
                    let _ = self.client.send(0, &proto::err_payload(&MysqlError::shutdown())).await;
                    if let Some(b) = self.backend.take() { b.quit().await; }
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
            let started = std::time::Instant::now();
            self.ctx.metrics.query(payload.first().copied().unwrap_or(0));
            let r = self.command(payload).await;
            self.ctx.metrics.query_duration.record(started.elapsed().as_secs_f64());
            match r {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return self.fail(e, 1).await,
            }
        }
    }

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

    fn deprecate_eof(&self) -> bool {
        self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// Handle one command. Ok(false) ends the session cleanly.
    async fn command(&mut self, payload: Bytes) -> Result<bool> {
        let Some(&code) = payload.first() else {
            return self.reply_err(1, MysqlError::malformed_packet("empty command")).await;
        };
        match code {
            cmd::QUIT => {
                if let Some(mut b) = self.backend.take() {
                    let _ = b.io.send(0, &[cmd::QUIT]).await;
                }
                Ok(false)
            }
            cmd::QUERY | cmd::INIT_DB | cmd::PING | cmd::STATISTICS | cmd::PROCESS_KILL | cmd::FIELD_LIST
            | cmd::STMT_PREPARE | cmd::RESET_CONNECTION => {
                self.gated(payload).await?;
                Ok(true)
            }
            cmd::SET_OPTION => {
                if payload.len() < 3 {
                    return self.reply_err(1, MysqlError::malformed_packet("COM_SET_OPTION")).await;
                }
                self.gated(payload).await?;
                Ok(true)
            }
            cmd::STMT_EXECUTE | cmd::STMT_FETCH | cmd::STMT_RESET | cmd::STMT_SEND_LONG_DATA => {
                let name = match code {
                    cmd::STMT_EXECUTE => "mysqld_stmt_execute",
                    cmd::STMT_FETCH => "mysqld_stmt_fetch",
                    cmd::STMT_RESET => "mysqld_stmt_reset",
                    _ => "mysqld_stmt_send_long_data",
                };
                let Some(id) = payload.get(1..).and_then(|p| proto::Cursor::new(p).u32()) else {
                    if code == cmd::STMT_SEND_LONG_DATA {
                        return Ok(true); // no response to this command, even on error
                    }
                    return self.reply_err(1, MysqlError::malformed_packet(name)).await;
                };
                if id != u32::MAX && !self.state.statements.contains_key(&id) {
                    if code == cmd::STMT_SEND_LONG_DATA {
                        return Ok(true);
                    }
                    return self.reply_err(1, MysqlError::unknown_statement(id, name)).await;
                }
                self.gated(payload).await?;
                Ok(true)
            }
            cmd::STMT_CLOSE => {
                // No response. Forget it here (so it is not prepared again on a new
                // backend) and close it on the current backend if that one is fine.
                if let Some(id) = payload.get(1..).and_then(|p| proto::Cursor::new(p).u32()) {
                    if let Some(stmt) = self.state.statements.remove(&id) {
                        if let Some(b) = self.backend.as_mut().filter(|b| !b.is_stale()) {
                            let mut p = vec![cmd::STMT_CLOSE];
                            p.extend_from_slice(&stmt.backend_id.to_le_bytes());
                            if b.io.send(0, &p).await.is_err() {
                                self.backend = None;
                            }
                        }
                    }
                }
                Ok(true)
            }
            cmd::CHANGE_USER => {
                self.change_user(&payload).await?;
                Ok(true)
            }
            other => self.reply_err(1, MysqlError::unknown_command(other)).await,
        }
    }

    /// Run a command that goes to the primary: gate, backend, relay, bookkeeping.
    async fn gated(&mut self, payload: Bytes) -> Result<()> {
        let code = payload[0];
        let mut read_only_retries = 0;
        loop {
            let pinned = self.pin.is_some();
            let admission = if pinned {
                None
            } else {
                match self.cluster.gate.admit().await {
                    Ok(a) => Some(a),
                    Err(e) => {
                        let err = MysqlError::from_gate(e, &self.cluster.name);
                        self.client.send(1, &proto::err_payload(&err)).await?;
                        return Ok(());
                    }
                }
            };
            if pinned {
                if self.backend.as_ref().is_none_or(|b| b.is_stale()) {
                    // The backend went away inside a transaction: it was rolled back.
                    self.lose_transaction(code == cmd::QUERY && is_commit(&payload)).await?;
                    return Ok(());
                }
            } else if let Err(e) = self.ensure_backend().await {
                drop(admission);
                self.ctx.metrics.backend_error(BackendErrorClass::Connect);
                if read_only_retries < READ_ONLY_RETRIES && self.begin_reactive("primary unreachable") {
                    read_only_retries += 1;
                    continue;
                }
                self.client.send(1, &e.payload()).await?;
                return Ok(());
            }
            match self.execute(&payload).await {
                Ok(Relayed::Done(_)) => {}
                Ok(Relayed::ReadOnly(_)) if pinned => {
                    // Inside a transaction on a revoked primary (announced or not: a
                    // proxy cut off from the announcement learns it here): end it with
                    // one documented error (dropping the backend rolls it back), and
                    // hold what comes next until a primary is established.
                    self.ctx.metrics.backend_error(BackendErrorClass::ReadOnly);
                    if self.cluster.gate.phase() == Phase::Idle {
                        self.begin_reactive("primary is read-only (1290) inside a transaction");
                    }
                    self.backend = None;
                    self.lose_transaction(false).await?;
                    return Ok(());
                }
                Ok(Relayed::ReadOnly(err)) => {
                    drop(admission);
                    self.ctx.metrics.backend_error(BackendErrorClass::ReadOnly);
                    if read_only_retries < READ_ONLY_RETRIES && self.begin_reactive("primary is read-only (1290)") {
                        read_only_retries += 1;
                        continue;
                    }
                    let seq = 1;
                    self.client.send(seq, &err).await?;
                    return Ok(());
                }
                Err(ProxyError::BackendLost(why)) if !self.relayed_any => {
                    self.backend = None;
                    self.ctx.metrics.backend_error(BackendErrorClass::Lost);
                    if pinned {
                        self.lose_transaction(code == cmd::QUERY && is_commit(&payload)).await?;
                    } else {
                        // The statement may or may not have been applied (an implicit
                        // commit in flight): say so, and suspect the primary.
                        tracing::info!(%why, "backend lost during a command outside a transaction");
                        self.begin_reactive("connection to the primary lost");
                        self.client.send(1, &proto::err_payload(&MysqlError::statement_unknown(&why))).await?;
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            let keep = self.state.in_transaction() || self.long_data_pending;
            match admission {
                Some(mut a) if keep => {
                    a.finish_drain();
                    self.pin = Some(a);
                }
                Some(_) => {}
                None if !keep => self.pin = None,
                None => {}
            }
            return Ok(());
        }
    }

    /// End the client's transaction after its backend was lost or revoked.
    async fn lose_transaction(&mut self, during_commit: bool) -> Result<()> {
        self.backend = None;
        self.pin = None;
        self.long_data_pending = false;
        self.state.status &= !proto::SERVER_STATUS_IN_TRANS;
        let e = if during_commit { MysqlError::commit_unknown() } else { MysqlError::transaction_lost() };
        tracing::info!(error = %e, "transaction ended");
        self.client.send(1, &proto::err_payload(&e)).await?;
        Ok(())
    }

    /// Start reactive buffering (no reparent was announced, but the primary failed
    /// us). False when the gate declined (a failover ended too recently).
    fn begin_reactive(&self, reason: &str) -> bool {
        let Some((primary, term)) = self.ctx.primary_of(&self.cluster.name) else { return false };
        self.cluster.gate.begin(term, &primary, reason, false).is_some()
    }

    /// Make sure the backend session is alive and on the primary the topology names
    /// now; otherwise log in there and restore the session's state.
    async fn ensure_backend(&mut self) -> std::result::Result<(), MysqlErrorOrRaw> {
        // Hot path: same primary at the same term, and no buffering episode since the
        // last check (an episode may have killed idle connections: then look).
        let episode = self.cluster.gate.episode();
        if let Some(b) = &self.backend {
            let same = {
                let topo = self.ctx.topology.borrow();
                topo.cluster(&self.cluster.name).is_some_and(|r| r.term == self.backend_term && r.primary == b.addr)
            };
            if same && (episode == self.checked_episode || !b.is_stale()) {
                self.checked_episode = episode;
                return Ok(());
            }
        }
        self.checked_episode = episode;
        self.backend = None;
        let db = self.state.schema.clone();
        let mut login = Login {
            user: &self.user,
            stage1: &self.stage1,
            db: db.as_deref(),
            collation: self.collation,
            client_caps: self.caps,
            client_ext_caps: self.ext_caps,
        };
        let (mut backend, term) = match connect_primary(&self.ctx, &self.cluster.name, &login).await {
            Ok(b) => b,
            // The schema may be gone on the new primary: log in without it.
            Err(MysqlErrorOrRaw::Raw(_)) if db.is_some() => {
                login.db = None;
                connect_primary(&self.ctx, &self.cluster.name, &login).await?
            }
            Err(e) => return Err(e),
        };
        let deprecate_eof = self.deprecate_eof();
        let problems = crate::restore::restore(&mut backend, &mut self.state, deprecate_eof).await;
        if !problems.is_empty() {
            tracing::warn!(?problems, "session state not fully restored on the new backend");
        }
        tracing::debug!(addr = %backend.addr, term, "session moved to the primary");
        self.backend = Some(backend);
        self.backend_term = term;
        Ok(())
    }

    /// Send the command (statement ids mapped to the backend's) and relay the response.
    async fn execute(&mut self, payload: &Bytes) -> Result<Relayed> {
        self.relayed_any = false;
        let code = payload[0];
        let mut owned;
        let mut to_send: &[u8] = payload;
        if matches!(code, cmd::STMT_EXECUTE | cmd::STMT_FETCH | cmd::STMT_RESET | cmd::STMT_SEND_LONG_DATA) {
            let id = proto::Cursor::new(&payload[1..]).u32().unwrap_or(u32::MAX);
            let backend_id = if id == u32::MAX {
                u32::MAX // MariaDB: "the statement prepared last"
            } else {
                match self.state.statements.get(&id) {
                    Some(s) => s.backend_id,
                    None => {
                        if code != cmd::STMT_SEND_LONG_DATA {
                            let name = "mysqld_stmt_execute";
                            self.client.send(1, &proto::err_payload(&MysqlError::unknown_statement(id, name))).await?;
                        }
                        return Ok(Relayed::Done(false));
                    }
                }
            };
            owned = payload.to_vec();
            owned[1..5].copy_from_slice(&backend_id.to_le_bytes());
            to_send = &owned;
        } else {
            owned = Vec::new();
            let _ = &owned;
        }
        if code == cmd::STMT_PREPARE {
            self.pending_prepare = Some(payload.slice(1..));
        }
        let backend = self.backend.as_mut().expect("ensured");
        backend.io.send(0, to_send).await.map_err(backend_lost)?;
        let expect = match code {
            cmd::STMT_SEND_LONG_DATA => {
                self.long_data_pending = true;
                return Ok(Relayed::Done(true));
            }
            cmd::QUERY | cmd::STMT_EXECUTE => Expect::ResultSet,
            cmd::STMT_PREPARE => Expect::Prepare,
            cmd::STMT_FETCH | cmd::FIELD_LIST => Expect::Rows,
            _ => Expect::Single,
        };
        let r = self.relay(expect).await;
        self.pending_prepare = None;
        let r = r?;
        match (code, &r) {
            (cmd::STMT_EXECUTE | cmd::STMT_RESET, _) => self.long_data_pending = false,
            (cmd::SET_OPTION, Relayed::Done(true)) => self.state.multi_statements = Some(payload[1] == 0),
            (cmd::RESET_CONNECTION, Relayed::Done(true)) => {
                self.state.reset();
                self.long_data_pending = false;
                let b = self.backend.as_mut().expect("ensured");
                b.simple_command(SESSION_SETUP_SQL).await.map_err(|e| ProxyError::BackendLost(e.to_string()))?;
            }
            _ => {}
        }
        Ok(r)
    }

    async fn relay(&mut self, expect: Expect) -> Result<Relayed> {
        let mut scanner = Scanner::new(expect, self.deprecate_eof());
        let mut last_ok = false;
        let mut first = true;
        let term = self.backend_term;
        loop {
            let backend = self.backend.as_mut().expect("ensured");
            let pkt = if backend.io.has_buffered_packet() {
                backend.io.read_raw().await.map_err(backend_lost)?
            } else {
                let (topo, name) = (&mut self.topo_rx, &self.cluster.name);
                tokio::select! {
                    r = backend.io.read_raw() => r.map_err(backend_lost)?,
                    _ = replaced(topo, name, term) => {
                        return Err(ProxyError::BackendLost("the primary was replaced while the command ran".into()));
                    }
                }
            };
            let class = scanner.feed(&pkt);
            if first && class == Class::Err && proto::parse_err(pkt.payload()).is_some_and(|e| is_read_only(&e)) {
                return Ok(Relayed::ReadOnly(Bytes::copy_from_slice(pkt.payload())));
            }
            first = false;
            self.relayed_any = true;
            match class {
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
            if !self.backend.as_ref().expect("ensured").io.has_buffered_packet() || self.client.queued() >= FLUSH_AT {
                self.client.flush().await?;
            }
        }
        self.client.flush().await?;
        Ok(Relayed::Done(last_ok))
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
                            self.cluster.acked.record(value);
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
            let b = self.backend.as_mut().expect("ensured");
            b.io.queue_raw(&pkt.bytes);
            if b.io.queued() >= FLUSH_AT || pkt.payload_len() == 0 {
                b.io.flush().await.map_err(backend_lost)?;
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
        let verified = self.ctx.users().get(&user).cloned().and_then(|entry| auth::verify(&entry.hash, &self.nonce, &proof).map(|s1| (entry, s1)));
        let Some((entry, stage1)) = verified else {
            self.client.send(seq, &proto::err_payload(&denied)).await?;
            return Err(ProxyError::Io(std::io::ErrorKind::PermissionDenied.into()));
        };
        let Some(cluster) = self.ctx.clusters.get(&entry.cluster).cloned() else {
            let e = MysqlError::backend_unavailable(&entry.cluster, "?", "unknown cluster");
            self.client.send(seq, &proto::err_payload(&e)).await?;
            return Err(ProxyError::Io(std::io::ErrorKind::ConnectionAborted.into()));
        };
        let admission = match cluster.gate.admit().await {
            Ok(a) => a,
            Err(e) => {
                self.client.send(seq, &proto::err_payload(&MysqlError::from_gate(e, &cluster.name))).await?;
                return Err(ProxyError::Io(std::io::ErrorKind::ConnectionAborted.into()));
            }
        };
        let db = (!db.is_empty()).then_some(db);
        let login = Login { user: &user, stage1: &stage1, db: db.as_deref(), collation, client_caps: self.caps, client_ext_caps: self.ext_caps };
        match connect_primary(&self.ctx, &cluster.name, &login).await {
            Ok((backend, term)) => {
                drop(admission);
                if let Some(old) = self.backend.replace(backend) {
                    old.quit().await;
                }
                self.backend_term = term;
                self.user = user;
                self.stage1 = stage1;
                self.collation = collation;
                self.cluster = cluster;
                self.state = SessionState::new(db);
                self.pin = None;
                self.long_data_pending = false;
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

/// Resolves once the topology names a primary at a term other than `term`.
async fn replaced(rx: &mut tokio::sync::watch::Receiver<Arc<baton_control::Topology>>, cluster: &str, term: u64) {
    loop {
        if rx.borrow_and_update().cluster(cluster).is_some_and(|r| r.term != term) {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Is this COM_QUERY a COMMIT (whose outcome is unknown if the connection drops)?
fn is_commit(payload: &[u8]) -> bool {
    let sql = &payload[1..];
    let start = sql.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(sql.len());
    sql[start..].len() >= 6 && sql[start..start + 6].eq_ignore_ascii_case(b"commit")
}

fn backend_lost(e: ProxyError) -> ProxyError {
    ProxyError::BackendLost(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_read_only_option_counts_as_revoked() {
        let ro = (1290, "HY000".to_string(), "The MariaDB server is running with the --read-only option so it cannot execute this statement".to_string());
        let sfp = (1290, "HY000".to_string(), "The MariaDB server is running with the --secure-file-priv option so it cannot execute this statement".to_string());
        assert!(is_read_only(&ro));
        assert!(!is_read_only(&sfp));
        assert!(!is_read_only(&(1064, "42000".into(), "read-only".into())));
    }
}
