//! Wire-format helpers: command bytes, capability/status flags, and the few packets
//! baton reads or writes itself (OK, ERR, EOF). Everything else is relayed as bytes.
//!
//! Every decoder here is total: on short or inconsistent input it returns `None`,
//! never panics (the data path treats every byte as hostile).

use bytes::BufMut;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities, StatusFlags};
use mysql_common::packets::{ErrPacket, ServerError, SqlState};
use mysql_common::proto::MySerialize;

use crate::error::MysqlError;

pub mod cmd {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_KILL: u8 = 0x0c;
    pub const PING: u8 = 0x0e;
    pub const CHANGE_USER: u8 = 0x11;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const RESET_CONNECTION: u8 = 0x1f;
}

/// Capabilities baton offers clients. Not offered: SSL, COMPRESS, CONNECT_ATTRS,
/// progress reports. CLIENT_LONG_PASSWORD (alias CLIENT_MYSQL) is left out, as
/// MariaDB servers do, which tells MariaDB clients to read [`server_ext_capabilities`].
pub fn server_capabilities() -> CapabilityFlags {
    use CapabilityFlags as C;
    C::CLIENT_FOUND_ROWS
        | C::CLIENT_LONG_FLAG
        | C::CLIENT_CONNECT_WITH_DB
        | C::CLIENT_NO_SCHEMA
        | C::CLIENT_ODBC
        | C::CLIENT_LOCAL_FILES
        | C::CLIENT_IGNORE_SPACE
        | C::CLIENT_PROTOCOL_41
        | C::CLIENT_INTERACTIVE
        | C::CLIENT_IGNORE_SIGPIPE
        | C::CLIENT_TRANSACTIONS
        | C::CLIENT_SECURE_CONNECTION
        | C::CLIENT_MULTI_STATEMENTS
        | C::CLIENT_MULTI_RESULTS
        | C::CLIENT_PS_MULTI_RESULTS
        | C::CLIENT_PLUGIN_AUTH
        | C::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | C::CLIENT_SESSION_TRACK
        | C::CLIENT_DEPRECATE_EOF
}

/// Capabilities baton asks of the backend for a client with `client` capabilities:
/// the format-affecting ones mirror the client so responses can be relayed as they
/// are; session tracking is always on (baton needs `last_gtid` and session state),
/// and so is CLIENT_DEPRECATE_EOF: every response then ends in an OK packet,
/// which carries the session state (an EOF does not); for a client without it
/// baton writes the EOF packets back in (`session::old_eof`).
pub fn backend_capabilities(client: CapabilityFlags) -> CapabilityFlags {
    use CapabilityFlags as C;
    let mirrored = C::CLIENT_LONG_PASSWORD
        | C::CLIENT_FOUND_ROWS
        | C::CLIENT_NO_SCHEMA
        | C::CLIENT_ODBC
        | C::CLIENT_LOCAL_FILES
        | C::CLIENT_IGNORE_SPACE
        | C::CLIENT_INTERACTIVE
        | C::CLIENT_IGNORE_SIGPIPE
        | C::CLIENT_MULTI_STATEMENTS
        | C::CLIENT_MULTI_RESULTS
        | C::CLIENT_PS_MULTI_RESULTS;
    (client & mirrored)
        | C::CLIENT_DEPRECATE_EOF
        | C::CLIENT_LONG_FLAG
        | C::CLIENT_PROTOCOL_41
        | C::CLIENT_TRANSACTIONS
        | C::CLIENT_SECURE_CONNECTION
        | C::CLIENT_PLUGIN_AUTH
        | C::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | C::CLIENT_SESSION_TRACK
}

/// MariaDB extended capabilities baton offers: only extended type info (column
/// definitions carry e.g. `format=json`), which changes nothing baton parses.
/// Not offered: progress, COM_MULTI, bulk operations, metadata caching.
pub fn server_ext_capabilities() -> MariadbCapabilities {
    MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA
}

pub const SERVER_STATUS_IN_TRANS: u16 = StatusFlags::SERVER_STATUS_IN_TRANS.bits();
pub const SERVER_STATUS_AUTOCOMMIT: u16 = StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits();
pub const SERVER_MORE_RESULTS_EXISTS: u16 = StatusFlags::SERVER_MORE_RESULTS_EXISTS.bits();
pub const SERVER_SESSION_STATE_CHANGED: u16 = StatusFlags::SERVER_SESSION_STATE_CHANGED.bits();
pub const SERVER_STATUS_CURSOR_EXISTS: u16 = StatusFlags::SERVER_STATUS_CURSOR_EXISTS.bits();
pub const SERVER_STATUS_LAST_ROW_SENT: u16 = StatusFlags::SERVER_STATUS_LAST_ROW_SENT.bits();

/// An ERR packet payload for `e`.
pub fn err_payload(e: &MysqlError) -> Vec<u8> {
    let mut state = [b'H', b'Y', b'0', b'0', b'0'];
    state.copy_from_slice(&e.state.as_bytes()[..5]);
    let pkt = ErrPacket::Error(ServerError::new(e.code, Some(SqlState::new(state)), e.message.as_bytes()));
    let mut buf = Vec::with_capacity(16 + e.message.len());
    pkt.serialize(&mut buf);
    buf
}

/// An OK packet payload (no info, no session state).
pub fn ok_payload(affected: u64, status: u16) -> Vec<u8> {
    let mut buf = Vec::with_capacity(11);
    buf.put_u8(0x00);
    put_lenenc(&mut buf, affected);
    put_lenenc(&mut buf, 0);
    buf.put_u16_le(status);
    buf.put_u16_le(0);
    buf
}

pub fn put_lenenc(buf: &mut Vec<u8>, v: u64) {
    match v {
        0..=250 => buf.put_u8(v as u8),
        251..=0xffff => {
            buf.put_u8(0xfc);
            buf.put_u16_le(v as u16)
        }
        0x1_0000..=0xff_ffff => {
            buf.put_u8(0xfd);
            buf.put_uint_le(v, 3)
        }
        _ => {
            buf.put_u8(0xfe);
            buf.put_u64_le(v)
        }
    }
}

/// A cursor over a payload whose reads fail (None) instead of panicking.
pub struct Cursor<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos.min(self.buf.len())..]
    }
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn lenenc(&mut self) -> Option<u64> {
        match self.u8()? {
            v @ 0..=0xfa => Some(v as u64),
            0xfc => self.u16().map(u64::from),
            0xfd => self.take(3).map(|b| u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16),
            0xfe => self.take(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))),
            _ => None,
        }
    }
    pub fn lenenc_bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.lenenc()?).ok()?;
        self.take(n)
    }
    pub fn null_str(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest();
        let nul = rest.iter().position(|&b| b == 0)?;
        self.pos += nul + 1;
        Some(&rest[..nul])
    }
}

/// The parts of an OK packet (header 0x00 or 0xFE) baton uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OkInfo<'a> {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: &'a [u8],
    pub session_state: &'a [u8],
}

/// Parse an OK packet sent to a connection that negotiated CLIENT_SESSION_TRACK.
pub fn parse_ok(payload: &[u8]) -> Option<OkInfo<'_>> {
    let mut c = Cursor::new(payload);
    let header = c.u8()?;
    if header != 0x00 && header != 0xfe {
        return None;
    }
    let affected_rows = c.lenenc()?;
    let last_insert_id = c.lenenc()?;
    let status = c.u16()?;
    let warnings = c.u16()?;
    let mut info: &[u8] = &[];
    let mut session_state: &[u8] = &[];
    if !c.rest().is_empty() {
        info = c.lenenc_bytes()?;
        if status & SERVER_SESSION_STATE_CHANGED != 0 {
            session_state = c.lenenc_bytes()?;
        }
    }
    Some(OkInfo { affected_rows, last_insert_id, status, warnings, info, session_state })
}

/// Re-encode an OK packet for a client without CLIENT_SESSION_TRACK: the same
/// packet the server would have sent it (session state dropped).
pub fn ok_without_session_track(header: u8, ok: &OkInfo<'_>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + ok.info.len());
    buf.put_u8(header);
    put_lenenc(&mut buf, ok.affected_rows);
    put_lenenc(&mut buf, ok.last_insert_id);
    buf.put_u16_le(ok.status & !SERVER_SESSION_STATE_CHANGED);
    buf.put_u16_le(ok.warnings);
    if !ok.info.is_empty() {
        put_lenenc(&mut buf, ok.info.len() as u64);
        buf.put_slice(ok.info);
    }
    buf
}

/// Re-encode an OK packet for a client with CLIENT_SESSION_TRACK, with
/// `state` as its session-state information (the flag cleared when empty). The
/// info field is written when there is info or state, as the server does.
pub fn ok_with_session_state(header: u8, ok: &OkInfo<'_>, state: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + ok.info.len() + state.len());
    buf.put_u8(header);
    put_lenenc(&mut buf, ok.affected_rows);
    put_lenenc(&mut buf, ok.last_insert_id);
    let status = if state.is_empty() { ok.status & !SERVER_SESSION_STATE_CHANGED } else { ok.status | SERVER_SESSION_STATE_CHANGED };
    buf.put_u16_le(status);
    buf.put_u16_le(ok.warnings);
    if !ok.info.is_empty() || !state.is_empty() {
        put_lenenc(&mut buf, ok.info.len() as u64);
        buf.put_slice(ok.info);
    }
    if !state.is_empty() {
        put_lenenc(&mut buf, state.len() as u64);
        buf.put_slice(state);
    }
    buf
}

/// An old-style EOF packet payload (0xFE, warnings, status).
pub fn eof_payload(warnings: u16, status: u16) -> Vec<u8> {
    let mut buf = Vec::with_capacity(5);
    buf.put_u8(0xfe);
    buf.put_u16_le(warnings);
    buf.put_u16_le(status);
    buf
}

/// Status flags of an old-style EOF packet (0xFE, warnings, status).
pub fn eof_status(payload: &[u8]) -> Option<u16> {
    let mut c = Cursor::new(payload);
    (c.u8()? == 0xfe).then_some(())?;
    c.u16()?;
    c.u16()
}

/// One entry of an OK packet's session state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange<'a> {
    SystemVariable { name: &'a [u8], value: &'a [u8] },
    Schema(&'a [u8]),
    Other,
}

/// Decode session-state entries; stops at the first malformed one.
pub fn session_changes(mut data: &[u8]) -> Vec<StateChange<'_>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let mut c = Cursor::new(data);
        let Some(kind) = c.u8() else { break };
        let Some(body) = c.lenenc_bytes() else { break };
        data = c.rest();
        let mut b = Cursor::new(body);
        let change = match kind {
            0 => match (b.lenenc_bytes(), b.lenenc_bytes()) {
                (Some(name), Some(value)) => StateChange::SystemVariable { name, value },
                _ => break,
            },
            1 => match b.lenenc_bytes() {
                Some(s) => StateChange::Schema(s),
                None => break,
            },
            _ => StateChange::Other,
        };
        out.push(change);
    }
    out
}

/// Does the session state carry a SESSION_TRACK_STATE_CHANGE entry (type 2)?
pub fn has_state_change(mut data: &[u8]) -> bool {
    while !data.is_empty() {
        let mut c = Cursor::new(data);
        let (Some(kind), Some(_)) = (c.u8(), c.lenenc_bytes()) else { return false };
        if kind == 2 {
            return true;
        }
        data = c.rest();
    }
    false
}

/// The server error inside an ERR packet payload: (code, sqlstate, message).
pub fn parse_err(payload: &[u8]) -> Option<(u16, String, String)> {
    let mut c = Cursor::new(payload);
    (c.u8()? == 0xff).then_some(())?;
    let code = c.u16()?;
    let rest = c.rest();
    if rest.first() == Some(&b'#') && rest.len() >= 6 {
        Some((code, String::from_utf8_lossy(&rest[1..6]).into(), String::from_utf8_lossy(&rest[6..]).into()))
    } else {
        Some((code, "HY000".into(), String::from_utf8_lossy(rest).into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ok_round_trip_and_rewrite() {
        // OK with info "x" and session state (system variable last_gtid=0-1-5).
        let mut state = vec![0u8];
        let mut body = Vec::new();
        put_lenenc(&mut body, 9);
        body.extend_from_slice(b"last_gtid");
        put_lenenc(&mut body, 5);
        body.extend_from_slice(b"0-1-5");
        put_lenenc(&mut state, body.len() as u64);
        state.extend_from_slice(&body);
        let mut p = vec![0x00, 1, 0];
        p.extend_from_slice(&(SERVER_STATUS_AUTOCOMMIT | SERVER_SESSION_STATE_CHANGED).to_le_bytes());
        p.extend_from_slice(&[0, 0, 1, b'x']);
        put_lenenc(&mut p, state.len() as u64);
        p.extend_from_slice(&state);
        let ok = parse_ok(&p).unwrap();
        assert_eq!(ok.info, b"x");
        assert_eq!(session_changes(ok.session_state), vec![StateChange::SystemVariable { name: b"last_gtid", value: b"0-1-5" }]);
        let plain = ok_without_session_track(0, &ok);
        assert_eq!(plain, vec![0x00, 1, 0, 2, 0, 0, 0, 1, b'x']);
    }

    #[test]
    fn err_payload_has_code_and_state() {
        let p = err_payload(&MysqlError::too_many_connections());
        assert_eq!(parse_err(&p).unwrap(), (1040, "08004".into(), "Too many connections".into()));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_ok(&data).map(|ok| session_changes(ok.session_state));
            let _ = session_changes(&data);
            let _ = eof_status(&data);
            let _ = parse_err(&data);
            let mut c = Cursor::new(&data);
            while c.lenenc_bytes().is_some() {}
        }
    }
}
