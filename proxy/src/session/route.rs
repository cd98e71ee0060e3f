//! Taking a command to the primary: pass the cluster's gate (unless inside a
//! transaction), make sure the backend session is on the primary the topology
//! names now (moving it there with its state, between transactions), send, and
//! decide what a client gets when the backend fails.
//!
//! Outcomes, from what the server reported and where the failure happened:
//! - the backend was closed by its server (`wait_timeout`, `KILL CONNECTION`,
//!   idle or mid-command) while the primary answers a fresh connection and no
//!   reparent or failover is under way: as on the server, the client's
//!   connection is closed (its library reports 2006/2013);
//! - the command never reached a server: held and sent again (outside a
//!   transaction) or 9101 (inside one: it was rolled back);
//! - it reached the server, no answer came, and the primary is gone (or a
//!   reparent or failover is under way): 9105 outside a transaction; inside
//!   one, 9105 if the text can end a transaction, else 9101; the session lives
//!   and moves to the next primary;
//! - the first answer is the read-only ERR 1290 and the text proves nothing ran
//!   (not CALL, EXECUTE or a compound statement): held and sent again;
//! - the session holds state that cannot move (named locks, ...) and its backend
//!   must change: 9106, connection closed.
//!
//! A session's own lost backend starts a buffering episode only if a fresh
//! probe of the primary fails too.

use std::borrow::Cow;
use std::task::{Context, Poll};

use crate::stream::Stream;
use baton_control::gate::{Admission, Phase};
use baton_control::metrics::BackendErrorClass;
use bytes::Bytes;
use tokio::io::ReadBuf;

use super::replay::Resume;
use super::{MysqlErrorOrRaw, Session};
use crate::backend::{Backend, Login};
use crate::command::Command;
use crate::context::ProxyContext;
use crate::error::{MysqlError, ProxyError, Result};
use crate::packet::PacketIo;
use crate::proto::{self, cmd};
use crate::relay::Expect;
use crate::threads::Thread;

/// ER_OPTION_PREVENTS_STATEMENT: the server is read-only.
const ER_READ_ONLY: u16 = 1290;
/// How many times one command is held again after the primary refused it as read-only.
const READ_ONLY_RETRIES: usize = 3;
/// A backend idle at least this long is checked for a close by its server before
/// the next command; a busier one is not.
const STALE_CHECK_AFTER: std::time::Duration = std::time::Duration::from_millis(100);
/// Replays one command may lead to (a new primary lost again after each).
const MAX_REPLAYS: u32 = 3;
/// Attempts to get a backend thread id that is not another session's client id.
const ID_ATTEMPTS: usize = 3;

/// ERR 1290 ("running with the %s option") because of `--read-only`, not another
/// option (e.g. `--secure-file-priv`, which is the application's error to see).
pub(super) fn is_read_only(err: &(u16, String, String)) -> bool {
    err.0 == ER_READ_ONLY && {
        let m = err.2.to_ascii_lowercase();
        m.contains("read-only") || m.contains("read_only")
    }
}

/// How a relayed command ended.
pub(super) enum Relayed {
    /// The response was relayed; whether its last packet was OK rather than ERR.
    Done(bool),
    /// The primary refused the command as read-only (ERR 1290) before anything
    /// was relayed. The ERR packet, unrelayed.
    ReadOnly(Bytes),
}

/// Why the backend could not be made ready.
pub(super) enum NotReady {
    /// No connection to the primary (refused, unreachable): the error for the client.
    Unavailable(MysqlErrorOrRaw),
    /// The server closed this session's idle backend: close the client too.
    ServerClosed,
    /// The backend must change but the session holds state that cannot move.
    StateLost(String),
}

/// Connect a backend session for `login` on the cluster's current primary, with
/// a thread id that is not another live session's client id (so `KILL <id>`
/// stays unambiguous).
pub(super) async fn connect_primary(
    ctx: &ProxyContext,
    cluster: &str,
    login: &Login<'_>,
    own_id: u32,
) -> std::result::Result<(Backend, u64), MysqlErrorOrRaw> {
    let Some((addr, term)) = ctx.primary_of(cluster) else {
        return Err(MysqlErrorOrRaw::Mysql(MysqlError::backend_unavailable(cluster, "?", "no primary in the topology")));
    };
    let timeout = ctx.limits().backend_connect_timeout;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let greeted = Backend::greet(&addr, ctx.backend_tls(cluster).as_ref(), timeout).await.map_err(|e| unavailable(cluster, &addr, e))?;
        let id = greeted.connection_id();
        if id != own_id && ctx.threads.is_client_id(id) && attempt < ID_ATTEMPTS {
            continue; // dropped unauthenticated; the next connection gets a new id
        }
        let b = greeted.login(login, timeout).await.map_err(|e| unavailable(cluster, &addr, e))?;
        return Ok((b, term));
    }
}

/// Start reactive buffering on `cluster` at the term the topology names now.
/// False when the gate declined (a failover ended too recently, or no primary
/// is coming).
pub(super) fn begin_reactive(ctx: &ProxyContext, cluster: &baton_control::cluster::ClusterHandle, reason: &str) -> bool {
    let Some((primary, term)) = ctx.primary_of(&cluster.name) else { return false };
    cluster.gate.begin(term, &primary, reason, false).is_some()
}

fn unavailable(cluster: &str, addr: &str, e: crate::backend::BackendError) -> MysqlErrorOrRaw {
    match e {
        crate::backend::BackendError::Refused(raw) => MysqlErrorOrRaw::Raw(raw),
        other => MysqlErrorOrRaw::Mysql(MysqlError::backend_unavailable(cluster, addr, &other.to_string())),
    }
}

/// Resolves when the client's connection is closed (EOF or error). Pending
/// forever once the client has sent more bytes (a pipelined command).
async fn client_gone(io: &mut PacketIo<Stream>) {
    if io.has_buffered_bytes() {
        return std::future::pending().await;
    }
    if io.get_ref().is_tls() {
        // Through TLS (a close_notify ends the stream); bytes read are kept.
        if io.fill_some().await.is_ok() {
            std::future::pending::<()>().await;
        }
        return;
    }
    let Some(tcp) = io.get_ref().tcp() else { return };
    let mut b = [0u8; 1];
    match tcp.peek(&mut b).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Has the client closed its connection (checked without waiting)?
fn client_closed_now(io: &mut PacketIo<Stream>) -> bool {
    if io.has_buffered_bytes() {
        return false;
    }
    if io.get_ref().is_tls() {
        return matches!(io.fill_now(), Some(Err(_))) && !io.has_buffered_bytes();
    }
    let mut b = [0u8; 1];
    let mut buf = ReadBuf::new(&mut b);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let Some(tcp) = io.get_ref().tcp() else { return true };
    matches!(tcp.poll_peek(&mut cx, &mut buf), Poll::Ready(Ok(0)) | Poll::Ready(Err(_)))
}

impl Session {
    /// Pass the gate; while held, a client that hangs up leaves the queue and its
    /// command is never executed (counted as `client_gone`).
    pub(super) async fn admit(&mut self) -> Result<std::result::Result<Admission, MysqlError>> {
        let held = self.cluster.gate.phase() != Phase::Idle;
        let r = tokio::select! {
            // The gate first: when idle it admits at once, and the client's
            // socket is never looked at (no system call on the hot path).
            biased;
            r = self.cluster.gate.admit() => r,
            _ = client_gone(&mut self.client) => {
                return Err(ProxyError::Io(std::io::ErrorKind::ConnectionAborted.into()));
            }
        };
        match r {
            Ok(a) => {
                if held && client_closed_now(&mut self.client) {
                    self.cluster.gate.counters.evicted_client_gone.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(ProxyError::Io(std::io::ErrorKind::ConnectionAborted.into()));
                }
                Ok(Ok(a))
            }
            Err(e) => Ok(Err(MysqlError::from_gate_of(e, &self.cluster))),
        }
    }

    /// Answer the current command with an error, unless it is one that has no
    /// response (COM_STMT_SEND_LONG_DATA: kept for its COM_STMT_EXECUTE).
    async fn answer_error(&mut self, command: &Command, e: MysqlErrorOrRaw) -> Result<()> {
        if matches!(command, Command::LongData { .. }) {
            self.long_data_error = Some(e);
            return Ok(());
        }
        self.client.send(self.reply_seq, &e.payload()).await?;
        Ok(())
    }

    /// The analysis of the SQL the command runs (COM_QUERY's text, or a prepared
    /// statement's), if it has one.
    fn analysis<'a>(&'a self, command: &'a Command) -> Option<&'a crate::sql::Analysis> {
        match command {
            Command::Query(a) => Some(a),
            Command::Execute { id, .. } => self.state.statement(*id).map(|(_, s)| &s.analysis),
            _ => None,
        }
    }

    /// Run a command that goes to the primary: gate, backend, send, relay, bookkeeping.
    pub(super) async fn route(&mut self, payload: Bytes, command: Command) -> Result<()> {
        let mut read_only_retries = 0;
        // Transaction replays this command led to (each after a new cut).
        let mut replays = 0;
        loop {
            let pinned = self.pin.is_some();
            if !pinned && matches!(command, Command::Ping | Command::Statistics) && self.cluster.gate.phase() != Phase::Idle {
                // Lost its backend, and the cluster buffers now: as when it
                // arrived while buffering, a pool's validation does not wait.
                return self.answer_locally(&command).await;
            }
            let mut admission = if pinned {
                None
            } else {
                match self.admit().await? {
                    Ok(a) => Some(a),
                    Err(e) => return self.answer_error(&command, MysqlErrorOrRaw::Mysql(e)).await,
                }
            };
            if pinned {
                if self.backend.as_mut().is_none_or(|b| b.is_stale()) {
                    if self.cluster.gate.episode() == self.checked_episode && self.backend.is_some() && self.probe_primary().await {
                        // Closed by its server (KILL, wait_timeout), not by a reparent.
                        return Err(server_closed());
                    }
                    if self.cluster.gate.episode() == self.checked_episode {
                        // The primary died under the idle transaction.
                        self.begin_reactive("a transaction's backend closed and a fresh probe of the primary failed");
                    }
                    // Revoked or lost before this command reached it: rolled back.
                    if self.on_cut(&command, false, &mut replays).await? {
                        continue;
                    }
                    return Ok(());
                }
            } else {
                match self.ensure_backend().await {
                    Ok(()) => {}
                    Err(NotReady::ServerClosed) => {
                        // Closed with nothing moving: by its server (KILL,
                        // wait_timeout), or the primary died while the session was
                        // idle. A fresh probe tells them apart: held like a command
                        // that found the primary gone, or closed as the server would.
                        drop(admission);
                        if self.probe_primary().await {
                            return Err(server_closed());
                        }
                        self.backend = None;
                        if read_only_retries < READ_ONLY_RETRIES
                            && self.begin_reactive("the session's backend closed and a fresh probe of the primary failed")
                        {
                            read_only_retries += 1;
                            continue;
                        }
                        let e = MysqlError::backend_unavailable(&self.cluster.name, "?", "the primary does not answer");
                        return self.answer_error(&command, MysqlErrorOrRaw::Mysql(e)).await;
                    }
                    Err(NotReady::StateLost(what)) => {
                        return Err(ProxyError::Fatal(MysqlError::session_state_lost(&what)));
                    }
                    Err(NotReady::Unavailable(e)) => {
                        drop(admission);
                        self.ctx.metrics.backend_error(BackendErrorClass::Connect);
                        // An ERR from the server (refused login, too many
                        // connections) is this session's answer: the primary is up.
                        let unreachable = matches!(e, MysqlErrorOrRaw::Mysql(_));
                        if unreachable && read_only_retries < READ_ONLY_RETRIES && self.begin_reactive("primary unreachable") {
                            read_only_retries += 1;
                            continue;
                        }
                        return self.answer_error(&command, e).await;
                    }
                }
            }
            if self.cluster.replaying.pending() && matches!(command, Command::Query(_) | Command::Execute { .. }) {
                // Transactions cut by the last reparent or crash re-run first:
                // they must find the new primary as the cut left it (also before
                // the next statements of a transaction already replayed, which
                // could take an id another replay pins). This request's drain
                // permits go back, so replays are not kept from the gate.
                if let Some(a) = admission.as_mut() {
                    a.finish_drain();
                }
                self.cluster.replaying.wait_clear().await;
            }
            let to_send = match self.translate(&payload, &command) {
                Ok(p) => p,
                Err(e) => return self.answer_error(&command, MysqlErrorOrRaw::Mysql(e)).await,
            };
            let episode_at_start = self.cluster.gate.episode();
            let (was_in, insert_id_before) = (self.state.in_transaction(), self.state.last_insert_id);
            if pinned && self.replay.is_some() {
                self.note_commit_floor(self.may_commit(&command));
            }
            let result = self.execute(&to_send, &command).await;
            drop(to_send);
            match result {
                Ok(Relayed::Done(_)) => self.record(&payload, &command, was_in, insert_id_before),
                Ok(Relayed::ReadOnly(err)) if pinned => {
                    // Inside a transaction on a revoked primary (announced or not: a
                    // proxy cut off from the announcement learns it here).
                    self.ctx.metrics.backend_error(BackendErrorClass::ReadOnly);
                    if self.cluster.gate.phase() == Phase::Idle {
                        self.begin_reactive("primary is read-only (1290) inside a transaction");
                    }
                    if !self.analysis(&command).is_none_or(|a| a.refusal_proves_unexecuted) {
                        // A CALL or compound statement may have run (even
                        // committed) statements before the refused one: the
                        // server's own error, as it is; the session stays on its
                        // backend, as on the server.
                        self.client.send(self.reply_seq, &err).await?;
                        return Ok(());
                    }
                    // Nothing of it ran: end the transaction with one documented
                    // error (dropping the backend rolls it back), and hold what
                    // comes next until a primary is established.
                    self.backend = None;
                    if self.on_cut(&command, false, &mut replays).await? {
                        continue;
                    }
                    return Ok(());
                }
                Ok(Relayed::ReadOnly(err)) => {
                    drop(admission);
                    self.ctx.metrics.backend_error(BackendErrorClass::ReadOnly);
                    let unexecuted = self.analysis(&command).is_none_or(|a| a.refusal_proves_unexecuted);
                    if unexecuted && read_only_retries < READ_ONLY_RETRIES && self.begin_reactive("primary is read-only (1290)") {
                        read_only_retries += 1;
                        continue;
                    }
                    if !unexecuted {
                        // A CALL or compound statement may have run statements
                        // before the refused one: the server's error, as it is.
                        self.begin_reactive("primary is read-only (1290)");
                    }
                    self.client.send(self.reply_seq, &err).await?;
                    return Ok(());
                }
                Err(ProxyError::BackendLost(why)) if !self.relayed_any => {
                    self.backend = None;
                    self.ctx.metrics.backend_error(BackendErrorClass::Lost);
                    // A reparent or failover (an episode, a new term) is baton's
                    // doing: the documented errors, and the session moves on.
                    // Otherwise a fresh connection to the primary tells a server
                    // that closed this session (KILL CONNECTION, a cut link) from a
                    // primary that is gone.
                    let moved = self.cluster.gate.episode() != episode_at_start
                        || self.cluster.gate.phase() != Phase::Idle
                        || self.ctx.primary_of(&self.cluster.name).is_none_or(|(_, t)| t != self.backend_term);
                    if !moved {
                        if self.probe_primary().await {
                            // As the server closes it: the client library reports 2013.
                            tracing::info!(%why, "backend closed while the command ran and the primary answers: closing the client");
                            return Err(server_closed());
                        }
                        self.begin_reactive("connection to the primary lost, and a fresh probe failed");
                    }
                    if pinned {
                        let may_commit = self.sent && self.may_commit(&command);
                        if self.on_cut(&command, may_commit, &mut replays).await? {
                            continue;
                        }
                        return Ok(());
                    }
                    if (!self.sent || self.resendable(&command)) && read_only_retries < READ_ONLY_RETRIES {
                        // Never reached a server, or a BEGIN (nothing of it
                        // outlives the lost connection): safe to hold and send again.
                        drop(admission);
                        read_only_retries += 1;
                        continue;
                    }
                    if !self.sent {
                        let e = MysqlError::backend_unavailable(&self.cluster.name, "?", &why);
                        return self.answer_error(&command, MysqlErrorOrRaw::Mysql(e)).await;
                    }
                    // It reached the server and no answer came: it may have run.
                    tracing::info!(%why, "backend lost during a command outside a transaction");
                    return self.answer_error(&command, MysqlErrorOrRaw::Mysql(MysqlError::statement_unknown(&why))).await;
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

    /// The open transaction was cut at `command` (revoked or lost): replay it
    /// (true: send `command` again, on the new primary now) or end it (false:
    /// the client has its error). At most [`MAX_REPLAYS`] replays per command.
    async fn on_cut(&mut self, command: &Command, may_commit: bool, replays: &mut u32) -> Result<bool> {
        match self.replay_or_lose(command, may_commit).await? {
            Resume::Continue if *replays < MAX_REPLAYS => {
                *replays += 1;
                Ok(true)
            }
            Resume::Continue => self.lose_transaction(command, false).await.map(|_| false),
            Resume::Answered => Ok(false),
        }
    }

    /// Outside a transaction, is this command safe to send again after its
    /// connection was lost mid-flight? Those that change nothing the lost
    /// connection's server keeps: a BEGIN, a SELECT that calls nothing, and the
    /// commands without SQL that write no data (ping, statistics, schema
    /// change, field list, prepare, statement reset, set option). Not other
    /// COM_QUERY or COM_STMT_EXECUTE: they may have written.
    fn resendable(&self, command: &Command) -> bool {
        match command {
            // Not after a `SET TRANSACTION` (the new backend never saw it).
            Command::Query(a) => (a.only_begins && self.tx_prefix.is_none()) || a.side_effect_free,
            Command::Ping
            | Command::Statistics
            | Command::InitDb
            | Command::FieldList
            | Command::Prepare
            | Command::Reset { .. }
            | Command::SetOption(_) => true,
            _ => false,
        }
    }

    /// Could this command commit an open transaction? Its SQL says (unknown
    /// SQL: yes); commands without SQL that a transaction cannot end on
    /// (prepare, reset, fetch, field list, long data, close, ping): no.
    fn may_commit(&self, command: &Command) -> bool {
        match command {
            Command::Prepare
            | Command::Reset { .. }
            | Command::Fetch { .. }
            | Command::FieldList
            | Command::LongData { .. }
            | Command::Close { .. }
            | Command::Ping
            | Command::Statistics => false,
            _ => self.analysis(command).is_none_or(|a| a.may_end_transaction),
        }
    }

    /// Does the primary the topology names answer a new connection (its
    /// greeting or an ERR in its place, within the backend connect timeout)?
    async fn probe_primary(&self) -> bool {
        let Some((addr, _)) = self.ctx.primary_of(&self.cluster.name) else { return false };
        // An ERR greeting (too many connections, host blocked) is a live server.
        // A liveness probe: the greeting is enough (no TLS handshake).
        matches!(Backend::greet(&addr, None, self.ctx.limits().backend_connect_timeout).await, Ok(_) | Err(crate::backend::BackendError::Refused(_)))
    }

    /// End the client's transaction after its backend was lost or revoked:
    /// 9105 if the command may have committed it, else 9101 (rolled back).
    pub(super) async fn lose_transaction(&mut self, command: &Command, may_commit: bool) -> Result<()> {
        self.backend = None;
        self.pin = None;
        self.long_data_pending = false;
        self.state.status &= !proto::SERVER_STATUS_IN_TRANS;
        let e = if may_commit { MysqlError::commit_unknown() } else { MysqlError::transaction_lost() };
        tracing::info!(error = %e, "transaction ended");
        self.answer_error(command, MysqlErrorOrRaw::Mysql(e)).await
    }

    /// Start reactive buffering (no reparent was announced, but the primary failed
    /// us). False when the gate declined (a failover ended too recently).
    pub(super) fn begin_reactive(&self, reason: &str) -> bool {
        begin_reactive(&self.ctx, &self.cluster, reason)
    }

    /// Make sure the backend session is alive and on the primary the topology names
    /// now; otherwise log in there and restore the session's state.
    pub(super) async fn ensure_backend(&mut self) -> std::result::Result<(), NotReady> {
        let episode = self.cluster.gate.episode();
        if let Some(b) = self.backend.as_mut() {
            let same = {
                let topo = self.ctx.topology.borrow();
                topo.cluster(&self.cluster.name).is_some_and(|r| r.term == self.backend_term && r.primary == b.addr)
            };
            if same {
                // Busy sessions skip the check (a system call): a close in that
                // short gap surfaces on the next command, with the same outcome.
                let recent = b.idle_for() < STALE_CHECK_AFTER && episode == self.checked_episode;
                if recent || !b.is_stale() {
                    self.checked_episode = episode;
                    return Ok(());
                }
                if episode == self.checked_episode {
                    // No reparent or failover since it was last fine: its server closed it.
                    return Err(NotReady::ServerClosed);
                }
            }
        }
        let pins = self.state.pins();
        if !pins.is_empty() {
            return Err(NotReady::StateLost(pins.describe()));
        }
        self.checked_episode = episode;
        self.backend = None;
        let db = self.state.schema.clone();
        let mut login = Login {
            user: &self.user,
            secret: &self.secret,
            db: db.as_deref(),
            collation: self.collation,
            client_caps: self.caps,
            client_ext_caps: self.ext_caps,
        };
        let own = self.registration.client_id();
        let generation = self.cluster.fence.generation();
        let (mut backend, term) = match connect_primary(&self.ctx, &self.cluster.name, &login, own).await {
            Ok(b) => b,
            // The schema may be gone on the new primary: log in without it.
            Err(MysqlErrorOrRaw::Raw(_)) if db.is_some() => {
                login.db = None;
                connect_primary(&self.ctx, &self.cluster.name, &login, own).await.map_err(NotReady::Unavailable)?
            }
            Err(e) => return Err(NotReady::Unavailable(e)),
        };
        if let Err(what) = crate::restore::restore(&mut backend, &mut self.state).await {
            tracing::warn!(%what, "session state could not be restored on the new backend");
            return Err(NotReady::StateLost(what));
        }
        tracing::debug!(addr = %backend.addr, term, "session moved to the primary");
        self.registration.moved(Thread { addr: backend.addr.clone(), id: backend.connection_id });
        self.max_packet = backend.defaults.max_allowed_packet.min(self.ctx.limits().max_allowed_packet);
        backend.fence_with(&self.cluster.fence, generation);
        self.backend = Some(backend);
        self.backend_term = term;
        Ok(())
    }

    /// The bytes to send for this command: statement ids mapped to the backend's,
    /// a KILL's connection id translated to the thread it names now.
    fn translate<'a>(&self, payload: &'a Bytes, command: &Command) -> std::result::Result<Cow<'a, [u8]>, MysqlError> {
        match command {
            Command::Execute { id, .. } | Command::Fetch { id } | Command::Reset { id } | Command::LongData { id } => {
                // 0xFFFFFFFF ("prepared last") is mapped too: after a move the
                // backend's last prepared statement may be another one.
                let Some((_, s)) = self.state.statement(*id) else {
                    return Ok(Cow::Borrowed(&payload[..]));
                };
                let mut owned = payload.to_vec();
                owned[1..5].copy_from_slice(&s.backend_id.to_le_bytes());
                Ok(Cow::Owned(owned))
            }
            Command::Query(a) => match &a.kill {
                Some(k) => self.translate_kill(k).map(|t| match t {
                    Some(t) => Cow::Owned([&[cmd::QUERY][..], k.prefix.as_bytes(), t.to_string().as_bytes(), k.suffix.as_bytes()].concat()),
                    None => Cow::Borrowed(&payload[..]),
                }),
                None => Ok(Cow::Borrowed(&payload[..])),
            },
            Command::ProcessKill(id) => {
                self.translate_kill(&crate::sql::Kill { prefix: String::new(), id: u64::from(*id), suffix: String::new() }).map(|t| match t {
                    Some(t) => {
                        let mut p = vec![cmd::PROCESS_KILL];
                        p.extend_from_slice(&t.to_le_bytes());
                        Cow::Owned(p)
                    }
                    None => Cow::Borrowed(&payload[..]),
                })
            }
            _ => Ok(Cow::Borrowed(&payload[..])),
        }
    }

    /// Send the command and relay the response.
    async fn execute(&mut self, to_send: &[u8], command: &Command) -> Result<Relayed> {
        self.relayed_any = false;
        self.sent = false;
        if self.replay.is_some() {
            self.checksum = crate::replay::Checksum::new();
            self.unreplayable = None;
        }
        if let Command::Prepare = command {
            self.pending_prepare = Some(Bytes::copy_from_slice(&to_send[1..]));
        }
        let backend = self.backend.as_mut().expect("ensured");
        backend.send(0, to_send).await?;
        self.sent = true;
        let expect = match command {
            Command::LongData { .. } => {
                self.long_data_pending = true;
                return Ok(Relayed::Done(true));
            }
            Command::Query(_) | Command::Execute { .. } => Expect::ResultSet,
            Command::Prepare => Expect::Prepare,
            Command::Fetch { .. } | Command::FieldList => Expect::Rows,
            _ => Expect::Single,
        };
        let r = self.relay(expect).await;
        if self.pending_prepare.take().is_some() && matches!(r, Ok(Relayed::Done(false))) {
            // A failed prepare: the server's "prepared last" is no statement now.
            self.state.last_prepared = None;
        }
        let r = r?;
        self.after(command, &r).await?;
        Ok(r)
    }

    /// Bookkeeping after a relayed response: pins, cursors, options, tracking.
    /// Never fails towards the client (its response is complete): if the backend
    /// fails during baton's own follow-up, it is dropped and the next command
    /// finds it gone.
    async fn after(&mut self, command: &Command, r: &Relayed) -> Result<()> {
        let ok = matches!(r, Relayed::Done(true));
        let state_changed = std::mem::take(&mut self.state_changed);
        let analysis = match command {
            Command::Query(a) => Some((**a).clone()),
            Command::Execute { id, .. } => self.state.statement(*id).map(|(_, s)| s.analysis.clone()),
            _ => None,
        };
        if let Some(a) = &analysis {
            self.state.held = self.state.held.union(a.pins).without(a.unpins);
            if state_changed && a.pins.is_empty() && a.touches_tracking == 0 {
                // The server says session state changed and nothing baton read
                // explains it (a procedure's user variables or temporary tables).
                // A change of the client's session tracking explains itself even
                // when the narrowed tracking no longer names it: `follow_up`
                // reads the tracking back.
                self.state.held = self.state.held.union(crate::sql::Pins::SERVER_STATE);
            }
            for name in &a.defaulted {
                self.state.variables.remove(name.as_bytes());
            }
        }
        match command {
            Command::Execute { id, cursor } => {
                self.long_data_pending = false;
                if let Some((id, _)) = self.state.statement(*id) {
                    self.state.cursors.remove(&id);
                    if *cursor && ok && self.state.status & proto::SERVER_STATUS_CURSOR_EXISTS != 0 {
                        self.state.cursors.insert(id);
                    }
                }
            }
            Command::Fetch { id } if self.state.status & proto::SERVER_STATUS_LAST_ROW_SENT != 0 || !ok => {
                if let Some((id, _)) = self.state.statement(*id) {
                    self.state.cursors.remove(&id);
                }
            }
            Command::Reset { id } => {
                self.long_data_pending = false;
                if let Some((id, _)) = self.state.statement(*id) {
                    self.state.cursors.remove(&id);
                }
            }
            Command::SetOption(on) if ok => self.state.multi_statements = Some(*on),
            Command::ResetConnection if ok => {
                let tracking = self.backend.as_ref().map(|b| b.defaults.tracking.clone()).unwrap_or_default();
                self.state.reset();
                self.state.tracking = tracking;
                self.long_data_pending = false;
                self.long_data_error = None;
                self.reassert_tracking = true;
            }
            _ => {}
        }
        if let Err(e) = self.follow_up(analysis.as_ref(), ok).await {
            tracing::info!(error = %e, "backend lost during baton's follow-up; the next command reconnects");
            self.backend = None;
        }
        Ok(())
    }

    /// baton's own statements after a response: read back what the server does
    /// not report (a client's tracking change, `collation_connection`), record the
    /// GTID of a write made while the client had tracking off, and put baton's
    /// tracking back.
    async fn follow_up(&mut self, analysis: Option<&crate::sql::Analysis>, ok: bool) -> std::result::Result<(), crate::backend::BackendError> {
        let b = self.backend.as_mut().expect("ensured");
        let named = analysis.map(|a| a.touches_tracking).unwrap_or(0);
        if named != 0 {
            let row =
                b.query_row("SELECT @@session_track_system_variables, @@session_track_schema, @@session_track_state_change, @@last_gtid").await?;
            if let [Some(vars), Some(schema), Some(state), gtid] = row.as_slice() {
                // Only what the statement named is the client's (the rest is
                // baton's); a failed SET changed nothing; SET STATEMENT changed
                // it for one statement.
                if ok && !analysis.is_some_and(|a| a.set_statement) {
                    if named & 1 != 0 {
                        self.state.tracking.set_variables(vars);
                    }
                    if named & 2 != 0 {
                        self.state.tracking.set_schema(schema);
                    }
                    if named & 4 != 0 {
                        self.state.tracking.set_state_change(state);
                    }
                }
                if let Some(g) = gtid.as_ref().filter(|g| !g.is_empty()) {
                    let acked = &self.cluster.acked;
                    if !self.cluster.fence.acknowledge(b.fence_generation(), || acked.record(g)) {
                        // Already answered OK (the client had tracking off): a
                        // failover fenced this connection in between. Logged; the
                        // outcome on the new primary is what its history says.
                        tracing::warn!(gtid = %String::from_utf8_lossy(g), "a write acknowledged after a failover's fence");
                    }
                }
            }
            self.reassert_tracking = true;
        }
        if std::mem::take(&mut self.refresh_collation) {
            let row = b.query_row("SELECT @@collation_connection").await?;
            if let [Some(c)] = row.as_slice() {
                self.state.variables.insert(b"collation_connection".to_vec(), c.clone());
            }
        }
        if std::mem::take(&mut self.reassert_tracking) {
            b.simple_command(crate::backend::SESSION_SETUP_SQL).await?;
        }
        Ok(())
    }
}

/// The client's connection ends without a packet, as when the server closes it:
/// the client library reports 2006/2013 itself.
fn server_closed() -> ProxyError {
    ProxyError::Io(std::io::ErrorKind::ConnectionReset.into())
}
