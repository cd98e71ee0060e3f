//! What a client session has changed on its backend session, kept so the session
//! can be moved to another backend between transactions (the new primary after a
//! reparent) and its state restored there.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use crate::proto::{SERVER_STATUS_AUTOCOMMIT, SERVER_STATUS_IN_TRANS};
use crate::sql::{self, Pins};
use crate::tracking::ClientTracking;

/// A prepared statement as the client knows it.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The id on the current backend session.
    pub backend_id: u32,
    /// The statement text, to prepare it again elsewhere.
    pub sql: Bytes,
    /// What the text says (read once, at prepare).
    pub analysis: sql::Analysis,
}

/// Session state tracked from the server's status flags and session tracking.
#[derive(Debug, Clone)]
pub struct SessionState {
    /// Status flags of the last OK/EOF from the backend.
    pub status: u16,
    /// The current schema, as the server reported it.
    pub schema: Option<Vec<u8>>,
    /// System variables the session changed (from `session_track_system_variables='*'`).
    pub variables: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Prepared statements, keyed by the id baton gave the client.
    pub statements: HashMap<u32, Statement>,
    next_statement: u32,
    /// COM_SET_OPTION: multi-statements on/off, if the client changed it.
    pub multi_statements: Option<bool>,
    /// What `LAST_INSERT_ID()` returns (the last non-zero insert id of an OK).
    pub last_insert_id: u64,
    /// The client's id of the statement prepared last (what id 0xFFFFFFFF names);
    /// None after a failed prepare or its close.
    pub last_prepared: Option<u32>,
    /// Statements with an open server-side cursor.
    pub cursors: BTreeSet<u32>,
    /// State created that cannot move to another backend (cursors excluded:
    /// see [`SessionState::pins`]).
    pub held: Pins,
    /// Session tracking as the client set it.
    pub tracking: ClientTracking,
}

impl SessionState {
    pub fn new(schema: Option<Vec<u8>>) -> Self {
        SessionState {
            status: SERVER_STATUS_AUTOCOMMIT,
            schema,
            variables: BTreeMap::new(),
            statements: HashMap::new(),
            next_statement: 1,
            multi_statements: None,
            last_insert_id: 0,
            last_prepared: None,
            cursors: BTreeSet::new(),
            held: Pins::NONE,
            tracking: ClientTracking::default(),
        }
    }

    /// Everything this session holds that a new backend session cannot have.
    pub fn pins(&self) -> Pins {
        if self.cursors.is_empty() {
            self.held
        } else {
            self.held.union(Pins::CURSOR)
        }
    }

    /// Is a transaction open on the backend?
    pub fn in_transaction(&self) -> bool {
        self.status & SERVER_STATUS_IN_TRANS != 0
    }

    pub fn autocommit(&self) -> bool {
        self.status & SERVER_STATUS_AUTOCOMMIT != 0
    }

    /// Register a statement; returns the id the client will use.
    pub fn add_statement(&mut self, backend_id: u32, sql: Bytes) -> u32 {
        let id = self.next_statement;
        self.next_statement = self.next_statement.wrapping_add(1).clamp(1, crate::command::LAST_PREPARED - 1);
        let analysis = sql::analyse(&sql);
        self.statements.insert(id, Statement { backend_id, sql, analysis });
        self.last_prepared = Some(id);
        id
    }

    /// The statement a client id names (0xFFFFFFFF: the one prepared last).
    pub fn statement(&self, id: u32) -> Option<(u32, &Statement)> {
        let id = if id == crate::command::LAST_PREPARED { self.last_prepared? } else { id };
        self.statements.get(&id).map(|s| (id, s))
    }

    /// After COM_RESET_CONNECTION: everything but the schema and the client's
    /// tracking choice is gone (the server resets tracking to its defaults, which
    /// the caller puts back from the backend's).
    pub fn reset(&mut self) {
        let schema = self.schema.take();
        *self = SessionState::new(schema);
    }
}
