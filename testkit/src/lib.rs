//! Test harness: a real 3-node MariaDB GTID cluster with semi-sync, on free
//! loopback ports in a temporary directory, reliably torn down.
//!
//! Used by the test suite (one cluster shared by all tests, described by the JSON
//! file named in `BATON_TEST_CLUSTER`) and by `baton-stack up`, the local stack.
//!
//! Recipe (see shared/reference/mariadb.md): one `mariadb-install-db`, the data dir
//! copied per node, `mariadbd` as user mysql with `log_basename` first, accounts
//! created with `sql_log_bin=0` on every node so GTID state starts equal, every
//! node started `read_only=ON`, then the primary made writable and the replicas
//! pointed at it with `MASTER_USE_GTID=slave_pos`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Accounts the harness creates on every node.
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app";
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin";
pub const REPL_USER: &str = "repl";
pub const REPL_PASSWORD: &str = "repl";

/// What tests need to know about a running cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub dir: PathBuf,
    pub servers: Vec<String>,
    pub sockets: Vec<PathBuf>,
    pub pids: Vec<u32>,
    pub primary: String,
    /// The CA (PEM) that signed every server's certificate (`127.0.0.1`, `localhost`).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

impl ClusterInfo {
    /// The cluster the test command started (`BATON_TEST_CLUSTER`).
    pub fn from_env() -> ClusterInfo {
        Self::from_var("BATON_TEST_CLUSTER")
    }

    /// The cluster described by the file named in environment variable `var`.
    pub fn from_var(var: &str) -> ClusterInfo {
        let path =
            std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run the tests with scripts/test.sh, which starts the MariaDB clusters"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        serde_json::from_str(&text).expect("cluster info JSON")
    }

    /// The port of server `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.servers[i].rsplit(':').next().unwrap().parse().unwrap()
    }
}

/// A running cluster; dropping it stops every node.
pub struct Cluster {
    pub info: ClusterInfo,
    children: Vec<Child>,
    _tmp: Option<tempfile::TempDir>,
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run SQL on a node as root over its unix socket; returns tab-separated rows.
pub fn sql(socket: &Path, statement: &str) -> Result<String> {
    run(Command::new("mariadb").arg("-uroot").arg(format!("--socket={}", socket.display())).args(["-N", "-B", "-e", statement]))
}

pub mod tls;

fn my_cnf(node: usize, dir: &Path, port: u16, tls: &tls::CertFiles, ca: &Path) -> String {
    let d = dir.display();
    let (cert, key, ca) = (tls.cert.display(), tls.key.display(), ca.display());
    format!(
        "[mariadbd]
log_basename=node{node}
datadir={d}/data
socket={d}/mysql.sock
pid-file={d}/mariadbd.pid
log_error={d}/error.log
port={port}
bind-address=127.0.0.1
server_id={id}
log_bin
binlog_format=ROW
gtid_strict_mode=ON
log_slave_updates=ON
skip-name-resolve
character-set-server=utf8mb4
collation-server=utf8mb4_general_ci
innodb_buffer_pool_size=64M
innodb_log_file_size=48M
sync_binlog=1
innodb_flush_log_at_trx_commit=1
rpl_semi_sync_master_enabled=ON
rpl_semi_sync_slave_enabled=ON
rpl_semi_sync_master_wait_no_slave=OFF
rpl_semi_sync_master_timeout=10000
rpl_semi_sync_master_wait_point=AFTER_SYNC
# A crashed primary restarts as a replica candidate: recovery truncates what its
# binlog holds beyond the acknowledged (prepared, never committed) transactions.
init_rpl_role=SLAVE
slave_parallel_threads=4
slave_parallel_mode=optimistic
read_only=ON
max_connections=2000
local_infile=ON
performance_schema=OFF
# TLS offered (not required); clients choose. The ed25519 plugin for its tests.
ssl_ca={ca}
ssl_cert={cert}
ssl_key={key}
plugin_load_add=auth_ed25519
",
        id = node + 1
    )
}

/// mariadbd runs as user mysql: every ancestor of the data dir must let others pass.
fn check_reachable_by_mysql(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for a in dir.ancestors() {
        let mode = std::fs::metadata(a)?.permissions().mode();
        if mode & 0o001 == 0 {
            bail!("{} is not searchable by others (mode {:o}); user mysql cannot reach {}", a.display(), mode & 0o777, dir.display());
        }
    }
    Ok(())
}

impl Cluster {
    /// Start `n` nodes under `dir` (a temporary directory if `None`); node 0 is primary.
    pub fn start(n: usize, dir: Option<PathBuf>) -> Result<Cluster> {
        let (tmp, dir) = match dir {
            Some(d) => {
                if d.exists() {
                    std::fs::remove_dir_all(&d)?;
                }
                std::fs::create_dir_all(&d)?;
                (None, d)
            }
            None => {
                let t = tempfile::Builder::new().prefix("baton-cluster-").tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let dir = dir.canonicalize()?;
        run(Command::new("chmod").arg("755").arg(&dir))?;
        check_reachable_by_mysql(&dir)?;
        let base = dir.join("base");
        // Its own tmpdir: two clusters initialising at once in /tmp collide on
        // "#sql-temptable-*" files ("Could not remove temporary table").
        let tmpdir = dir.join("tmp");
        std::fs::create_dir_all(&tmpdir)?;
        run(Command::new("chown").arg("mysql:mysql").arg(&tmpdir))?;
        run(Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", base.display()))
            .arg(format!("--tmpdir={}", tmpdir.display()))
            .args(["--user=mysql", "--auth-root-authentication-method=socket", "--skip-test-db"]))?;
        let tls_dir = dir.join("tls");
        std::fs::create_dir_all(&tls_dir)?;
        let ca = tls::TestCa::new("baton test cluster CA")?;
        let ca_path = tls_dir.join("ca.pem");
        ca.write(&ca_path)?;
        let server_cert = ca.issue(&tls_dir, "server", &["127.0.0.1", "localhost"], None)?;
        // For clients that must present one (sysbench --mysql-ssl=on always does).
        ca.issue(&tls_dir, "client", &["baton-test-client"], None)?;
        let mut children = Vec::new();
        let mut servers = Vec::new();
        let mut sockets = Vec::new();
        let mut pids = Vec::new();
        for i in 0..n {
            let nd = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&nd)?;
            run(Command::new("cp").arg("-a").arg(&base).arg(nd.join("data")))?;
            run(Command::new("chown").arg("-R").arg("mysql:mysql").arg(&nd))?;
            let port = free_port();
            let cnf = nd.join("my.cnf");
            std::fs::write(&cnf, my_cnf(i, &nd, port, &server_cert, &ca_path))?;
            let child = Command::new("mariadbd")
                .arg(format!("--defaults-file={}", cnf.display()))
                .arg("--user=mysql")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting mariadbd (is mariadb-server installed?)")?;
            pids.push(child.id());
            children.push(child);
            servers.push(format!("127.0.0.1:{port}"));
            sockets.push(nd.join("mysql.sock"));
        }
        let mut cluster = Cluster {
            info: ClusterInfo {
                dir: dir.clone(),
                servers: servers.clone(),
                sockets: sockets.clone(),
                pids,
                primary: servers[0].clone(),
                tls_ca: Some(ca_path.clone()),
            },
            children,
            _tmp: tmp,
        };
        for (i, s) in sockets.iter().enumerate() {
            cluster.wait_ready(i, s)?;
            sql(
                s,
                &format!(
                    "SET sql_log_bin=0;
                 CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}';
                 GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, CREATE TEMPORARY TABLES,
                       LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, EVENT,
                       TRIGGER, REFERENCES, PROCESS ON *.* TO '{APP_USER}'@'%';
                 CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{ADMIN_PASSWORD}';
                 GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION;
                 CREATE USER '{REPL_USER}'@'%' IDENTIFIED BY '{REPL_PASSWORD}';
                 GRANT REPLICATION SLAVE, REPLICATION SLAVE ADMIN, SLAVE MONITOR ON *.* TO '{REPL_USER}'@'%';
                 RESET MASTER;"
                ),
            )?;
        }
        let primary_port = servers[0].rsplit(':').next().unwrap().to_string();
        sql(&sockets[0], "SET GLOBAL read_only=OFF")?;
        for s in &sockets[1..] {
            sql(
                s,
                &format!(
                    "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary_port}, MASTER_USER='{REPL_USER}',
                 MASTER_PASSWORD='{REPL_PASSWORD}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;
                 START SLAVE;"
                ),
            )?;
        }
        sql(&sockets[0], "CREATE DATABASE IF NOT EXISTS baton_test; CREATE DATABASE IF NOT EXISTS sbtest;")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        for s in &sockets[1..] {
            loop {
                let out = sql(s, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='sbtest'")?;
                if out.trim() == "1" {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("replica {} did not replicate within 30 s: {}", s.display(), sql(s, "SHOW SLAVE STATUS\\G")?);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(cluster)
    }

    fn wait_ready(&mut self, i: usize, socket: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if sql(socket, "SELECT 1").is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.children[i].try_wait() {
                let log = std::fs::read_to_string(socket.with_file_name("error.log")).unwrap_or_default();
                bail!("mariadbd node{i} exited ({status}):\n{log}");
            }
            if Instant::now() > deadline {
                bail!("mariadbd node{i} not ready within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Write the cluster description for tests.
    pub fn write_info(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.info)?)?;
        std::fs::rename(tmp, path)?;
        Ok(())
    }

    /// Stop every node (SIGTERM, then SIGKILL after 20 s).
    pub fn stop(&mut self) {
        for c in &mut self.children {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for c in &mut self.children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        self.children.clear();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real single-node etcd on free loopback ports, in its own directory; dropping
/// it stops it. [`Etcd::stop`] and [`Etcd::start_again`] take it down and bring it
/// back on the same ports and data (the outage tests).
pub struct Etcd {
    /// `127.0.0.1:port` for clients.
    pub endpoint: String,
    dir: PathBuf,
    peer_port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// Start etcd with its data under `dir`; returns once it answers.
    pub fn start(dir: &Path) -> Result<Etcd> {
        std::fs::create_dir_all(dir)?;
        let mut e = Etcd { endpoint: format!("127.0.0.1:{}", free_port()), dir: dir.to_path_buf(), peer_port: free_port(), child: None };
        e.start_again()?;
        Ok(e)
    }

    /// Start it (again) on the same ports and data directory.
    pub fn start_again(&mut self) -> Result<()> {
        let client = format!("http://{}", self.endpoint);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("etcd.log"))?;
        let child = Command::new("etcd")
            .arg("--name=baton-test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=baton-test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (Debian package etcd-server; scripts/setup.sh installs it)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={client}"))
                .args(["--command-timeout=1s", "endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd did not become healthy at {client}; see {}", self.dir.join("etcd.log").display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kill it (SIGKILL: an outage, not a clean shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
