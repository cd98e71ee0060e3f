//! TLS on both legs and the authentication methods (issue 12), against the
//! shared cluster (its servers offer TLS with a certificate from the harness's
//! CA, and load the ed25519 plugin), with the real `mariadb` CLI,
//! mysql_async (rustls) and mysql-connector-python.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use baton_testkit::tls::{CertFiles, TestCa};
use common::*;
use mysql_async::prelude::*;

/// A CA and a baton certificate for 127.0.0.1 it signed, in a temp dir.
struct Certs {
    dir: tempfile::TempDir,
    ca: TestCa,
    ca_path: PathBuf,
    baton: CertFiles,
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("baton client-side test CA").unwrap();
    let ca_path = dir.path().join("ca.pem");
    ca.write(&ca_path).unwrap();
    let baton = ca.issue(dir.path(), "baton", &["127.0.0.1"], None).unwrap();
    Certs { dir, ca, ca_path, baton }
}

fn server_tls(c: &CertFiles, required: bool) -> String {
    format!("[server.tls]\ncert = {:?}\nkey = {:?}\nrequired = {required}\n", c.cert.display().to_string(), c.key.display().to_string())
}

/// A config with `[server.tls]` text `tls`, extra `[[users]]` text, and the
/// cluster's TLS keys `cluster_tls`.
fn config(info: &ClusterInfo, topo: &Path, tls: &str, users: &str, cluster_tls: &str) -> String {
    let servers = info.servers.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{tls}
[topology]
store = "file"
path = {topo:?}
[[users]]
name = "app"
password_hash = "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3"
{users}
[[clusters]]
name = "main"
servers = [{servers}]
primary = {primary:?}
{cluster_tls}
"#,
        topo = topo.display().to_string(),
        primary = info.primary,
    )
}

async fn start(text: &str, dir: tempfile::TempDir) -> TestBaton {
    let config = baton_control::Config::parse(text).expect("test config");
    let running = baton::start(config).await.expect("baton starts");
    let port = running.mysql_addr.port();
    TestBaton { running: Some(running), dir, port }
}

fn verify_ca(info: &ClusterInfo) -> String {
    format!("tls = \"verify_ca\"\ntls_ca = {:?}\n", info.tls_ca.as_ref().expect("the harness's CA").display().to_string())
}

fn mariadb(port: u16, user: &str, password: &str, extra: &[&str], sql: &str) -> (bool, String, String) {
    let out = Command::new("mariadb")
        .args(["-h127.0.0.1", &format!("-P{port}"), &format!("-u{user}"), &format!("-p{password}"), "--protocol=TCP", "-N", "-B"])
        .args(extra)
        .args(["-e", sql])
        .output()
        .expect("mariadb CLI installed");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_string(), String::from_utf8_lossy(&out.stderr).trim().to_string())
}

/// Run SQL on the primary as root (its unix socket).
fn root_sql(info: &ClusterInfo, sql: &str) -> String {
    baton_testkit::sql(&info.sockets[0], sql).expect("root SQL on the primary")
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_verifies_batons_certificate_and_the_backend_leg_is_encrypted() {
    let info = cluster();
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let text = config(&info, &dir.path().join("topology.json"), &server_tls(&c.baton, true), "", &verify_ca(&info));
    let baton = start(&text, dir).await;
    let ca = c.ca_path.display().to_string();
    let verify = ["--ssl", "--ssl-verify-server-cert"];
    let ssl_ca = format!("--ssl-ca={ca}");

    // The client verifies baton's certificate; the session's own Ssl_cipher is the
    // backend leg's (baton to MariaDB), encrypted under verify_ca.
    let (ok, out, err) = mariadb(baton.port, "app", "app", &[verify[0], verify[1], &ssl_ca], "SHOW SESSION STATUS LIKE 'Ssl_cipher'");
    assert!(ok, "{err}");
    let cipher = out.strip_prefix("Ssl_cipher\t").unwrap_or_else(|| panic!("{out}"));
    assert!(!cipher.is_empty(), "the backend leg is not encrypted: {out:?}");

    // required = true: a login without TLS is refused as a REQUIRE SSL account is.
    let (ok, _, err) = mariadb(baton.port, "app", "app", &["--skip-ssl"], "SELECT 1");
    assert!(!ok);
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");

    // A CA that did not sign baton's certificate: the client refuses baton.
    let other = TestCa::new("another CA").unwrap();
    let other_path = c.dir.path().join("other-ca.pem");
    other.write(&other_path).unwrap();
    let (ok, _, err) =
        mariadb(baton.port, "app", "app", &["--ssl", "--ssl-verify-server-cert", &format!("--ssl-ca={}", other_path.display())], "SELECT 1");
    assert!(!ok, "a certificate from an untrusted CA was accepted");
    assert!(err.contains("2026"), "{err}");
    // ... and baton serves on.
    let (ok, out, err) = mariadb(baton.port, "app", "app", &[verify[0], verify[1], &ssl_ca], "SELECT 7");
    assert!(ok && out == "7", "{out} {err}");
    drop(c.ca);
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_async_rustls_client_connects_with_tls_and_the_cipher_is_reported() {
    let info = cluster();
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let text = config(&info, &dir.path().join("topology.json"), &server_tls(&c.baton, false), "", "tls = \"required\"\n");
    let baton = start(&text, dir).await;
    let ssl = mysql_async::SslOpts::default().with_root_certs(vec![c.ca_path.clone().into()]);
    let opts: mysql_async::Opts = mysql_async::OptsBuilder::from_opts(baton.opts(Some("baton_test"))).ssl_opts(Some(ssl)).into();
    let mut conn = mysql_async::Conn::new(opts).await.expect("TLS login through baton");
    let row: Option<(String, String)> = conn.query_first("SHOW SESSION STATUS LIKE 'Ssl_version'").await.unwrap();
    let (_, version) = row.unwrap();
    assert!(version.starts_with("TLSv1."), "backend leg: {version:?}");
    let n: Option<i64> = conn.query_first("SELECT 40 + 2").await.unwrap();
    assert_eq!(n, Some(42));
    conn.disconnect().await.unwrap();
    // Without TLS (not required here) the same user logs in too.
    let mut plain = mysql_async::Conn::new(baton.opts(None)).await.unwrap();
    let n: Option<i64> = plain.query_first("SELECT 1").await.unwrap();
    assert_eq!(n, Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn require_ssl_and_ed25519_accounts_work_through_baton() {
    let info = cluster();
    root_sql(
        &info,
        "CREATE USER IF NOT EXISTS 'tlsonly'@'%' IDENTIFIED BY 'tlspw' REQUIRE SSL;
         GRANT SELECT ON *.* TO 'tlsonly'@'%';
         CREATE USER IF NOT EXISTS 'eduser'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('edpw');
         GRANT SELECT ON *.* TO 'eduser'@'%';",
    );
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("eduser.password");
    std::fs::write(&pw_file, "edpw\n").unwrap();
    let ed_key = baton_control::credentials::Ed25519Key::from_password(b"edpw").to_mysql_string();
    // What the server itself stores for the account.
    let stored = root_sql(&info, "SELECT JSON_VALUE(Priv, '$.authentication_string') FROM mysql.global_priv WHERE User='eduser'");
    assert_eq!(stored.trim(), ed_key);
    let users = format!(
        "[[users]]\nname = \"tlsonly\"\npassword_hash = {:?}\n[[users]]\nname = \"eduser\"\nauth = \"ed25519\"\npassword_hash = {ed_key:?}\nbackend_password_file = {:?}\n",
        baton_control::credentials::PasswordHash::from_plain("tlspw").to_mysql_string(),
        pw_file.display().to_string()
    );
    let text = config(&info, &dir.path().join("topology.json"), "", &users, &verify_ca(&info));
    let baton = start(&text, dir).await;

    // REQUIRE SSL on the server: the backend leg is TLS, so it logs in.
    let (ok, out, err) = mariadb(baton.port, "tlsonly", "tlspw", &[], "SELECT CURRENT_USER()");
    assert!(ok, "{err}");
    assert_eq!(out, "tlsonly@%");

    // ed25519: the mariadb CLI signs baton's nonce; baton logs in with the password file.
    let (ok, out, err) = mariadb(baton.port, "eduser", "edpw", &[], "SELECT CURRENT_USER()");
    assert!(ok, "{err}");
    assert_eq!(out, "eduser@%");
    let (ok, _, err) = mariadb(baton.port, "eduser", "wrong", &[], "SELECT 1");
    assert!(!ok);
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");
    // Direct, the same account answers the same.
    let (ok, out, _) = mariadb(info.port(0), "eduser", "edpw", &[], "SELECT CURRENT_USER()");
    assert!(ok && out == "eduser@%");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_without_tls_leg_cannot_log_in_a_require_ssl_account() {
    let info = cluster();
    root_sql(&info, "CREATE USER IF NOT EXISTS 'tlsonly'@'%' IDENTIFIED BY 'tlspw' REQUIRE SSL; GRANT SELECT ON *.* TO 'tlsonly'@'%';");
    let dir = tempfile::tempdir().unwrap();
    let users = format!(
        "[[users]]\nname = \"tlsonly\"\npassword_hash = {:?}\n",
        baton_control::credentials::PasswordHash::from_plain("tlspw").to_mysql_string()
    );
    let text = config(&info, &dir.path().join("topology.json"), "", &users, "");
    let baton = start(&text, dir).await;
    let (ok, _, err) = mariadb(baton.port, "tlsonly", "tlspw", &[], "SELECT 1");
    assert!(!ok);
    // The server's own refusal, passed on.
    assert!(err.contains("ERROR 1045 (28000)") && err.contains("tlsonly"), "{err}");
}

/// mysql-connector-python forced to caching_sha2_password; prints CURRENT_USER() or the error.
fn connector(port: u16, user: &str, password: &str, ca: Option<&Path>) -> String {
    let tls = match ca {
        Some(ca) => format!("ssl_ca={:?}, ssl_verify_cert=True", ca.display().to_string()),
        None => "ssl_disabled=True".to_string(),
    };
    let script = format!(
        "import mysql.connector\n\
         try:\n    c = mysql.connector.connect(host='127.0.0.1', port={port}, user={user:?}, password={password:?}, auth_plugin='caching_sha2_password', use_pure=True, {tls})\n    cur = c.cursor(); cur.execute('SELECT CURRENT_USER()'); print(cur.fetchone()[0]); c.close()\n\
         except mysql.connector.Error as e:\n    print('ERROR', e.errno)\n"
    );
    let out = Command::new("python3").args(["-c", &script]).output().expect("python3 with mysql-connector-python (scripts/setup.sh installs it)");
    format!("{}{}", String::from_utf8_lossy(&out.stdout).trim(), String::from_utf8_lossy(&out.stderr).trim())
}

#[tokio::test(flavor = "multi_thread")]
async fn caching_sha2_clients_log_in_by_the_full_then_the_fast_path() {
    let info = cluster();
    root_sql(
        &info,
        "CREATE USER IF NOT EXISTS 'sha2user'@'%' IDENTIFIED BY 'shapw'; GRANT SELECT ON *.* TO 'sha2user'@'%';
         CREATE USER IF NOT EXISTS 'reqtls'@'%' IDENTIFIED BY 'reqpw'; GRANT SELECT ON *.* TO 'reqtls'@'%';",
    );
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let hash = baton_control::credentials::Sha2Hash::generate(b"shapw", *b"abcdefghij0123456789", 5).to_mysql_string();
    let reqtls = format!(
        "[[users]]\nname = \"reqtls\"\nrequire_tls = true\npassword_hash = {:?}\n",
        baton_control::credentials::PasswordHash::from_plain("reqpw").to_mysql_string()
    );
    let users = format!("[[users]]\nname = \"sha2user\"\nauth = \"caching_sha2_password\"\npassword_hash = {hash:?}\n{reqtls}");
    let topo = dir.path().join("topology.json");
    let text = config(&info, &topo, &server_tls(&c.baton, false), &users, "");
    let baton = start(&text, dir).await;
    let port = baton.port;
    let ca = c.ca_path.clone();
    let out = tokio::task::spawn_blocking(move || {
        [
            // Nothing cached: the full path needs TLS.
            connector(port, "sha2user", "shapw", None),
            connector(port, "sha2user", "shapw", Some(&ca)),
            // Cached now: the fast path, even without TLS.
            connector(port, "sha2user", "shapw", None),
            connector(port, "sha2user", "nope", None),
            // A native user, a client insisting on caching_sha2_password.
            connector(port, "app", "app", Some(&ca)),
            connector(port, "app", "app", None),
            connector(port, "app", "bad", Some(&ca)),
            // require_tls: the cached fast path over plaintext still ends in 1045 (in
            // step: the ERR follows baton's fast-path packet).
            connector(port, "reqtls", "reqpw", Some(&ca)),
            connector(port, "reqtls", "reqpw", None),
        ]
    })
    .await
    .unwrap();
    assert_eq!(out, ["ERROR 1045", "sha2user@%", "sha2user@%", "ERROR 1045", "app@%", "app@%", "ERROR 1045", "reqtls@%", "ERROR 1045"]);

    // A reload that changes the user's hash retires its fast-path entry.
    let new_hash = baton_control::credentials::Sha2Hash::generate(b"newpw", *b"abcdefghij0123456789", 5).to_mysql_string();
    let new_users = users.replace(&hash, &new_hash);
    let text = config(&info, &topo, &server_tls(&c.baton, false), &new_users, "");
    baton.running().reloader.apply(baton_control::Config::parse(&text).unwrap()).unwrap();
    let out = tokio::task::spawn_blocking(move || connector(port, "sha2user", "shapw", None)).await.unwrap();
    assert_eq!(out, "ERROR 1045");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_tls_input_leaves_baton_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let info = cluster();
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let text = config(&info, &dir.path().join("topology.json"), &server_tls(&c.baton, false), "", "");
    let baton = start(&text, dir).await;
    // An SSL request, then garbage instead of a ClientHello: the connection ends.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", baton.port)).await.unwrap();
    let mut greeting = vec![0u8; 4];
    s.read_exact(&mut greeting).await.unwrap();
    let len = u32::from_le_bytes([greeting[0], greeting[1], greeting[2], 0]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    let mut req = vec![32, 0, 0, 1];
    req.extend_from_slice(&(0x0000_0800u32 | 0x0000_0200 | 0x0000_8000 | 0x0008_0000).to_le_bytes());
    req.extend_from_slice(&[0, 0, 0, 1, 45]);
    req.extend_from_slice(&[0u8; 23]);
    s.write_all(&req).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n garbage garbage garbage").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest)).await.expect("closed promptly");
    // Nothing but (at most) a TLS alert record: no MySQL packet in clear.
    assert!(rest.is_empty() || rest[0] == 0x15, "{rest:?}");
    // An SSL request of the wrong length: refused with a protocol error, in clear.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", baton.port)).await.unwrap();
    s.read_exact(&mut greeting).await.unwrap();
    let len = u32::from_le_bytes([greeting[0], greeting[1], greeting[2], 0]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    let mut bad = req.clone();
    bad[0] = 33;
    bad.push(0);
    s.write_all(&bad).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut reply)).await.expect("closed promptly");
    assert!(reply.len() > 7 && reply[4] == 0xff, "{reply:?}");
    assert_eq!(u16::from_le_bytes([reply[5], reply[6]]), 1043);
    // Baton serves on, with and without TLS.
    let mut conn = mysql_async::Conn::new(baton.opts(None)).await.unwrap();
    let n: Option<i64> = conn.query_first("SELECT 5").await.unwrap();
    assert_eq!(n, Some(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_reload_and_a_bad_pair_keeps_the_old_one() {
    let info = cluster();
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let topo = dir.path().join("topology.json");
    let text = config(&info, &topo, &server_tls(&c.baton, false), "", "");
    let baton = start(&text, dir).await;
    let tls_opts = |ca: &Path| {
        let ssl = mysql_async::SslOpts::default().with_root_certs(vec![ca.to_path_buf().into()]);
        let o: mysql_async::Opts = mysql_async::OptsBuilder::from_opts(opts(baton.port, None)).ssl_opts(Some(ssl)).into();
        o
    };
    let mut first = mysql_async::Conn::new(tls_opts(&c.ca_path)).await.expect("first certificate");

    // A key that does not fit the certificate: refused, the old pair serves on.
    let other = c.ca.issue(c.dir.path(), "other", &["127.0.0.1"], None).unwrap();
    let mismatched = CertFiles { cert: c.baton.cert.clone(), key: other.key.clone() };
    let bad = config(&info, &topo, &server_tls(&mismatched, false), "", "");
    let err = baton.running().reloader.apply(baton_control::Config::parse(&bad).unwrap()).unwrap_err();
    assert!(err.contains("server.tls") && !err.contains("baton-key.pem") && err.contains("other-key.pem"), "{err}");
    mysql_async::Conn::new(tls_opts(&c.ca_path)).await.expect("old certificate still served").disconnect().await.unwrap();

    // An expired certificate: refused too.
    let expired = c.ca.issue(c.dir.path(), "expired", &["127.0.0.1"], Some((2000, 2001))).unwrap();
    let bad = config(&info, &topo, &server_tls(&expired, false), "", "");
    let err = baton.running().reloader.apply(baton_control::Config::parse(&bad).unwrap()).unwrap_err();
    assert!(err.contains("expired"), "{err}");

    // A certificate from a new CA: new connections get it; the open session lives on.
    let new_ca = TestCa::new("rotated CA").unwrap();
    let new_ca_path = c.dir.path().join("new-ca.pem");
    new_ca.write(&new_ca_path).unwrap();
    let rotated = new_ca.issue(c.dir.path(), "rotated", &["127.0.0.1"], None).unwrap();
    let good = config(&info, &topo, &server_tls(&rotated, false), "", "");
    baton.running().reloader.apply(baton_control::Config::parse(&good).unwrap()).expect("reload");
    mysql_async::Conn::new(tls_opts(&new_ca_path)).await.expect("the new certificate").disconnect().await.unwrap();
    assert!(mysql_async::Conn::new(tls_opts(&c.ca_path)).await.is_err(), "the old certificate is still served");
    let n: Option<i64> = first.query_first("SELECT 3").await.unwrap();
    assert_eq!(n, Some(3));
}

#[test]
fn check_config_refuses_expired_certificates_and_unreadable_secrets() {
    let c = certs();
    let info = cluster();
    let expired = c.ca.issue(c.dir.path(), "expired", &["127.0.0.1"], Some((2000, 2001))).unwrap();
    let path = c.dir.path().join("baton.toml");
    let run = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_baton")).arg("--check-config").arg(&path).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let topo = c.dir.path().join("t.json");
    let (code, err) = run(&config(&info, &topo, &server_tls(&expired, false), "", ""));
    assert_eq!(code, Some(2));
    assert!(err.contains("expired"), "{err}");
    let missing = CertFiles { cert: c.baton.cert.clone(), key: c.dir.path().join("no-such-key.pem") };
    let (code, err) = run(&config(&info, &topo, &server_tls(&missing, false), "", ""));
    assert_eq!(code, Some(2));
    assert!(err.contains("no-such-key.pem"), "{err}");
    let users = "[[users]]\nname = \"ed\"\nauth = \"ed25519\"\npassword = \"x\"\nbackend_password_file = \"/nonexistent/pw\"\n";
    let (code, err) = run(&config(&info, &topo, "", users, ""));
    assert_eq!(code, Some(2));
    assert!(err.contains("/nonexistent/pw"), "{err}");
    let (code, err) = run(&config(&info, &topo, &server_tls(&c.baton, true), "", &verify_ca(&info)));
    assert_eq!(code, Some(0), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_log_even_at_trace() {
    let info = cluster();
    root_sql(&info, "CREATE USER IF NOT EXISTS 'eduser'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('edpw'); GRANT SELECT ON *.* TO 'eduser'@'%';");
    let c = certs();
    let pw_file = c.dir.path().join("eduser.password");
    std::fs::write(&pw_file, "edpw\n").unwrap();
    let ed_key = baton_control::credentials::Ed25519Key::from_password(b"edpw").to_mysql_string();
    let users = format!(
        "[[users]]\nname = \"eduser\"\nauth = \"ed25519\"\npassword_hash = {ed_key:?}\nbackend_password_file = {:?}\n",
        pw_file.display().to_string()
    );
    let port = baton_testkit::free_port();
    let text = config(&info, &c.dir.path().join("t.json"), &server_tls(&c.baton, false), &users, &verify_ca(&info))
        .replace("listen = \"127.0.0.1:0\"\nadmin", &format!("listen = \"127.0.0.1:{port}\"\nadmin"));
    let path = c.dir.path().join("baton.toml");
    std::fs::write(&path, text).unwrap();
    let log = c.dir.path().join("baton.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("--config")
        .arg(&path)
        .env("BATON_LOG", "trace")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for("baton listening", std::time::Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()).await;
    let ca = format!("--ssl-ca={}", c.ca_path.display());
    let results = tokio::task::spawn_blocking(move || {
        [
            mariadb(port, "eduser", "edpw", &["--ssl", &ca], "SELECT CURRENT_USER()"),
            mariadb(port, "app", "app", &["--ssl", &ca], "SELECT 1"),
            mariadb(port, "app", "app", &["--skip-ssl"], "SELECT 1"),
        ]
    })
    .await
    .unwrap();
    assert!(results.iter().all(|r| r.0), "{results:?}");
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("TRACE") || text.contains("DEBUG"), "not a trace log: {}", &text[..text.len().min(500)]);
    for secret in ["edpw", "5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3", &ed_key] {
        assert!(!text.contains(secret), "{secret:?} is in the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_tls_client_that_hangs_up_is_evicted_and_its_write_never_runs() {
    let info = cluster();
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let text = config(&info, &dir.path().join("topology.json"), &server_tls(&c.baton, false), "", "");
    let baton = start(&text, dir).await;
    let mut conn = mysql_async::Conn::new(baton.opts(Some("baton_test"))).await.unwrap();
    conn.query_drop("CREATE TABLE IF NOT EXISTS gone_tls (tag VARCHAR(40) PRIMARY KEY); DELETE FROM gone_tls").await.unwrap();
    let gate = baton.running().proxy.clusters["main"].gate.clone();
    let (ready, go) = (c.dir.path().join("ready"), c.dir.path().join("go"));
    // PyMySQL over TLS: the INSERT is sent (not awaited), then the client ends TLS
    // politely (close_notify, as Go, Java and rustls clients do) and closes.
    let script = format!(
        "import pymysql, time\n\
         from pymysql.constants import COMMAND\n\
         import os\n\
         c = pymysql.connect(host='127.0.0.1', port={port}, user='app', password='app', database='baton_test', ssl_ca={ca:?}, ssl_verify_cert=True)\n\
         open({ready:?}, 'w').close()\n\
         while not os.path.exists({go:?}): time.sleep(0.01)\n\
         c._execute_command(COMMAND.COM_QUERY, \"INSERT INTO gone_tls VALUES ('tls-client-gone')\")\n\
         time.sleep(1.0)\n\
         import ssl\n\
         try: c._sock.unwrap()\n\
         except ssl.SSLError: pass  # baton closed without answering the close_notify\n\
         c._sock.close()\n",
        port = baton.port,
        ca = c.ca_path.display().to_string(),
        ready = ready.display().to_string(),
        go = go.display().to_string(),
    );
    let py = tokio::task::spawn_blocking(move || Command::new("python3").args(["-c", &script]).output().unwrap());
    wait_for("the client logged in", std::time::Duration::from_secs(10), || ready.exists()).await;
    let (primary, term) = baton.running().proxy.primary_of("main").unwrap();
    let episode = gate.begin(term, &primary, "test", false).expect("buffering");
    let gone_before = gate.counters.evicted_client_gone.load(std::sync::atomic::Ordering::Relaxed);
    let queued = gate.status().queued;
    std::fs::write(&go, "").unwrap();
    wait_for("the insert held", std::time::Duration::from_secs(10), || gate.status().queued > queued).await;
    let out = py.await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("client_gone counted", std::time::Duration::from_secs(5), || {
        gate.counters.evicted_client_gone.load(std::sync::atomic::Ordering::Relaxed) > gone_before
    })
    .await;
    gate.release(episode, baton_control::gate::Release::ConditionsHold);
    let n: Option<i64> = conn.query_first("SELECT COUNT(*) FROM gone_tls").await.unwrap();
    assert_eq!(n, Some(0), "a held statement whose TLS client left ran");
}

/// A server that offers no TLS while the cluster's `tls` asks for it: refused
/// with a clear error naming the cause; baton serves other clusters on.
#[tokio::test(flavor = "multi_thread")]
async fn a_backend_offering_no_tls_is_refused_when_tls_is_required() {
    use mysql_common::constants::{CapabilityFlags, StatusFlags};
    use mysql_common::packets::HandshakePacket;
    use mysql_common::proto::MySerialize;
    use tokio::io::AsyncWriteExt;
    // A fake server: a greeting without CLIENT_SSL, then nothing.
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = fake.accept().await {
            tokio::spawn(async move {
                let caps = CapabilityFlags::CLIENT_PROTOCOL_41
                    | CapabilityFlags::CLIENT_SECURE_CONNECTION
                    | CapabilityFlags::CLIENT_PLUGIN_AUTH
                    | CapabilityFlags::CLIENT_SESSION_TRACK;
                let hs = HandshakePacket::new(
                    10,
                    &b"10.11.0-fake"[..],
                    7,
                    *b"abcdefgh",
                    Some(b"ijklmnopqrst\0".to_vec()),
                    caps,
                    45,
                    StatusFlags::SERVER_STATUS_AUTOCOMMIT,
                    Some(&b"mysql_native_password"[..]),
                );
                let mut body = Vec::new();
                hs.serialize(&mut body);
                let mut pkt = (body.len() as u32).to_le_bytes()[..3].to_vec();
                pkt.push(0);
                pkt.extend_from_slice(&body);
                let _ = s.write_all(&pkt).await;
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            });
        }
    });
    let info = cluster();
    let dir = tempfile::tempdir().unwrap();
    let servers = info.servers.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[topology]\npath = {:?}\n\
         [[users]]\nname = \"app\"\npassword = \"app\"\ncluster = \"plain\"\n\
         [[users]]\nname = \"nossl\"\npassword = \"x\"\ncluster = \"fake\"\n\
         [[clusters]]\nname = \"plain\"\nservers = [{servers}]\nprimary = {:?}\n\
         [[clusters]]\nname = \"fake\"\nservers = [{fake_addr:?}]\nprimary = {fake_addr:?}\ntls = \"required\"\n",
        dir.path().join("topology.json").display().to_string(),
        info.primary
    );
    let baton = start(&text, dir).await;
    let (ok, _, err) = mariadb(baton.port, "nossl", "x", &[], "SELECT 1");
    assert!(!ok);
    // The real CLI shows baton's message (a 2xxx code would read "2027 Received malformed packet").
    assert!(err.contains("ERROR 9107 (HY000)") && err.contains("offers no TLS"), "{err}");
    // Another cluster's users are served.
    let (ok, out, err) = mariadb(baton.port, "app", "app", &[], "SELECT 11");
    assert!(ok && out == "11", "{out} {err}");
}
