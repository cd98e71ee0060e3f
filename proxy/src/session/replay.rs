//! Transaction replay (`[transaction_replay]`): a transaction cut by a
//! reparent's revoke or the loss of the primary waits in the buffer like a held
//! request, is re-run on the new primary, and goes on there when every
//! re-run response's checksum equals what the client saw. Otherwise the client
//! gets 9101 (nothing of it committed) as without replay.
//!
//! A command that may have committed the transaction (a COMMIT sent, no answer)
//! is re-run only when the new primary's history proves the first attempt did
//! not commit ([`baton_control::gtid::commit_absent`]); else ERROR 9105.

use baton_control::gate::Admission;
use baton_control::replay::ReplayFailure;
use std::collections::BTreeMap;

use super::route::NotReady;
use super::Session;
use crate::command::Command;
use crate::error::{MysqlError, ProxyError, Result};
use crate::proto::{self, cmd};
use crate::relay::{Class, Expect, Scanner};
use crate::replay::{is_set_transaction, Checksum, Entry, Kind, Recording, Unreplayable};

/// What the caller does after [`Session::replay_or_lose`].
pub(super) enum Resume {
    /// The transaction goes on on the new primary: send the command there.
    Continue,
    /// The client got its error.
    Answered,
}

/// Why one replay attempt stopped.
enum Cut {
    /// The new backend was lost too (or none could be made): try again.
    Lost(String),
    /// Entry `n`'s response differed.
    Mismatch(usize),
    CommitUnknown(String),
    Unsupported(&'static str),
    /// The gate refused (no primary is coming, the buffer is full, ...).
    Refused(String),
    Fatal(ProxyError),
}

impl Session {
    /// After a command relayed its whole response: keep the transaction's
    /// recording (or start, end or give it up). `was_in`: a transaction was
    /// open before the command; `insert_id_before`: `LAST_INSERT_ID()` then.
    pub(super) fn record(&mut self, payload: &bytes::Bytes, command: &Command, was_in: bool, insert_id_before: u64) {
        let Some(limits) = self.replay.as_ref() else { return };
        let max = limits.max_bytes;
        let response = std::mem::take(&mut self.checksum);
        let (sum, insert_id) = (response.value(), response.insert_id);
        let cause = self.unreplayable.take();
        if !self.state.in_transaction() {
            self.recording = None;
            self.tx_prefix = match command {
                Command::Query(_) if !was_in && is_set_transaction(&payload[1..]) => {
                    Some(Entry { payload: payload.clone(), kind: Kind::Answered, checksum: sum, insert_id })
                }
                _ => None,
            };
            return;
        }
        let rec = match self.recording.as_mut() {
            Some(r) if was_in => r,
            _ => {
                let mut r = Recording::new(insert_id_before);
                if was_in {
                    // Begun before this session recorded (replay was off then).
                    r.give_up(Unreplayable::Unsupported("a transaction begun before recording"));
                }
                if let Some(p) = self.tx_prefix.take() {
                    r.push(p, max);
                }
                self.recording.insert(r)
            }
        };
        // A command that may have committed while the transaction stays open
        // (COMMIT AND CHAIN, BEGIN inside one, a failed DDL with autocommit off,
        // a multi-statement with a COMMIT, a CALL): a replay would re-run
        // committed work.
        let may_have_committed = was_in
            && match command {
                Command::Query(a) => a.may_end_transaction,
                Command::Execute { id, .. } => self.state.statement(*id).is_none_or(|(_, s)| s.analysis.may_end_transaction),
                _ => false,
            };
        let cause = cause.or(may_have_committed.then_some("a statement that may commit inside the recorded transaction"));
        if let Some(what) = cause {
            rec.give_up(Unreplayable::Unsupported(what));
            return;
        }
        // A multi-statement text's ids are not pinned (one forced id would go to
        // its first INSERT only): a different id there is a mismatch.
        let insert_id = if matches!(command, Command::Query(a) if a.multi) { 0 } else { insert_id };
        // "The statement prepared last" (0xFFFFFFFF) names the one it named now.
        let payload = match command {
            Command::Execute { id, .. } | Command::Reset { id } | Command::LongData { id } if *id == crate::command::LAST_PREPARED => {
                match self.state.statement(*id) {
                    Some((client_id, _)) => {
                        let mut owned = payload.to_vec();
                        owned[1..5].copy_from_slice(&client_id.to_le_bytes());
                        bytes::Bytes::from(owned)
                    }
                    None => payload.clone(),
                }
            }
            _ => payload.clone(),
        };
        let entry = |kind| Entry { payload: payload.clone(), kind, checksum: sum, insert_id };
        match command {
            Command::Query(a) if a.kill.is_some() => {}
            Command::Query(_) | Command::Execute { .. } | Command::Reset { .. } => rec.push(entry(Kind::Answered), max),
            Command::LongData { .. } => rec.push(entry(Kind::LongData), max),
            Command::Fetch { .. } => rec.give_up(Unreplayable::Unsupported("a cursor fetch")),
            Command::InitDb => rec.give_up(Unreplayable::Unsupported("COM_INIT_DB")),
            _ => {}
        }
    }

    /// Before sending a command inside a recorded transaction that may commit
    /// it: what proves later that it did not.
    pub(super) fn note_commit_floor(&mut self, may_commit: bool) {
        self.commit_floor = None;
        if may_commit && self.recording.as_ref().is_some_and(|r| r.unreplayable.is_none()) {
            if let Some(sid) = self.backend.as_ref().and_then(|b| b.defaults.server_id) {
                self.commit_floor = Some((sid, self.cluster.acked.floor()));
            }
        }
    }

    /// The transaction's backend was revoked or lost at `command`: replay it on
    /// the primary established next, or end it as without replay
    /// ([`Session::lose_transaction`]: 9101, or 9105 if `may_commit`).
    pub(super) async fn replay_or_lose(&mut self, command: &Command, may_commit: bool) -> Result<Resume> {
        let recording = self.recording.take();
        // Only a command that may have committed needs the proof (a COMMIT
        // refused as read-only did not commit).
        let floor = self.commit_floor.take().filter(|_| may_commit);
        let Some(limits) = self.replay.clone() else {
            self.lose_transaction(command, may_commit).await?;
            return Ok(Resume::Answered);
        };
        let cluster = self.cluster.clone();
        let counters = &cluster.replay;
        let refuse = match &recording {
            None => Some((ReplayFailure::Unsupported, "no recording".to_string())),
            Some(r) => match r.unreplayable {
                Some(Unreplayable::Size) => Some((ReplayFailure::Size, format!("recorded more than {} bytes", limits.max_bytes))),
                Some(Unreplayable::Unsupported(what)) => Some((ReplayFailure::Unsupported, what.to_string())),
                None if !self.state.pins().is_empty() => Some((ReplayFailure::Unsupported, self.state.pins().describe())),
                None if may_commit && floor.is_none() => Some((ReplayFailure::CommitUnknown, "no commit floor".to_string())),
                None => None,
            },
        };
        if let Some((why, detail)) = refuse {
            counters.failed(why);
            tracing::info!(reason = why.name(), %detail, "transaction not replayable");
            self.lose_transaction(command, may_commit).await?;
            return Ok(Resume::Answered);
        }
        let rec = recording.expect("checked");
        let (status_before, insert_id_before) = (self.state.status, self.state.last_insert_id);
        // Leave the old primary's transaction (dropping the backend rolls it
        // back there) and its admission: the session waits like a held request.
        self.backend = None;
        self.pin = None;
        self.long_data_pending = false;
        self.state.status &= !proto::SERVER_STATUS_IN_TRANS;
        counters.started();
        // New work on the cluster waits while this runs (bounded).
        let first = cluster.replaying.begin();
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let needs_proof = floor.is_some();
        let mut proven = !needs_proof;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let r = tokio::time::timeout_at(deadline, self.replay_once(&rec, floor.as_ref(), &mut proven)).await;
            match r {
                Err(_) => break Err((ReplayFailure::Timeout, format!("not done within {} ms of the cut", limits.timeout.as_millis()))),
                Ok(Ok(admission)) => break Ok(admission),
                Ok(Err(Cut::Lost(why))) if attempt < limits.max_attempts => {
                    tracing::info!(%why, attempt, "transaction replay: the new backend was lost; waiting for a primary again");
                    self.backend = None;
                }
                Ok(Err(Cut::Lost(why))) => break Err((ReplayFailure::Timeout, format!("{attempt} attempts; the last: {why}"))),
                Ok(Err(Cut::Refused(why))) => break Err((ReplayFailure::Timeout, why)),
                Ok(Err(Cut::Mismatch(n))) => {
                    let sql = rec.entries.get(n).map(|e| String::from_utf8_lossy(&e.payload[1..e.payload.len().min(81)]).into_owned());
                    break Err((ReplayFailure::Checksum, format!("statement {} of the transaction answered otherwise: {sql:?}", n + 1)));
                }
                Ok(Err(Cut::CommitUnknown(why))) => break Err((ReplayFailure::CommitUnknown, why)),
                Ok(Err(Cut::Unsupported(what))) => break Err((ReplayFailure::Unsupported, what.to_string())),
                Ok(Err(Cut::Fatal(e))) => return Err(e),
            }
        };
        drop(first);
        match outcome {
            Ok(mut admission) => {
                admission.finish_drain();
                self.pin = Some(admission);
                self.recording = Some(rec);
                counters.succeeded();
                tracing::info!(statements = self.recording.as_ref().map_or(0, |r| r.entries.len()), "transaction replayed on the new primary");
                Ok(Resume::Continue)
            }
            Err((why, detail)) => {
                // Nothing of a partial replay may commit: its backend goes; the
                // session's flags and insert id are as before the cut.
                self.backend = None;
                self.state.status = status_before;
                self.state.last_insert_id = insert_id_before;
                counters.failed(why);
                tracing::info!(reason = why.name(), %detail, "transaction replay failed");
                // "May have committed" stands unless this attempt's primary
                // proved it absent and the replay then ended there.
                let unknown = needs_proof && (!proven || why == ReplayFailure::Timeout);
                self.lose_transaction(command, may_commit && unknown).await?;
                Ok(Resume::Answered)
            }
        }
    }

    /// One attempt: pass the gate, log in to the primary (state restored as at
    /// the transaction's start), decide an unanswered COMMIT, re-send and compare.
    async fn replay_once(
        &mut self,
        rec: &Recording,
        floor: Option<&(u32, BTreeMap<u32, u64>)>,
        proven: &mut bool,
    ) -> std::result::Result<Admission, Cut> {
        // Proved on this attempt's primary, or not at all.
        *proven = false;
        let admission = match self.admit().await {
            Err(e) => return Err(Cut::Fatal(e)),
            Ok(Err(e)) => return Err(Cut::Refused(e.message.clone())),
            Ok(Ok(a)) => a,
        };
        self.state.last_insert_id = rec.insert_id_at_start;
        match self.ensure_backend().await {
            Ok(()) => {}
            Err(NotReady::StateLost(what)) => return Err(Cut::Fatal(ProxyError::Fatal(MysqlError::session_state_lost(&what)))),
            Err(NotReady::ServerClosed) => return Err(Cut::Lost("the new backend was closed".into())),
            Err(NotReady::Unavailable(_)) => {
                drop(admission);
                self.begin_reactive("primary unreachable during a transaction replay");
                return Err(Cut::Lost("no primary could be reached".into()));
            }
        }
        if let Some((sid, floor)) = floor {
            let b = self.backend.as_mut().expect("ensured");
            if b.defaults.server_id == Some(*sid) {
                // The same server: its thread may still be committing it.
                return Err(Cut::CommitUnknown("the COMMIT's own server is the primary again".into()));
            }
            // Everything it applied: its binlog and what it replicated without
            // logging it (log_slave_updates off, or a reset binlog).
            let row = b.query_row("SELECT @@gtid_binlog_state, @@gtid_slave_pos").await.map_err(|e| Cut::Lost(e.to_string()))?;
            let text = |i: usize| row.get(i).cloned().flatten().map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
            let history = format!("{},{}", text(0), text(1));
            baton_control::gtid::commit_absent(&history, *sid, floor).map_err(Cut::CommitUnknown)?;
            *proven = true;
        }
        for (n, e) in rec.entries.iter().enumerate() {
            let payload = self.translate_recorded(&e.payload).ok_or(Cut::Unsupported("a prepared statement closed since"))?;
            let b = self.backend.as_mut().expect("ensured");
            if e.insert_id != 0 {
                // The id the client saw, not the new primary's next one (a
                // taken id fails the statement: a mismatch). MariaDB keeps a
                // forced id until a statement uses it: cleared after.
                b.simple_command(&format!("SET insert_id = {}", e.insert_id)).await.map_err(|e| Cut::Lost(e.to_string()))?;
            }
            let b = self.backend.as_mut().expect("ensured");
            b.send(0, &payload).await.map_err(|e| Cut::Lost(e.to_string()))?;
            if e.kind == Kind::LongData {
                continue;
            }
            let expect = if payload[0] == cmd::STMT_RESET { Expect::Single } else { Expect::ResultSet };
            let sum = self.rerun(expect).await.map_err(|e| Cut::Lost(e.to_string()))?;
            if e.insert_id != 0 {
                let b = self.backend.as_mut().expect("ensured");
                b.simple_command("SET insert_id = 0").await.map_err(|e| Cut::Lost(e.to_string()))?;
            }
            if sum != e.checksum {
                return Err(Cut::Mismatch(n));
            }
        }
        Ok(admission)
    }

    /// A recorded command as the current backend takes it: statement ids mapped
    /// (None: the statement is gone).
    fn translate_recorded(&self, payload: &bytes::Bytes) -> Option<bytes::Bytes> {
        match payload.first() {
            Some(&(cmd::STMT_EXECUTE | cmd::STMT_RESET | cmd::STMT_SEND_LONG_DATA)) if payload.len() >= 5 => {
                let id = u32::from_le_bytes(payload[1..5].try_into().ok()?);
                let (_, s) = self.state.statement(id)?;
                let mut owned = payload.to_vec();
                owned[1..5].copy_from_slice(&s.backend_id.to_le_bytes());
                Some(owned.into())
            }
            _ => Some(payload.clone()),
        }
    }

    /// Read a re-sent command's response without relaying it: its checksum,
    /// and the status flags and insert id it sets.
    async fn rerun(&mut self, expect: Expect) -> Result<u64> {
        let mut scanner = Scanner::new(expect, true);
        let mut sum = Checksum::new();
        loop {
            let pkt = self.backend.as_mut().expect("ensured").read_raw().await?;
            let class = scanner.feed(&pkt);
            scanner.take_columns_ended();
            if class == Class::Err && proto::parse_err(pkt.payload()).is_some_and(|e| super::route::is_read_only(&e)) {
                // Revoked meanwhile (another reparent): not this transaction's answer.
                return Err(ProxyError::BackendLost("the primary is read-only".into()));
            }
            sum.feed(class, pkt.payload());
            match class {
                Class::Ok { status, .. } => {
                    self.state.status = status;
                    if let Some(ok) = proto::parse_ok(pkt.payload()).filter(|ok| ok.last_insert_id != 0) {
                        self.state.last_insert_id = ok.last_insert_id;
                    }
                }
                Class::Eof { status } => self.state.status = status,
                Class::LocalInfile => return Err(ProxyError::BackendLost("LOCAL INFILE in a replay".into())),
                _ => {}
            }
            if scanner.done() {
                return Ok(sum.value());
            }
        }
    }
}
