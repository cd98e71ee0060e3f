//! Recording a transaction for replay (`[transaction_replay]`): the commands
//! the client sent inside it, as it sent them, and a checksum of each response
//! it saw. A replay re-sends them on the new primary and compares checksums
//! (`session/replay.rs`); equal means the client cannot tell the transaction
//! moved. The rules are the README's "Transaction replay".
//!
//! What a checksum covers, per response packet (MySQL protocol, "Text
//! Resultset" and "OK_Packet"): column definitions and rows byte for byte; an
//! OK's affected rows, last insert id and warning count; an EOF's warning
//! count; an ERR's code and message. Not the status flags or session-state
//! information, which name the server, not the result (a GTID, a flag).

use std::hash::{DefaultHasher, Hasher};

use bytes::Bytes;

use crate::proto;
use crate::relay::Class;

/// A running checksum of one response.
#[derive(Debug, Clone, Default)]
pub struct Checksum {
    hasher: DefaultHasher,
    /// The first auto-generated id an OK reported (0: none): pinned with
    /// `SET insert_id` when the command is re-sent, for the new primary's
    /// counter need not be where the old one's was.
    pub insert_id: u64,
}

impl Checksum {
    pub fn new() -> Checksum {
        Checksum::default()
    }

    /// Fold in one packet (`payload` without its header) of class `class`.
    pub fn feed(&mut self, class: Class, payload: &[u8]) {
        let h = &mut self.hasher;
        match class {
            Class::Data | Class::PrepareOk { .. } => {
                h.write_u8(1);
                h.write(payload);
            }
            Class::Ok { header, .. } => {
                h.write_u8(2);
                h.write_u8(header);
                if let Some(ok) = proto::parse_ok(payload) {
                    if self.insert_id == 0 {
                        self.insert_id = ok.last_insert_id;
                    }
                    h.write_u64(ok.affected_rows);
                    h.write_u64(ok.last_insert_id);
                    h.write_u16(ok.warnings);
                }
            }
            Class::Eof { .. } => {
                h.write_u8(3);
                // 0xFE, warnings (2 bytes), status (2 bytes).
                h.write(payload.get(1..3).unwrap_or_default());
            }
            Class::Err => {
                h.write_u8(4);
                h.write(payload);
            }
            Class::LocalInfile => h.write_u8(5),
        }
    }

    pub fn value(&self) -> u64 {
        self.hasher.finish()
    }
}

/// What one recorded command was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// COM_QUERY or COM_STMT_EXECUTE / COM_STMT_RESET (the client's statement
    /// id, mapped to the new backend's when re-sent): a response follows.
    Answered,
    /// COM_STMT_SEND_LONG_DATA: no response.
    LongData,
}

/// One command as the client sent it, and the checksum of what it saw.
#[derive(Debug, Clone)]
pub struct Entry {
    pub payload: Bytes,
    pub kind: Kind,
    pub checksum: u64,
    /// [`Checksum::insert_id`].
    pub insert_id: u64,
}

/// Why a transaction cannot be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreplayable {
    /// It recorded more than `max_bytes`.
    Size,
    /// It did what cannot be re-run (named in the log).
    Unsupported(&'static str),
}

/// The transaction open now: what a replay re-sends.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub entries: Vec<Entry>,
    bytes: usize,
    pub unreplayable: Option<Unreplayable>,
    /// `LAST_INSERT_ID()` when it began (restored before a replay: the
    /// transaction's own inserts change it).
    pub insert_id_at_start: u64,
}

impl Recording {
    pub fn new(insert_id_at_start: u64) -> Recording {
        Recording { insert_id_at_start, ..Default::default() }
    }

    /// Add a command; past `max_bytes` the recording is dropped (not replayable).
    pub fn push(&mut self, entry: Entry, max_bytes: usize) {
        if self.unreplayable.is_some() {
            return;
        }
        self.bytes += entry.payload.len();
        if self.bytes > max_bytes {
            self.give_up(Unreplayable::Size);
            return;
        }
        self.entries.push(entry);
    }

    /// Mark it not replayable and free what it holds.
    pub fn give_up(&mut self, why: Unreplayable) {
        if self.unreplayable.is_none() {
            self.unreplayable = Some(why);
        }
        self.entries = Vec::new();
        self.bytes = 0;
    }
}

/// Is `sql` a `SET TRANSACTION ...` (characteristics of the next transaction
/// only, so a replay must send it again before the transaction)?
pub fn is_set_transaction(sql: &[u8]) -> bool {
    let words: Vec<String> = String::from_utf8_lossy(sql).split_ascii_whitespace().take(2).map(|w| w.to_ascii_uppercase()).collect();
    words.len() == 2 && words[0] == "SET" && words[1] == "TRANSACTION"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(affected: u8, insert_id: u8, status: u16, warnings: u16) -> Vec<u8> {
        let mut p = vec![0x00, affected, insert_id];
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&warnings.to_le_bytes());
        p
    }

    #[test]
    fn checksums_see_results_not_status_flags() {
        let sum = |packets: &[(Class, Vec<u8>)]| {
            let mut c = Checksum::new();
            for (class, p) in packets {
                c.feed(*class, p);
            }
            c.value()
        };
        let okc = |status| Class::Ok { header: 0, status };
        let a = sum(&[(okc(3), ok(1, 7, 3, 0))]);
        // Another status (a server's flags) is the same result.
        assert_eq!(a, sum(&[(okc(1), ok(1, 7, 1, 0))]));
        // Another insert id, row count or warning count is not.
        assert_ne!(a, sum(&[(okc(3), ok(1, 8, 3, 0))]));
        assert_ne!(a, sum(&[(okc(3), ok(2, 7, 3, 0))]));
        assert_ne!(a, sum(&[(okc(3), ok(1, 7, 3, 1))]));
        // Rows byte for byte, in order.
        let rows = |r: &[&[u8]]| r.iter().map(|p| (Class::Data, p.to_vec())).collect::<Vec<_>>();
        assert_eq!(sum(&rows(&[b"\x011", b"\x012"])), sum(&rows(&[b"\x011", b"\x012"])));
        assert_ne!(sum(&rows(&[b"\x011", b"\x012"])), sum(&rows(&[b"\x012", b"\x011"])));
        assert_ne!(sum(&rows(&[b"\x0111"])), sum(&rows(&[b"\x011", b"\x011"])));
    }

    #[test]
    fn a_recording_past_its_limit_is_dropped() {
        let e = |n: usize| Entry { payload: Bytes::from(vec![3u8; n]), kind: Kind::Answered, checksum: 0, insert_id: 0 };
        let mut r = Recording::new(5);
        r.push(e(60), 100);
        r.push(e(40), 100);
        assert_eq!((r.entries.len(), r.unreplayable), (2, None));
        r.push(e(1), 100);
        assert_eq!((r.entries.len(), r.unreplayable), (0, Some(Unreplayable::Size)));
        r.push(e(1), 100);
        assert!(r.entries.is_empty());
    }

    #[test]
    fn set_transaction_is_told_from_other_sets() {
        assert!(is_set_transaction(b"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"));
        assert!(is_set_transaction(b"  set\n transaction read only"));
        assert!(!is_set_transaction(b"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"));
        assert!(!is_set_transaction(b"SET @x = 1"));
        assert!(!is_set_transaction(b"SET"));
    }
}
