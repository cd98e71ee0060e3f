//! One client session: the command loop. Reads a command, parses it once
//! ([`Command`]), and answers it: most commands go to the primary through
//! [`route`] (gate, backend, loss handling), whose responses [`respond`] relays;
//! [`change_user`] re-authenticates; [`kill`] translates connection ids.
//!
//! Rules that hold everywhere here:
//! - every packet baton itself sends in reply carries the sequence id after the
//!   command's last one ([`Session::reply_seq`]);
//! - COM_STMT_SEND_LONG_DATA and COM_STMT_CLOSE are never answered: an error
//!   meant for long data is reported on the statement's COM_STMT_EXECUTE;
//! - a session never goes on without state it held: it moves with it, or ends
//!   with ERROR 9106.

mod change_user;
mod kill;
mod old_eof;
mod replay;
mod respond;
mod route;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::stream::Stream;
use baton_control::cluster::ClusterHandle;
use baton_control::gate::{Admission, Phase};
use bytes::Bytes;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use tokio_util::sync::CancellationToken;

use crate::auth::BackendSecret;
use crate::backend::{Backend, BackendError, Greeted, Login};
use crate::command::Command;
use crate::context::ProxyContext;
use crate::error::{MysqlError, ProxyError, Result};
use crate::handshake::Hello;
use crate::packet::PacketIo;
use crate::proto::{self, cmd};
use crate::state::SessionState;
use crate::threads::{Registration, Thread};

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

impl From<BackendError> for MysqlErrorOrRaw {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Refused(raw) => MysqlErrorOrRaw::Raw(raw),
            other => MysqlErrorOrRaw::Mysql(MysqlError::backend_lost(&other.to_string())),
        }
    }
}

pub struct Session {
    ctx: Arc<ProxyContext>,
    client: PacketIo<Stream>,
    peer: SocketAddr,
    caps: CapabilityFlags,
    ext_caps: MariadbCapabilities,
    user: String,
    secret: BackendSecret,
    nonce: [u8; 20],
    /// The client's collation (two bytes: COM_CHANGE_USER can name ids over 255).
    collation: u16,
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
    /// An error met by COM_STMT_SEND_LONG_DATA (which has no response), reported
    /// on the next COM_STMT_EXECUTE.
    long_data_error: Option<MysqlErrorOrRaw>,
    /// The SQL of the COM_STMT_PREPARE whose response is being relayed.
    pending_prepare: Option<Bytes>,
    /// Whether any byte of the current response reached the client.
    relayed_any: bool,
    /// Whether the current command was written to the backend.
    sent: bool,
    /// The client changed its session tracking: put baton's back on the backend.
    reassert_tracking: bool,
    /// A character set changed: read `@@collation_connection` after the response.
    refresh_collation: bool,
    /// The server reported a session state change (SESSION_TRACK_STATE_CHANGE)
    /// with no variable or schema change beside it, in the current response.
    state_changed: bool,
    /// Sequence id for baton's own reply to the current command.
    reply_seq: u8,
    /// The largest command accepted: the backend's `max_allowed_packet`, capped
    /// by `server.max_allowed_packet`.
    max_packet: usize,
    /// This session's connection id (the first backend's thread id) and where it points.
    registration: Registration,
    /// The topology, watched while waiting on the backend: a newer term means the
    /// primary was replaced (a hung one never answers), so the wait ends.
    topo_rx: tokio::sync::watch::Receiver<Arc<baton_control::Topology>>,
    /// `[transaction_replay]` when enabled (as when the session started).
    replay: Option<crate::context::ReplayLimits>,
    /// The open transaction's recording (transaction replay).
    recording: Option<crate::replay::Recording>,
    /// The checksum of the response being relayed (transaction replay).
    checksum: crate::replay::Checksum,
    /// What in the response being relayed cannot be replayed.
    unreplayable: Option<&'static str>,
    /// A `SET TRANSACTION` just run: the next transaction's first entry.
    tx_prefix: Option<crate::replay::Entry>,
    /// Before a command that may commit the recorded transaction: the backend's
    /// `@@server_id` and the acknowledged sequence numbers per domain.
    commit_floor: Option<(u32, std::collections::BTreeMap<u32, u64>)>,
}

/// Logins that find the primary unreachable are held (a reactive episode) and
/// tried again this many times in all.
const LOGIN_ATTEMPTS: u32 = 3;

impl Session {
    /// Finish the connection phase: log in to the primary (on the connection
    /// greeted before the client's greeting, when it is still the primary's),
    /// answer the client.
    pub async fn establish(
        ctx: Arc<ProxyContext>,
        mut client: PacketIo<Stream>,
        peer: SocketAddr,
        hello: Hello,
        greeted: Option<(Greeted, u64)>,
        registration: Registration,
    ) -> Result<Option<Session>> {
        let Some(cluster) = ctx.clusters.get(&hello.entry.cluster).cloned() else {
            let e = MysqlError::backend_unavailable(&hello.entry.cluster, "?", "unknown cluster");
            client.send(hello.next_seq, &proto::err_payload(&e)).await?;
            return Ok(None);
        };
        let login = Login {
            user: &hello.user,
            secret: &hello.secret,
            db: hello.db.as_deref(),
            collation: u16::from(hello.collation),
            client_caps: hello.caps,
            client_ext_caps: hello.ext_caps,
        };
        let timeout = ctx.limits().backend_connect_timeout;
        let mut greeted = greeted;
        let mut attempts = 0;
        // Why the last attempt failed: the answer if the hold ends without a primary.
        let mut unreachable: Option<MysqlErrorOrRaw> = None;
        let (mut backend, term, admission, generation) = loop {
            attempts += 1;
            let admission = match cluster.gate.admit().await {
                Ok(a) => a,
                Err(e) => {
                    let e = unreachable.unwrap_or_else(|| MysqlErrorOrRaw::Mysql(MysqlError::from_gate_of(e, &cluster)));
                    client.send(hello.next_seq, &e.payload()).await?;
                    return Ok(None);
                }
            };
            // Read before connecting: a failover's fence while it connects
            // shuts this connection down when it registers.
            let generation = cluster.fence.generation();
            // The greeted connection serves if it is on the primary the topology names now.
            let fresh = greeted.take().filter(|(g, term)| ctx.primary_of(&cluster.name).is_some_and(|(p, t)| p == g.addr() && t == *term));
            let connected = match fresh {
                Some((g, term)) => match g.login(&login, timeout).await {
                    Ok(b) => Ok((b, term)),
                    Err(BackendError::Refused(raw)) => Err(MysqlErrorOrRaw::Raw(raw)),
                    // The server gave up on the greeted connection (a client slower
                    // than its connect_timeout): a fresh one.
                    Err(_) => route::connect_primary(&ctx, &cluster.name, &login, registration.client_id()).await,
                },
                None => route::connect_primary(&ctx, &cluster.name, &login, registration.client_id()).await,
            };
            match connected {
                Ok((b, term)) => break (b, term, admission, generation),
                // The primary cannot be reached (not an ERR it sent): a login is
                // held like a statement, while a failover may name another.
                Err(e @ MysqlErrorOrRaw::Mysql(_))
                    if attempts < LOGIN_ATTEMPTS && route::begin_reactive(&ctx, &cluster, "primary unreachable at login") =>
                {
                    drop(admission);
                    unreachable = Some(e);
                }
                Err(e) => {
                    client.send(hello.next_seq, &e.payload()).await?;
                    return Ok(None);
                }
            }
        };
        drop(admission);
        backend.fence_with(&cluster.fence, generation);
        registration.moved(Thread { addr: backend.addr.clone(), id: backend.connection_id });
        client.send(hello.next_seq, &proto::ok_payload(0, proto::SERVER_STATUS_AUTOCOMMIT)).await?;
        let mut state = SessionState::new(hello.db);
        state.tracking = backend.defaults.tracking.clone();
        let max_packet = backend.defaults.max_allowed_packet.min(ctx.limits().max_allowed_packet);
        let ctx_replay = ctx.limits().replay.clone();
        Ok(Some(Session {
            topo_rx: ctx.topology.clone(),
            ctx,
            client,
            peer,
            caps: hello.caps,
            ext_caps: hello.ext_caps,
            user: hello.user,
            secret: hello.secret,
            nonce: hello.nonce,
            collation: u16::from(hello.collation),
            cluster,
            backend: Some(backend),
            backend_term: term,
            checked_episode: 0,
            state,
            pin: None,
            long_data_pending: false,
            long_data_error: None,
            pending_prepare: None,
            relayed_any: false,
            sent: false,
            reassert_tracking: false,
            refresh_collation: false,
            state_changed: false,
            reply_seq: 1,
            max_packet,
            registration,
            replay: ctx_replay,
            recording: None,
            checksum: crate::replay::Checksum::new(),
            unreplayable: None,
            tx_prefix: None,
            commit_floor: None,
        }))
    }

    /// The command loop, until the client quits or `close` is cancelled.
    pub async fn run(mut self, close: CancellationToken) -> Result<()> {
        loop {
            let read = tokio::select! {
                r = self.client.read_logical(self.max_packet) => r,
                _ = close.cancelled() => {
                    let _ = self.client.send(0, &proto::err_payload(&MysqlError::shutdown())).await;
                    if let Some(b) = self.backend.take() { b.quit().await; }
                    return Ok(());
                }
            };
            let (seq, last_seq, payload) = match read {
                Ok(p) => p,
                Err(e) => {
                    let seq = self.client.last_seq().wrapping_add(1);
                    return self.fail(e, seq).await;
                }
            };
            if seq != 0 {
                return self.fail(ProxyError::Fatal(MysqlError::packets_out_of_order()), seq.wrapping_add(1)).await;
            }
            self.reply_seq = last_seq.wrapping_add(1);
            let started = std::time::Instant::now();
            self.ctx.metrics.query(payload.first().copied().unwrap_or(0));
            let r = self.command(payload).await;
            self.ctx.metrics.query_duration.record(started.elapsed().as_secs_f64());
            match r {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => {
                    let seq = self.reply_seq;
                    return self.fail(e, seq).await;
                }
            }
        }
    }

    async fn fail(&mut self, e: ProxyError, seq: u8) -> Result<()> {
        if let Some(err) = e.client_error() {
            let _ = self.client.send(seq, &proto::err_payload(&err)).await;
        }
        Err(e)
    }

    /// Send baton's own ERR for the current command.
    async fn reply_err(&mut self, e: MysqlError) -> Result<bool> {
        self.client.send(self.reply_seq, &proto::err_payload(&e)).await?;
        Ok(true)
    }

    fn deprecate_eof(&self) -> bool {
        self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// Handle one command. Ok(false) ends the session cleanly.
    async fn command(&mut self, payload: Bytes) -> Result<bool> {
        let command = Command::parse(&payload);
        match command {
            Command::Quit => {
                if let Some(mut b) = self.backend.take() {
                    let _ = b.send(0, &[cmd::QUIT]).await;
                }
                Ok(false)
            }
            Command::Malformed { silent: true, .. } => Ok(true),
            Command::Malformed { name, .. } => self.reply_err(MysqlError::malformed_packet(name)).await,
            Command::Unknown(code) => self.reply_err(MysqlError::unknown_command(code)).await,
            Command::Close { id } => {
                self.close_statement(id).await;
                Ok(true)
            }
            Command::ChangeUser => {
                self.change_user(&payload).await?;
                Ok(true)
            }
            Command::Ping | Command::Statistics if self.pin.is_none() && self.cluster.gate.phase() != Phase::Idle => {
                // A pool's validation must not wait for the buffering window.
                self.answer_locally(&command).await?;
                Ok(true)
            }
            Command::Execute { .. } | Command::Fetch { .. } | Command::Reset { .. } | Command::LongData { .. } => {
                let id = command.statement_id().unwrap_or(0);
                if matches!(command, Command::Reset { .. }) {
                    self.long_data_error = None;
                } else if matches!(command, Command::Execute { .. }) {
                    if let Some(e) = self.long_data_error.take() {
                        self.long_data_pending = false;
                        self.client.send(self.reply_seq, &e.payload()).await?;
                        return Ok(true);
                    }
                }
                // 0xFFFFFFFF with no statement prepared last (never, failed or
                // closed): the server's 1243, whichever backend this is.
                if self.state.statement(id).is_none() {
                    if matches!(command, Command::LongData { .. }) {
                        return Ok(true);
                    }
                    return self.reply_err(MysqlError::unknown_statement(id, command.statement_command_name())).await;
                }
                self.route(payload, command).await?;
                Ok(true)
            }
            _ => {
                self.route(payload, command).await?;
                Ok(true)
            }
        }
    }

    /// COM_STMT_CLOSE: no response. Forget the statement (so it is not prepared
    /// again on a new backend) and close it on the current backend if that one is fine.
    async fn close_statement(&mut self, id: u32) {
        let Some((id, _)) = self.state.statement(id) else { return };
        let Some(stmt) = self.state.statements.remove(&id) else { return };
        self.state.cursors.remove(&id);
        if self.state.last_prepared == Some(id) {
            self.state.last_prepared = None;
        }
        if let Some(b) = self.backend.as_mut() {
            if b.is_stale() {
                return;
            }
            let mut p = vec![cmd::STMT_CLOSE];
            p.extend_from_slice(&stmt.backend_id.to_le_bytes());
            if b.send(0, &p).await.is_err() {
                self.backend = None;
            }
        }
    }

    /// COM_PING and COM_STATISTICS while the cluster buffers: answered by baton.
    async fn answer_locally(&mut self, command: &Command) -> Result<()> {
        let payload = match command {
            Command::Ping => proto::ok_payload(0, self.state.status & !proto::SERVER_SESSION_STATE_CHANGED),
            _ => format!(
                "Uptime: {}  Threads: {}  Questions: 0  Slow queries: 0  Opens: 0  Open tables: 0  Queries per second avg: 0.000",
                self.ctx.uptime().as_secs(),
                self.ctx.threads.len()
            )
            .into_bytes(),
        };
        self.client.send(self.reply_seq, &payload).await?;
        Ok(())
    }
}
