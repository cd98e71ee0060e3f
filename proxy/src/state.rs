//! What a client session has changed on its backend session, kept so the session
//! can be moved to another backend between transactions (the new primary after a
//! reparent) and its state restored there.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::proto::{SERVER_STATUS_AUTOCOMMIT, SERVER_STATUS_IN_TRANS};

/// A prepared statement as the client knows it.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The id on the current backend session.
    pub backend_id: u32,
    /// The statement text, to prepare it again elsewhere.
    pub sql: Bytes,
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
        self.next_statement = self.next_statement.wrapping_add(1).max(1);
        self.statements.insert(id, Statement { backend_id, sql });
        id
    }

    /// After COM_RESET_CONNECTION: everything but the schema is gone.
    pub fn reset(&mut self) {
        let schema = self.schema.take();
        *self = SessionState::new(schema);
    }
}
