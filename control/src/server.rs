//! Talking to one MariaDB server as the control plane: read_only, GTID positions,
//! replication, semi-sync, connection kills. Every call has a timeout; a server
//! that does not answer in time counts as unreachable.
//!
//! The seam: every step of the control plane (conditions, election, fencing,
//! rejoin, reparent) talks to servers through [`ServerSql`], opened by a
//! [`Connect`] that each [`crate::cluster::ClusterHandle`] carries. [`MariaDb`]
//! and [`MariaDbConnect`] are the real ones (SQL over mysql_async); unit tests
//! put an in-memory cluster with injected faults behind the same traits
//! (`crate::fake`).

use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Row};

/// Login for control-plane connections.
#[derive(Clone)]
pub struct AdminLogin {
    pub user: String,
    pub password: String,
    pub timeout: Duration,
    /// TLS to the servers (the cluster's `tls`, `tls_ca`); None: plaintext.
    pub tls: Option<mysql_async::SslOpts>,
}

impl std::fmt::Debug for AdminLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminLogin").field("user", &self.user).finish()
    }
}

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{addr}: unreachable ({why})")]
    Unreachable { addr: String, why: String },
    #[error("{addr}: {why}")]
    Query { addr: String, why: String },
}

/// Replication as `SHOW SLAVE STATUS` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replication {
    pub source: String,
    pub io_running: bool,
    pub sql_running: bool,
    pub lag_seconds: Option<u64>,
    pub last_error: String,
    /// The GTID position the IO thread has received (`Gtid_IO_Pos`).
    pub gtid_io_pos: String,
}

/// One open control-plane connection to a server, whatever is behind it.
pub type Server = Box<dyn ServerSql>;

/// Opens control-plane connections (the real one: [`MariaDbConnect`]).
#[async_trait::async_trait]
pub trait Connect: Send + Sync {
    /// Connect to `addr` ("host:port"), bounded by the login's timeout.
    /// Err: [`ServerError::Unreachable`] (no answer in time, refused TCP) or
    /// [`ServerError::Query`] (it answered and refused the login).
    async fn connect(&self, addr: &str, login: &AdminLogin) -> Result<Server, ServerError>;
}

/// What the control plane asks of one server. Each call is bounded by the
/// login's timeout unless it takes its own; an answer that does not come in time
/// is [`ServerError::Unreachable`].
#[async_trait::async_trait]
pub trait ServerSql: Send {
    /// "host:port" as connected.
    fn addr(&self) -> &str;
    /// `@@GLOBAL.read_only`.
    async fn read_only(&mut self) -> Result<bool, ServerError>;
    /// `SET GLOBAL read_only=ON|OFF` (ON waits behind running writes).
    async fn set_read_only(&mut self, on: bool) -> Result<(), ServerError>;
    /// `@@GLOBAL.gtid_binlog_pos`.
    async fn gtid_binlog_pos(&mut self) -> Result<String, ServerError>;
    /// The last GTID of every (domain, server) in this server's binlog.
    async fn gtid_binlog_state(&mut self) -> Result<String, ServerError>;
    /// Every GTID this server has: its binlog state merged with `gtid_slave_pos`
    /// (a server whose binlog was reset, `RESET MASTER` when it was rebuilt as a
    /// replica, keeps what it applied only there).
    async fn gtid_history(&mut self) -> Result<String, ServerError>;
    /// `@@GLOBAL.gtid_current_pos`.
    async fn gtid_current_pos(&mut self) -> Result<String, ServerError>;
    /// A global system variable as text (`SELECT @@GLOBAL.<name>`, NULL as "").
    async fn variable(&mut self, name: &str) -> Result<String, ServerError>;
    /// A global status variable as a number (0 if missing).
    async fn status_u64(&mut self, name: &str) -> Result<u64, ServerError>;
    /// `SHOW SLAVE STATUS`, or None when the server does not replicate.
    async fn replication(&mut self) -> Result<Option<Replication>, ServerError>;
    /// Wait until this server has applied `pos` (`MASTER_GTID_WAIT`); false on timeout.
    async fn wait_for_gtid(&mut self, pos: &str, timeout: Duration) -> Result<bool, ServerError>;
    /// Kill every client connection except replication streams, system threads
    /// and the control plane's own user. Returns how many were killed.
    async fn kill_clients(&mut self, keep_user: &str) -> Result<usize, ServerError>;
    /// Point this server's replication at `source` (GTID, slave_pos) and start it;
    /// `reset_slave_pos` first sets `gtid_slave_pos` to what its binlog has (an
    /// old primary's slave position is stale).
    async fn replicate_from(&mut self, source: &str, user: &str, password: &str, reset_slave_pos: bool) -> Result<(), ServerError>;
    /// `STOP SLAVE; RESET SLAVE ALL`: it replicates from nothing any more.
    async fn stop_replicating(&mut self) -> Result<(), ServerError>;
    /// `STOP SLAVE IO_THREAD`, with its own timeout: an IO thread blocked reading
    /// from a hung primary stops only when that read gives up.
    async fn stop_io_thread(&mut self, patience: Duration) -> Result<(), ServerError>;
    /// `START SLAVE IO_THREAD`.
    async fn start_io_thread(&mut self) -> Result<(), ServerError>;
    /// Disconnect politely.
    async fn close(self: Box<Self>);

    /// Wait up to `timeout` until this server replicates from `source` with its IO
    /// and SQL threads both running. Err: why it does not (the threads' state and
    /// `Last_IO_Error` / `Last_SQL_Error`, e.g. "Access denied" for a wrong
    /// replication password), as of the last look.
    async fn wait_following(&mut self, source: &str, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let why = match self.replication().await {
                Ok(Some(r)) if r.source == source && r.io_running && r.sql_running => return Ok(()),
                Ok(Some(r)) if r.source != source => format!("replicates from {}, not {source}", r.source),
                Ok(Some(r)) => {
                    let state = |b: bool| if b { "running" } else { "not running" };
                    let err = if r.last_error.is_empty() { String::new() } else { format!(": {}", r.last_error) };
                    format!("IO thread {}, SQL thread {}{err}", state(r.io_running), state(r.sql_running))
                }
                Ok(None) => "not a replica".to_string(),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(why);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The real [`Connect`]: mysql_async to MariaDB.
pub struct MariaDbConnect;

#[async_trait::async_trait]
impl Connect for MariaDbConnect {
    async fn connect(&self, addr: &str, login: &AdminLogin) -> Result<Server, ServerError> {
        Ok(Box::new(MariaDb::connect(addr, login).await?))
    }
}

/// One open control-plane connection to a real MariaDB server.
pub struct MariaDb {
    pub addr: String,
    conn: Conn,
    timeout: Duration,
}

impl MariaDb {
    /// Connect (bounded by the login's timeout).
    pub async fn connect(addr: &str, login: &AdminLogin) -> Result<MariaDb, ServerError> {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "3306"));
        let opts: Opts = OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(port.parse().unwrap_or(3306))
            .user(Some(&login.user))
            .pass(Some(&login.password))
            .prefer_socket(false)
            .ssl_opts(login.tls.clone())
            .into();
        let unreachable = |why: String| ServerError::Unreachable { addr: addr.to_string(), why };
        match tokio::time::timeout(login.timeout, Conn::new(opts)).await {
            Ok(Ok(conn)) => Ok(MariaDb { addr: addr.to_string(), conn, timeout: login.timeout }),
            // It answered, and refused (wrong credentials, too many connections): up.
            Ok(Err(mysql_async::Error::Server(e))) => Err(ServerError::Query { addr: addr.to_string(), why: format!("login refused: {e}") }),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable(format!("no answer within {} ms", login.timeout.as_millis()))),
        }
    }

    async fn run<T, F>(&mut self, what: &str, timeout: Duration, f: F) -> Result<T, ServerError>
    where
        F: for<'c> FnOnce(&'c mut Conn) -> std::pin::Pin<Box<dyn std::future::Future<Output = mysql_async::Result<T>> + Send + 'c>>,
    {
        let addr = self.addr.clone();
        match tokio::time::timeout(timeout, f(&mut self.conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(mysql_async::Error::Io(e))) => Err(ServerError::Unreachable { addr, why: e.to_string() }),
            Ok(Err(e)) => Err(ServerError::Query { addr, why: format!("{what}: {e}") }),
            Err(_) => Err(ServerError::Unreachable { addr, why: format!("{what}: no answer within {} ms", timeout.as_millis()) }),
        }
    }

    /// Run statements that return nothing.
    pub async fn exec(&mut self, sql: &str) -> Result<(), ServerError> {
        let sql = sql.to_string();
        let t = self.timeout;
        self.run("exec", t, move |c| Box::pin(async move { c.query_drop(sql).await })).await
    }

    /// Like [`Server::exec`] with its own timeout (for statements that may wait on a
    /// hung peer, such as stopping a replication thread that is blocked reading).
    pub async fn exec_within(&mut self, sql: &str, timeout: Duration) -> Result<(), ServerError> {
        let sql = sql.to_string();
        self.run("exec", timeout, move |c| Box::pin(async move { c.query_drop(sql).await })).await
    }

    /// One scalar as a string (NULL as "").
    pub async fn scalar(&mut self, sql: &str) -> Result<String, ServerError> {
        let sql = sql.to_string();
        let t = self.timeout;
        let v: Option<Option<String>> = self.run("query", t, move |c| Box::pin(async move { c.query_first(sql).await })).await?;
        Ok(v.flatten().unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl ServerSql for MariaDb {
    fn addr(&self) -> &str {
        &self.addr
    }

    async fn read_only(&mut self) -> Result<bool, ServerError> {
        Ok(self.scalar("SELECT @@GLOBAL.read_only").await? == "1")
    }

    async fn gtid_binlog_pos(&mut self) -> Result<String, ServerError> {
        self.scalar("SELECT @@GLOBAL.gtid_binlog_pos").await
    }

    /// The last GTID of every (domain, server) in this server's binlog.
    async fn gtid_binlog_state(&mut self) -> Result<String, ServerError> {
        self.scalar("SELECT @@GLOBAL.gtid_binlog_state").await
    }

    /// Every GTID this server has: its binlog state merged with `gtid_slave_pos`
    /// (a server whose binlog was reset, `RESET MASTER` when it was rebuilt as a
    /// replica, keeps what it applied only there).
    async fn gtid_history(&mut self) -> Result<String, ServerError> {
        self.scalar("SELECT CONCAT_WS(',', NULLIF(@@GLOBAL.gtid_binlog_state, ''), NULLIF(@@GLOBAL.gtid_slave_pos, ''))").await
    }

    async fn gtid_current_pos(&mut self) -> Result<String, ServerError> {
        self.scalar("SELECT @@GLOBAL.gtid_current_pos").await
    }

    /// `SHOW SLAVE STATUS`, or None when the server does not replicate.
    async fn replication(&mut self) -> Result<Option<Replication>, ServerError> {
        let t = self.timeout;
        let row: Option<Row> = self.run("SHOW SLAVE STATUS", t, |c| Box::pin(async move { c.query_first("SHOW SLAVE STATUS").await })).await?;
        let Some(row) = row else { return Ok(None) };
        let get = |name: &str| -> String {
            row.columns_ref()
                .iter()
                .position(|c| c.name_str() == name)
                .and_then(|i| row.as_ref(i).cloned())
                .and_then(|v| mysql_async::from_value_opt::<Option<String>>(v).ok().flatten())
                .unwrap_or_default()
        };
        let host = get("Master_Host");
        if host.is_empty() {
            return Ok(None);
        }
        Ok(Some(Replication {
            source: format!("{host}:{}", get("Master_Port")),
            io_running: get("Slave_IO_Running") == "Yes",
            sql_running: get("Slave_SQL_Running") == "Yes",
            lag_seconds: get("Seconds_Behind_Master").parse().ok(),
            last_error: [get("Last_IO_Error"), get("Last_SQL_Error")].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join("; "),
            gtid_io_pos: get("Gtid_IO_Pos"),
        }))
    }

    /// A global status variable as a number (0 if missing).
    async fn status_u64(&mut self, name: &str) -> Result<u64, ServerError> {
        let sql = format!("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = '{}'", name.to_uppercase());
        Ok(self.scalar(&sql).await?.parse().unwrap_or(0))
    }

    /// Wait until this server has applied `pos`; false on timeout.
    async fn wait_for_gtid(&mut self, pos: &str, timeout: Duration) -> Result<bool, ServerError> {
        let sql = format!("SELECT MASTER_GTID_WAIT('{}', {})", pos.replace('\'', ""), timeout.as_secs_f64());
        let t = timeout + self.timeout;
        let v: Option<i64> = self.run("MASTER_GTID_WAIT", t, move |c| Box::pin(async move { c.query_first(sql).await })).await?;
        Ok(v == Some(0))
    }

    /// Kill every client connection except replication streams, system threads
    /// and the control plane's own user. Returns how many were killed.
    async fn kill_clients(&mut self, keep_user: &str) -> Result<usize, ServerError> {
        let sql = format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
             AND USER NOT IN ('system user', 'event_scheduler', '{}') \
             AND COMMAND NOT IN ('Binlog Dump', 'Daemon', 'Slave_IO', 'Slave_SQL', 'Slave_worker')",
            keep_user.replace('\'', "")
        );
        let t = self.timeout;
        let ids: Vec<u64> = self.run("processlist", t, move |c| Box::pin(async move { c.query(sql).await })).await?;
        for id in &ids {
            // The connection may have gone by itself meanwhile: ignore "unknown thread".
            let _ = self.exec(&format!("KILL CONNECTION {id}")).await;
        }
        Ok(ids.len())
    }

    /// Point this server's replication at `source` (GTID, slave_pos).
    async fn replicate_from(&mut self, source: &str, user: &str, password: &str, reset_slave_pos: bool) -> Result<(), ServerError> {
        let (host, port) = source.rsplit_once(':').unwrap_or((source, "3306"));
        self.exec("STOP SLAVE").await?;
        if reset_slave_pos {
            // An old primary's gtid_slave_pos is stale: start from what it has.
            self.exec("SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos").await?;
        }
        self.exec(&format!(
            "CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={}, MASTER_USER='{}', MASTER_PASSWORD='{}', \
             MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
            host.replace('\'', ""),
            port.parse::<u16>().unwrap_or(3306),
            user.replace('\'', ""),
            password.replace('\'', "''"),
        ))
        .await?;
        self.exec("START SLAVE").await
    }

    async fn set_read_only(&mut self, on: bool) -> Result<(), ServerError> {
        self.exec(if on { "SET GLOBAL read_only=ON" } else { "SET GLOBAL read_only=OFF" }).await
    }

    async fn variable(&mut self, name: &str) -> Result<String, ServerError> {
        let name: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        self.scalar(&format!("SELECT @@GLOBAL.{name}")).await
    }

    async fn stop_replicating(&mut self) -> Result<(), ServerError> {
        self.exec("STOP SLAVE").await?;
        self.exec("RESET SLAVE ALL").await
    }

    async fn stop_io_thread(&mut self, patience: Duration) -> Result<(), ServerError> {
        self.exec_within("STOP SLAVE IO_THREAD", patience).await
    }

    async fn start_io_thread(&mut self) -> Result<(), ServerError> {
        self.exec("START SLAVE IO_THREAD").await
    }

    async fn close(self: Box<Self>) {
        let _ = self.conn.disconnect().await;
    }
}
