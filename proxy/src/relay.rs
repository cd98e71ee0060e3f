//! Response framing: which backend packets make up the response to a command.
//!
//! baton relays responses as bytes; this scanner only classifies each physical
//! packet (data, OK, EOF, ERR, LOCAL INFILE request, PREPARE OK) and says when the
//! response is complete. It follows the rules of the MySQL protocol:
//! OK/ERR, or a result set (column count, column definitions, [EOF], rows,
//! EOF/OK terminator), chained while SERVER_MORE_RESULTS_EXISTS is set.

use crate::packet::RawPacket;
use crate::proto::{self, SERVER_MORE_RESULTS_EXISTS};

/// The shape of response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// COM_QUERY, COM_STMT_EXECUTE: OK, ERR, LOCAL INFILE or result sets.
    ResultSet,
    /// COM_STMT_PREPARE: PREPARE OK + parameter and column definitions, or ERR.
    Prepare,
    /// COM_STMT_FETCH, COM_FIELD_LIST: packets up to an EOF/OK terminator or ERR.
    Rows,
    /// Exactly one packet (COM_PING, COM_INIT_DB, COM_STMT_RESET, ...).
    Single,
}

/// What one packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Relay as it is (rows, column definitions, continuation bytes).
    Data,
    /// An OK packet (header 0x00, or 0xFE as a result set terminator).
    Ok {
        header: u8,
        status: u16,
    },
    /// An old-style EOF packet.
    Eof {
        status: u16,
    },
    Err,
    /// 0xFB: the server asks for a local file; the client's data follows.
    LocalInfile,
    /// The first packet of a successful COM_STMT_PREPARE response.
    PrepareOk {
        backend_id: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    First,
    Columns(u64),
    ColumnsEof,
    Rows,
    Defs(u32),
    Done,
}

/// Classifies a response packet by packet.
#[derive(Debug)]
pub struct Scanner {
    expect: Expect,
    st: St,
    deprecate_eof: bool,
    continued: bool,
    /// The packet just fed was a result set's last column definition (with
    /// CLIENT_DEPRECATE_EOF, where no EOF follows it).
    columns_ended: bool,
}

impl Scanner {
    pub fn new(expect: Expect, deprecate_eof: bool) -> Self {
        let st = if expect == Expect::Rows { St::Rows } else { St::First };
        Scanner { expect, st, deprecate_eof, continued: false, columns_ended: false }
    }

    /// Was the packet just fed a result set's last column definition (no EOF
    /// follows it with CLIENT_DEPRECATE_EOF)? Reading clears it.
    pub fn take_columns_ended(&mut self) -> bool {
        std::mem::take(&mut self.columns_ended)
    }

    /// Is the response complete?
    pub fn done(&self) -> bool {
        self.st == St::Done
    }

    fn is_terminator(&self, p: &[u8]) -> bool {
        p.first() == Some(&0xfe) && if self.deprecate_eof { p.len() < crate::packet::MAX_PAYLOAD } else { p.len() < 9 }
    }

    fn terminator(&mut self, p: &[u8]) -> Class {
        if self.deprecate_eof {
            let status = proto::parse_ok(p).map(|o| o.status).unwrap_or(0);
            self.after_result(status);
            Class::Ok { header: 0xfe, status }
        } else {
            let status = proto::eof_status(p).unwrap_or(0);
            self.after_result(status);
            Class::Eof { status }
        }
    }

    fn after_result(&mut self, status: u16) {
        self.st = if status & SERVER_MORE_RESULTS_EXISTS != 0 && self.expect == Expect::ResultSet { St::First } else { St::Done };
    }

    /// Classify the next packet of the response.
    pub fn feed(&mut self, pkt: &RawPacket) -> Class {
        if self.continued {
            self.continued = pkt.is_continued();
            return Class::Data;
        }
        self.continued = pkt.is_continued();
        let p = pkt.payload();
        let first = p.first().copied();
        match self.st {
            St::Done => Class::Data,
            St::First => match (self.expect, first) {
                (_, Some(0xff)) => {
                    self.st = St::Done;
                    Class::Err
                }
                (Expect::Single, _) => {
                    self.st = St::Done;
                    match first {
                        Some(0x00) | Some(0xfe) => {
                            let status = proto::parse_ok(p).map(|o| o.status).or_else(|| proto::eof_status(p)).unwrap_or(0);
                            if first == Some(0x00) || self.deprecate_eof {
                                Class::Ok { header: p[0], status }
                            } else {
                                Class::Eof { status }
                            }
                        }
                        _ => Class::Data,
                    }
                }
                (Expect::Prepare, Some(0x00)) => {
                    let mut c = proto::Cursor::new(&p[1..]);
                    let (id, cols, params) = (c.u32(), c.u16(), c.u16());
                    let (Some(id), Some(cols), Some(params)) = (id, cols, params) else {
                        self.st = St::Done;
                        return Class::Data;
                    };
                    let eofs = |n: u16| u32::from(n > 0 && !self.deprecate_eof);
                    let defs = u32::from(params) + eofs(params) + u32::from(cols) + eofs(cols);
                    self.st = if defs == 0 { St::Done } else { St::Defs(defs) };
                    Class::PrepareOk { backend_id: id }
                }
                (_, Some(0x00)) => {
                    let status = proto::parse_ok(p).map(|o| o.status).unwrap_or(0);
                    self.after_result(status);
                    Class::Ok { header: 0x00, status }
                }
                (_, Some(0xfe)) => self.terminator(p),
                (Expect::ResultSet, Some(0xfb)) => Class::LocalInfile,
                _ => {
                    let n = proto::Cursor::new(p).lenenc().unwrap_or(0);
                    self.st = if n == 0 { St::Done } else { St::Columns(n) };
                    Class::Data
                }
            },
            St::Columns(n) => {
                self.st = match (n - 1, self.deprecate_eof) {
                    (0, true) => {
                        self.columns_ended = true;
                        St::Rows
                    }
                    (0, false) => St::ColumnsEof,
                    (left, _) => St::Columns(left),
                };
                Class::Data
            }
            St::ColumnsEof => {
                if first == Some(0xff) {
                    self.st = St::Done;
                    return Class::Err;
                }
                let status = proto::eof_status(p).unwrap_or(0);
                // A cursor was opened: rows come later, through COM_STMT_FETCH.
                let cursor = status & mysql_common::constants::StatusFlags::SERVER_STATUS_CURSOR_EXISTS.bits() != 0;
                self.st = if cursor { St::Done } else { St::Rows };
                Class::Eof { status }
            }
            St::Rows => {
                if first == Some(0xff) {
                    self.st = St::Done;
                    Class::Err
                } else if self.is_terminator(p) {
                    self.terminator(p)
                } else {
                    Class::Data
                }
            }
            St::Defs(n) => {
                self.st = if n <= 1 { St::Done } else { St::Defs(n - 1) };
                Class::Data
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use proptest::prelude::*;

    fn pkt(payload: &[u8]) -> RawPacket {
        let mut b = BytesMut::new();
        b.put_uint_le(payload.len() as u64, 3);
        b.put_u8(1);
        b.put_slice(payload);
        RawPacket { bytes: b.freeze() }
    }

    fn eof(status: u16) -> Vec<u8> {
        let mut v = vec![0xfe, 0, 0];
        v.extend_from_slice(&status.to_le_bytes());
        v
    }

    #[test]
    fn two_result_sets_then_ok() {
        let mut s = Scanner::new(Expect::ResultSet, false);
        let seq: Vec<Vec<u8>> = vec![
            vec![1],
            vec![3, b'd', b'e', b'f'],
            eof(0),
            vec![1, b'1'],
            eof(SERVER_MORE_RESULTS_EXISTS),
            vec![1],
            vec![3, b'd', b'e', b'f'],
            eof(0),
            eof(SERVER_MORE_RESULTS_EXISTS),
            proto::ok_payload(0, 2),
        ];
        for (i, p) in seq.iter().enumerate() {
            assert!(!s.done(), "done early at {i}");
            s.feed(&pkt(p));
        }
        assert!(s.done());
    }

    #[test]
    fn deprecate_eof_rows_end_at_fe_ok() {
        let mut s = Scanner::new(Expect::ResultSet, true);
        s.feed(&pkt(&[1]));
        s.feed(&pkt(&[3, b'd', b'e', b'f']));
        assert_eq!(s.feed(&pkt(&[1, b'x'])), Class::Data);
        let mut ok = proto::ok_payload(0, 2);
        ok[0] = 0xfe;
        assert_eq!(s.feed(&pkt(&ok)), Class::Ok { header: 0xfe, status: 2 });
        assert!(s.done());
    }

    #[test]
    fn prepare_counts_definitions() {
        let mut s = Scanner::new(Expect::Prepare, false);
        // id 7, 1 column, 2 params.
        let first = [0, 7, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0];
        assert_eq!(s.feed(&pkt(&first)), Class::PrepareOk { backend_id: 7 });
        for _ in 0..5 {
            assert!(!s.done());
            s.feed(&pkt(&[3, b'd', b'e', b'f']));
        }
        assert!(s.done());
    }

    proptest! {
        /// Any byte sequence is classified without panicking, and once done stays done.
        #[test]
        fn scanner_never_panics(packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..30),
                                kind in 0u8..4, deprecate in any::<bool>()) {
            let expect = [Expect::ResultSet, Expect::Prepare, Expect::Rows, Expect::Single][kind as usize];
            let mut s = Scanner::new(expect, deprecate);
            for p in &packets {
                let was_done = s.done();
                s.feed(&pkt(p));
                prop_assert!(!was_done || s.done());
            }
        }
    }
}
