//! Relaying a response to the client, packet by packet, and learning from it:
//! status flags, session state (variables, schema, `last_gtid`, the insert id),
//! and the client's own session-tracking choice, which decides what of each OK
//! packet's session state the client receives ([`crate::tracking`]).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use mysql_common::constants::CapabilityFlags;

use super::old_eof::OldEof;
use super::route::{is_read_only, Relayed};
use super::Session;
use crate::error::{ProxyError, Result};
use crate::proto::{self, StateChange};
use crate::relay::{Class, Expect, Scanner};
use crate::tracking::{TRACK_SCHEMA, TRACK_STATE_CHANGE, TRACK_VARIABLES};

/// Flush relayed bytes to the client once this many are queued.
const FLUSH_AT: usize = 64 * 1024;
/// For an old-EOF client, bytes of a result set held while its inserted EOF
/// waits for the status the terminator brings (below the buffers' shrink size).
const PATCH_WINDOW: usize = 192 * 1024;

impl Session {
    pub(super) async fn relay(&mut self, expect: Expect) -> Result<Relayed> {
        // Backends always speak CLIENT_DEPRECATE_EOF; `old` rewrites for a client that does not.
        let mut scanner = Scanner::new(expect, true);
        let mut old = (!self.deprecate_eof()).then(OldEof::default);
        let mut last_ok = false;
        let mut first = true;
        let term = self.backend_term;
        loop {
            let backend = self.backend.as_mut().expect("ensured");
            let pkt = if backend.io.has_buffered_packet() {
                backend.read_raw().await?
            } else {
                let (topo, name) = (&mut self.topo_rx, &self.cluster.name);
                tokio::select! {
                    r = backend.read_raw() => r?,
                    _ = replaced(topo, name, term) => {
                        return Err(ProxyError::BackendLost("the primary was replaced while the command ran".into()));
                    }
                }
            };
            let class = scanner.feed(&pkt);
            let columns_ended = scanner.take_columns_ended();
            if self.replay.is_some() {
                self.checksum.feed(class, pkt.payload());
            }
            if first && class == Class::Err && proto::parse_err(pkt.payload()).is_some_and(|e| is_read_only(&e)) {
                return Ok(Relayed::ReadOnly(Bytes::copy_from_slice(pkt.payload())));
            }
            let was_first = first;
            first = false;
            self.relayed_any = true;
            let seq = pkt.seq();
            if let Some(o) = old.as_mut().filter(|o| o.columns_eof_due) {
                o.columns_eof_due = false;
                let cursor = matches!(class, Class::Ok { header: 0xfe, status } if status & proto::SERVER_STATUS_CURSOR_EXISTS != 0);
                if !cursor {
                    // A cursor's terminator is itself the one EOF (converted below).
                    let status = match class {
                        Class::Ok { status, .. } => status & !proto::SERVER_SESSION_STATE_CHANGED,
                        _ => {
                            // Much queued already (earlier result sets): send it, so
                            // this result set has the whole budget to reach its end.
                            if self.client.queued() >= FLUSH_AT / 2 {
                                self.client.flush().await?;
                            }
                            // Status bytes: after the 4-byte header, 0xFE and 2 bytes of warnings.
                            o.status_at = Some(self.client.queued() + 7);
                            self.state.status & super::old_eof::SESSION_FLAGS
                        }
                    };
                    self.client.queue(seq.wrapping_add(o.shift), &proto::eof_payload(0, status));
                    o.shift = o.shift.wrapping_add(1);
                }
            }
            let shift = old.as_ref().map_or(0, |o| o.shift);
            let out_seq = seq.wrapping_add(shift);
            match class {
                Class::Data => {
                    self.client.queue_raw_with_seq(&pkt.bytes, out_seq);
                    if let Some(o) = old.as_mut().filter(|o| o.prepare.is_some()) {
                        if o.definition() {
                            let status = self.state.status & super::old_eof::SESSION_FLAGS;
                            self.client.queue(out_seq.wrapping_add(1), &proto::eof_payload(0, status));
                            o.shift = o.shift.wrapping_add(1);
                        }
                    }
                }
                Class::Ok { header, status } => {
                    self.state.status = status;
                    last_ok = true;
                    if let Some(at) = old.as_mut().and_then(|o| o.status_at.take()) {
                        self.client.patch(at, &(status & !proto::SERVER_SESSION_STATE_CHANGED).to_le_bytes());
                    }
                    if self.relay_ok(header, &pkt.bytes, out_seq, old.is_some()) {
                        // Fenced: a failover began and closed this connection's
                        // term; its commit may or may not be on the new primary.
                        // Nothing of this response reached the client if it was
                        // its first packet: the documented "outcome unknown" error.
                        if was_first {
                            self.relayed_any = false;
                        }
                        return Err(ProxyError::BackendLost(
                            "a failover closed the old primary's connections before this write was acknowledged".into(),
                        ));
                    }
                }
                Class::Eof { status } => {
                    self.state.status = status;
                    last_ok = true;
                    self.client.queue_raw_with_seq(&pkt.bytes, out_seq);
                }
                Class::Err => {
                    last_ok = false;
                    self.client.queue_raw_with_seq(&pkt.bytes, out_seq);
                }
                Class::PrepareOk { backend_id } => {
                    let sql = self.pending_prepare.take().unwrap_or_default();
                    let id = self.state.add_statement(backend_id, sql);
                    let mut bytes = pkt.bytes.to_vec();
                    bytes[5..9].copy_from_slice(&id.to_le_bytes());
                    self.client.queue_raw_with_seq(&bytes, out_seq);
                    if let Some(o) = old.as_mut() {
                        o.prepared(pkt.payload());
                    }
                    last_ok = true;
                }
                Class::LocalInfile => {
                    self.unreplayable = Some("LOAD DATA LOCAL INFILE");
                    self.client.queue_raw_with_seq(&pkt.bytes, out_seq);
                    self.client.flush().await?;
                    // The client numbers its file packets after our (shifted) ids.
                    self.relay_local_infile(shift).await?;
                }
            }
            if columns_ended {
                if let Some(o) = old.as_mut() {
                    o.columns_eof_due = true;
                }
            }
            if scanner.done() {
                break;
            }
            let patch_pending = old.as_ref().is_some_and(|o| o.status_at.is_some());
            let drained = !self.backend.as_ref().expect("ensured").io.has_buffered_packet();
            let limit = if patch_pending { PATCH_WINDOW } else { FLUSH_AT };
            if (drained && !patch_pending) || self.client.queued() >= limit {
                self.client.flush().await?;
                if let Some(o) = old.as_mut() {
                    o.status_at = None;
                }
            }
        }
        self.client.flush().await?;
        Ok(Relayed::Done(last_ok))
    }

    /// Track what an OK packet says, and relay it in the form the client expects
    /// (sequence id `seq`; an OK terminator as an EOF for an old-EOF client).
    /// True (and nothing relayed): its GTID was refused by the cluster's fence
    /// (a failover began since this connection was made).
    fn relay_ok(&mut self, header: u8, bytes: &[u8], seq: u8, old_eof: bool) -> bool {
        let payload = &bytes[4..];
        let Some(ok) = proto::parse_ok(payload) else {
            self.client.queue_raw_with_seq(bytes, seq);
            return false;
        };
        if ok.last_insert_id != 0 {
            self.state.last_insert_id = ok.last_insert_id;
        }
        let changes = proto::session_changes(ok.session_state);
        let explained = changes.iter().any(|c| !matches!(c, StateChange::Other));
        let reported_state_change = proto::has_state_change(ok.session_state);
        if reported_state_change && !explained {
            self.state_changed = true;
        }
        for change in changes {
            match change {
                StateChange::SystemVariable { name, value } => {
                    if name == b"last_gtid" {
                        if !value.is_empty() && !self.acknowledge(value) {
                            return true;
                        }
                        if !value.is_empty() {
                            // Something committed: a recording spanning it would re-run it.
                            self.unreplayable = Some("a commit inside the recorded transaction (COMMIT AND CHAIN, a BEGIN or DDL in it)");
                        }
                    } else if name.eq_ignore_ascii_case(TRACK_VARIABLES) {
                        self.state.tracking.set_variables(value);
                        self.reassert_tracking = true;
                    } else if name.eq_ignore_ascii_case(TRACK_SCHEMA) {
                        self.state.tracking.set_schema(value);
                        self.reassert_tracking = true;
                    } else if name.eq_ignore_ascii_case(TRACK_STATE_CHANGE) {
                        self.state.tracking.set_state_change(value);
                        self.reassert_tracking = true;
                    } else {
                        self.unreplayable = Some("a session variable changed inside the transaction");
                        if name == b"character_set_connection" {
                            // A new connection character set resets the collation to
                            // its default; `SET NAMES ... COLLATE` names another but
                            // the server does not report collation_connection
                            // (MariaDB 10.11): read it back after the response.
                            self.state.variables.remove(b"collation_connection".as_slice());
                            self.refresh_collation = true;
                        }
                        self.state.variables.insert(name.to_vec(), value.to_vec());
                    }
                }
                StateChange::Schema(s) => {
                    self.unreplayable = Some("the schema changed inside the transaction");
                    self.state.schema = Some(s.to_vec());
                }
                StateChange::Other => {}
            }
        }
        if old_eof && header == 0xfe {
            let eof = proto::eof_payload(ok.warnings, ok.status & !proto::SERVER_SESSION_STATE_CHANGED);
            self.client.queue(seq, &eof);
            return false;
        }
        if !self.caps.contains(CapabilityFlags::CLIENT_SESSION_TRACK) {
            let plain = proto::ok_without_session_track(header, &ok);
            self.client.queue(seq, &plain);
            return false;
        }
        match self.state.tracking.filter(ok.session_state) {
            Cow::Borrowed(_) => self.client.queue_raw_with_seq(bytes, seq),
            Cow::Owned(state) => {
                let p = proto::ok_with_session_state(header, &ok, &state);
                self.client.queue(seq, &p);
            }
        }
        false
    }

    /// Record an acknowledged GTID list through the cluster's fence. False: the
    /// connection predates a failover's fence; not recorded, not to be acknowledged.
    pub(super) fn acknowledge(&self, gtid: &[u8]) -> bool {
        let acked = &self.cluster.acked;
        self.cluster.fence.acknowledge(self.backend.as_ref().and_then(|b| b.fence_generation()), || acked.record(gtid))
    }

    /// LOCAL INFILE: relay the client's file packets up to the empty one, their
    /// sequence ids moved back by the EOFs baton inserted before (`shift`).
    async fn relay_local_infile(&mut self, shift: u8) -> Result<()> {
        loop {
            let pkt = self.client.read_raw().await?;
            let b = self.backend.as_mut().expect("ensured");
            b.queue_raw_with_seq(&pkt.bytes, pkt.seq().wrapping_sub(shift));
            if b.queued() >= FLUSH_AT || pkt.payload_len() == 0 {
                b.flush().await?;
            }
            if pkt.payload_len() == 0 {
                return Ok(());
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
