//! A client command, parsed once from its packet: which command it is, the
//! fields baton acts on (statement ids, a KILL's thread id), and the analysis of
//! its SQL text ([`crate::sql`]). Source: the MariaDB protocol pages
//! ("COM_QUERY", "COM_STMT_EXECUTE", "COM_PROCESS_KILL", ...).

use bytes::Bytes;

use crate::proto::{cmd, Cursor};
use crate::sql::{self, Analysis};

/// The statement id MariaDB reads as "the statement prepared last" (used by
/// `mariadb_stmt_execute_direct`).
pub const LAST_PREPARED: u32 = u32::MAX;

/// COM_STMT_EXECUTE flag bits that open a server-side cursor.
const CURSOR_FLAGS: u8 = 0x01 | 0x02 | 0x04;

#[derive(Debug)]
pub enum Command {
    Quit,
    /// COM_QUERY with its analysed text.
    Query(Box<Analysis>),
    InitDb,
    Ping,
    Statistics,
    /// COM_PROCESS_KILL with the thread id.
    ProcessKill(u32),
    FieldList,
    Prepare,
    /// COM_STMT_EXECUTE: the client's statement id, and whether it opens a cursor.
    Execute {
        id: u32,
        cursor: bool,
    },
    Fetch {
        id: u32,
    },
    Reset {
        id: u32,
    },
    /// COM_STMT_SEND_LONG_DATA: never answered, even on error.
    LongData {
        id: u32,
    },
    Close {
        id: u32,
    },
    /// COM_SET_OPTION: multi-statements on (`true`) or off.
    SetOption(bool),
    ChangeUser,
    ResetConnection,
    /// A packet too short for its command (ERR 1835, or silence for the
    /// commands that have no response).
    Malformed {
        name: &'static str,
        silent: bool,
    },
    Unknown(u8),
}

impl Command {
    /// Parse a command payload (total: never panics).
    pub fn parse(payload: &Bytes) -> Command {
        let Some(&code) = payload.first() else {
            return Command::Malformed { name: "empty command", silent: false };
        };
        let body = &payload[1..];
        let id = || Cursor::new(body).u32();
        match code {
            cmd::QUIT => Command::Quit,
            cmd::QUERY => Command::Query(Box::new(sql::analyse(body))),
            cmd::INIT_DB => Command::InitDb,
            cmd::PING => Command::Ping,
            cmd::STATISTICS => Command::Statistics,
            cmd::PROCESS_KILL => match id() {
                Some(t) => Command::ProcessKill(t),
                None => Command::Malformed { name: "COM_PROCESS_KILL", silent: false },
            },
            cmd::FIELD_LIST => Command::FieldList,
            cmd::STMT_PREPARE => Command::Prepare,
            cmd::STMT_EXECUTE => match (id(), body.get(4)) {
                (Some(id), Some(flags)) => Command::Execute { id, cursor: flags & CURSOR_FLAGS != 0 },
                _ => Command::Malformed { name: "mysqld_stmt_execute", silent: false },
            },
            cmd::STMT_FETCH => match id() {
                Some(id) => Command::Fetch { id },
                None => Command::Malformed { name: "mysqld_stmt_fetch", silent: false },
            },
            cmd::STMT_RESET => match id() {
                Some(id) => Command::Reset { id },
                None => Command::Malformed { name: "mysqld_stmt_reset", silent: false },
            },
            cmd::STMT_SEND_LONG_DATA => match id() {
                Some(id) if body.len() >= 6 => Command::LongData { id },
                _ => Command::Malformed { name: "mysqld_stmt_send_long_data", silent: true },
            },
            cmd::STMT_CLOSE => match id() {
                Some(id) => Command::Close { id },
                None => Command::Malformed { name: "mysqld_stmt_close", silent: true },
            },
            cmd::SET_OPTION => match Cursor::new(body).u16() {
                Some(0) => Command::SetOption(true),
                Some(1) => Command::SetOption(false),
                _ => Command::Malformed { name: "COM_SET_OPTION", silent: false },
            },
            cmd::CHANGE_USER => Command::ChangeUser,
            cmd::RESET_CONNECTION => Command::ResetConnection,
            other => Command::Unknown(other),
        }
    }

    /// The statement id a statement command names, if any.
    pub fn statement_id(&self) -> Option<u32> {
        match self {
            Command::Execute { id, .. } | Command::Fetch { id } | Command::Reset { id } | Command::LongData { id } => Some(*id),
            _ => None,
        }
    }

    /// The name the server uses in ERR 1243 for this statement command.
    pub fn statement_command_name(&self) -> &'static str {
        match self {
            Command::Execute { .. } => "mysqld_stmt_execute",
            Command::Fetch { .. } => "mysqld_stmt_fetch",
            Command::Reset { .. } => "mysqld_stmt_reset",
            Command::LongData { .. } => "mysqld_stmt_send_long_data",
            _ => "mysqld_stmt_close",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn statement_commands() {
        let p = Bytes::from_static(&[cmd::STMT_EXECUTE, 0xff, 0xff, 0xff, 0xff, 1, 1, 0, 0, 0]);
        assert!(matches!(Command::parse(&p), Command::Execute { id: LAST_PREPARED, cursor: true }));
        let p = Bytes::from_static(&[cmd::STMT_SEND_LONG_DATA, 1, 0]);
        assert!(matches!(Command::parse(&p), Command::Malformed { silent: true, .. }));
        let p = Bytes::from_static(&[cmd::SET_OPTION, 1, 0]);
        assert!(matches!(Command::parse(&p), Command::SetOption(false)));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Command::parse(&Bytes::from(data));
        }
    }
}
