//! Responses for a client without CLIENT_DEPRECATE_EOF. baton always asks its
//! backends for CLIENT_DEPRECATE_EOF, so that every response ends in an OK
//! packet carrying the session state (the GTID of a write answered with rows,
//! `INSERT ... RETURNING`, is in it; an EOF packet has no room for it). For a
//! client without the flag baton writes the response back in the old form
//! (MariaDB protocol pages, "Result set packets", "COM_STMT_PREPARE response"):
//! - an EOF after a result set's column definitions, before its first row, its
//!   terminator or an ERR; when the terminator says a cursor was opened
//!   (SERVER_STATUS_CURSOR_EXISTS), that terminator is the one EOF;
//! - an EOF after a prepared statement's parameter definitions and after its
//!   column definitions;
//! - each OK terminator (header 0xFE) as an EOF with its warnings and status;
//! - every later packet's sequence id moved on by the EOFs inserted before it.
//!
//! The inserted EOF after column definitions carries the status the server
//! reports at the result set's end, written in when the end arrives before the
//! first 192 KiB of the result set are flushed; past that, the session's
//! standing flags (autocommit, in transaction, no backslash escapes). Its
//! warning count is 0 (the server's counts warnings raised while planning).
//! The EOFs of a prepare response carry the standing flags.

/// Where a response for an old-EOF client is.
#[derive(Debug, Default)]
pub(super) struct OldEof {
    /// EOF packets inserted so far: added to each later packet's sequence id.
    pub shift: u8,
    /// A result set's column definitions ended: its EOF goes before the next packet.
    pub columns_eof_due: bool,
    /// In a COM_STMT_PREPARE response: parameter and column definitions left.
    pub prepare: Option<(u16, u16)>,
    /// Where the status field of the EOF inserted after column definitions
    /// sits in the client's unflushed write buffer. The server's status there
    /// (e.g. SERVER_QUERY_NO_INDEX_USED, SERVER_PS_OUT_PARAMS) is only known at
    /// the result set's terminator; until then the rows are not flushed (up to
    /// the flush threshold), and the terminator's status is written in.
    pub status_at: Option<usize>,
}

/// Status flags that hold for the session rather than one statement: the
/// inserted EOF's status when the terminator comes too late to patch it in.
pub(super) const SESSION_FLAGS: u16 = 0x0001 | 0x0002 | 0x0200 | 0x2000;

impl OldEof {
    /// After PREPARE OK: (columns, parameters) are at payload bytes 5..7 and 7..9.
    pub fn prepared(&mut self, payload: &[u8]) {
        let u16_at = |i: usize| payload.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]])).unwrap_or(0);
        self.prepare = Some((u16_at(7), u16_at(5)));
    }

    /// After a definition packet of a prepare response: does an EOF follow it?
    pub fn definition(&mut self) -> bool {
        match self.prepare.as_mut() {
            Some((params @ 1.., _)) => {
                *params -= 1;
                *params == 0
            }
            Some((0, cols @ 1..)) => {
                *cols -= 1;
                *cols == 0
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_definitions_then_eofs() {
        let mut o = OldEof::default();
        // 0x00, id (4), columns = 1, params = 2
        o.prepared(&[0, 1, 0, 0, 0, 1, 0, 2, 0, 0]);
        assert_eq!([o.definition(), o.definition(), o.definition()], [false, true, true]);
        assert!(!o.definition());
    }
}
