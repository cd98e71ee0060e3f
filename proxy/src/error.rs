//! The data path's error type, and every error baton itself sends to a client.
//!
//! Rule: an I/O error or a lost backend closes the client session; everything else
//! becomes an ERR packet and the session lives on. Backend errors are never made
//! here: they are relayed with their own code and SQLSTATE.

use std::io;

/// A MySQL error as the client sees it: code, SQLSTATE, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlError {
    pub code: u16,
    pub state: &'static str,
    pub message: String,
}

impl MysqlError {
    fn new(code: u16, state: &'static str, message: impl Into<String>) -> Self {
        MysqlError { code, state, message: message.into() }
    }

    /// 1045 (28000): unknown user or wrong password.
    pub fn access_denied(user: &str, host: &str, using_password: bool) -> Self {
        let yn = if using_password { "YES" } else { "NO" };
        Self::new(1045, "28000", format!("Access denied for user '{user}'@'{host}' (using password: {yn})"))
    }
    /// 1040 (08004): the connection limit is reached.
    pub fn too_many_connections() -> Self {
        Self::new(1040, "08004", "Too many connections")
    }
    /// 1043 (08S01): the handshake response could not be understood.
    pub fn bad_handshake(why: &str) -> Self {
        Self::new(1043, "08S01", format!("Bad handshake: {why}"))
    }
    /// 1047 (08S01): a command baton does not relay.
    pub fn unknown_command(cmd: u8) -> Self {
        Self::new(1047, "08S01", format!("Unknown command 0x{cmd:02x}: not supported through baton"))
    }
    /// 1153 (08S01): a client packet larger than `max_allowed_packet`.
    pub fn packet_too_large() -> Self {
        Self::new(1153, "08S01", "Got a packet bigger than 'max_allowed_packet' bytes")
    }
    /// 1156 (08S01): a packet with an unexpected sequence id.
    pub fn packets_out_of_order() -> Self {
        Self::new(1156, "08S01", "Got packets out of order")
    }
    /// 1835 (HY000): a command packet too short or inconsistent to be valid.
    pub fn malformed_packet(what: &str) -> Self {
        Self::new(1835, "HY000", format!("Malformed communication packet: {what}"))
    }
    /// 1243 (HY000): a prepared statement id this session does not own.
    pub fn unknown_statement(id: u32, cmd: &str) -> Self {
        Self::new(1243, "HY000", format!("Unknown prepared statement handler ({id}) given to {cmd}"))
    }
    /// 1251 (08004): the client cannot speak protocol 4.1 / the auth baton needs.
    pub fn unsupported_client(why: &str) -> Self {
        Self::new(1251, "08004", format!("Client does not support authentication protocol requested by server; {why}"))
    }
    /// 9107 (HY000): the cluster's primary cannot be reached. Not 2003: codes
    /// 2000-2999 are the client library's own, and Connector/C (the `mariadb` CLI,
    /// mysqlclient, sysbench) reports a server packet carrying one as "2027
    /// Received malformed packet", hiding the message.
    pub fn backend_unavailable(cluster: &str, addr: &str, why: &str) -> Self {
        Self::new(9107, "HY000", format!("baton: cannot connect to primary {addr} of cluster {cluster}: {why}"))
    }
    /// 9108 (HY000): the backend connection was lost mid-command (not 2013: see
    /// [`MysqlError::backend_unavailable`]).
    pub fn backend_lost(why: &str) -> Self {
        Self::new(9108, "HY000", format!("baton: lost connection to the backend during query: {why}"))
    }
    /// 9101 (40001): the client's transaction was open on the old primary when it was
    /// revoked; it was rolled back there. Retry the whole transaction.
    pub fn transaction_lost() -> Self {
        Self::new(9101, "40001", "baton: transaction lost in reparent: it was rolled back on the old primary; retry the transaction")
    }
    /// 9102 (HY000): held in the buffer longer than the window; not executed.
    pub fn buffer_window(cluster: &str) -> Self {
        Self::new(
            9102,
            "HY000",
            format!(
                "baton: request held longer than the buffer window while cluster {cluster} had no established primary; it was not executed; retry"
            ),
        )
    }
    /// 9103 (HY000): evicted from a full buffer; not executed.
    pub fn buffer_full(cluster: &str) -> Self {
        Self::new(9103, "HY000", format!("baton: buffer of cluster {cluster} full; the oldest request was evicted without being executed; retry"))
    }
    /// 9104 (HY000): the failover lasted longer than the max failover duration; not executed.
    pub fn failover_timeout(cluster: &str) -> Self {
        Self::new(
            9104,
            "HY000",
            format!("baton: cluster {cluster} had no established primary within the max failover duration; request not executed; retry"),
        )
    }
    /// 9105 (HY000): the connection to the primary was lost during COMMIT.
    pub fn commit_unknown() -> Self {
        Self::new(
            9105,
            "HY000",
            "baton: connection to the primary lost during COMMIT; the transaction may or may not have committed; check before retrying",
        )
    }
    /// 9105 (HY000): the connection to the primary was lost while a statement ran
    /// outside a transaction (an implicit commit): it may or may not have been applied.
    pub fn statement_unknown(why: &str) -> Self {
        Self::new(
            9105,
            "HY000",
            format!(
                "baton: connection to the primary lost while the statement ran ({why}); it may or may not have been applied; check before retrying"
            ),
        )
    }
    /// 9106 (08S01): the session holds state that cannot follow it to another
    /// backend (named locks, table locks, temporary tables, XA, user variables,
    /// an open cursor), or its state could not be restored there, and its
    /// backend session is gone: the session is closed rather than continued
    /// without it.
    pub fn session_state_lost(what: &str) -> Self {
        Self::new(
            9106,
            "08S01",
            format!(
                "baton: this session's backend was lost and its state cannot be carried to the new one ({what}); the connection is closed; reconnect"
            ),
        )
    }
    /// 1094 (HY000): `KILL` of a thread id that does not exist (where baton can
    /// tell: the id names a session now on another server).
    pub fn unknown_thread(id: u64) -> Self {
        Self::new(1094, "HY000", format!("Unknown thread id: {id}"))
    }
    /// The error for a request the gate did not let through.
    pub fn from_gate(e: baton_control::gate::GateError, cluster: &str) -> Self {
        use baton_control::gate::GateError as G;
        match e {
            G::BufferFull => Self::buffer_full(cluster),
            G::WindowExpired => Self::buffer_window(cluster),
            G::MaxDuration => Self::failover_timeout(cluster),
            G::NoPrimary => Self::no_primary(cluster, "see its status"),
        }
    }
    /// Like [`MysqlError::from_gate`], with the gate's reason for 9109.
    pub fn from_gate_of(e: baton_control::gate::GateError, cluster: &baton_control::cluster::ClusterHandle) -> Self {
        match (e, cluster.gate.status().no_primary) {
            (baton_control::gate::GateError::NoPrimary, Some(why)) => Self::no_primary(&cluster.name, &why),
            _ => Self::from_gate(e, &cluster.name),
        }
    }
    /// 9109 (HY000): no primary is coming without an operator (the named one
    /// answers but cannot be re-established, nothing else was promoted); not
    /// executed; answered at once instead of holding to the max failover duration.
    pub fn no_primary(cluster: &str, why: &str) -> Self {
        Self::new(
            9109,
            "HY000",
            format!("baton: cluster {cluster} has no primary and none is being established ({why}); request not executed; retry later"),
        )
    }
    /// 1053 (08S01): baton is shutting down.
    pub fn shutdown() -> Self {
        Self::new(1053, "08S01", "Server shutdown in progress")
    }
}

impl std::fmt::Display for MysqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ERROR {} ({}): {}", self.code, self.state, self.message)
    }
}

/// Errors of the data path.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The peer went away or the socket failed: close the session.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// A protocol violation that ends the session after telling the client why.
    #[error("{0}")]
    Fatal(MysqlError),
    /// The backend failed in a way that ends the session (after telling the client).
    #[error("backend: {0}")]
    BackendLost(String),
}

impl ProxyError {
    /// The ERR packet, if any, the client should get before the session closes.
    pub fn client_error(&self) -> Option<MysqlError> {
        match self {
            ProxyError::Io(_) => None,
            ProxyError::Fatal(e) => Some(e.clone()),
            ProxyError::BackendLost(why) => Some(MysqlError::backend_lost(why)),
        }
    }
}

pub type Result<T, E = ProxyError> = std::result::Result<T, E>;
