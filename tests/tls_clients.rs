//! More drivers over TLS to baton (issue 12): PyMySQL and MariaDB Connector/J
//! verify baton's certificate against a test CA and log in; a CA that did not
//! sign it is refused by the driver.

mod common;

use std::path::Path;
use std::process::Command;

use baton_testkit::tls::TestCa;
use common::*;

async fn tls_baton(dir: &Path, required: bool) -> (TestBaton, std::path::PathBuf) {
    let ca = TestCa::new("baton driver test CA").unwrap();
    let ca_path = dir.join("ca.pem");
    ca.write(&ca_path).unwrap();
    let cert = ca.issue(dir, "baton", &["127.0.0.1"], None).unwrap();
    let extra =
        format!("[server.tls]\ncert = {:?}\nkey = {:?}\nrequired = {required}\n", cert.cert.display().to_string(), cert.key.display().to_string());
    (TestBaton::start(&extra).await, ca_path)
}

fn pymysql(port: u16, ca: &Path) -> String {
    let script = format!(
        "import pymysql\n\
         try:\n    c = pymysql.connect(host='127.0.0.1', port={port}, user='app', password='app', ssl_ca={ca:?}, ssl_verify_cert=True, ssl_verify_identity=True)\n    cur = c.cursor(); cur.execute('SELECT CURRENT_USER()'); print(cur.fetchone()[0]); c.close()\n\
         except pymysql.err.OperationalError as e:\n    print('ERROR', e.args[0])\n",
        ca = ca.display().to_string()
    );
    let out = Command::new("python3").args(["-c", &script]).output().expect("python3 with pymysql");
    format!("{}{}", String::from_utf8_lossy(&out.stdout).trim(), String::from_utf8_lossy(&out.stderr).trim())
}

#[tokio::test(flavor = "multi_thread")]
async fn pymysql_verifies_baton_and_logs_in_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (baton, ca) = tls_baton(dir.path(), true).await;
    let port = baton.port;
    let other = TestCa::new("unrelated CA").unwrap();
    let other_path = dir.path().join("other.pem");
    other.write(&other_path).unwrap();
    let (good, bad) = tokio::task::spawn_blocking(move || (pymysql(port, &ca), pymysql(port, &other_path))).await.unwrap();
    assert_eq!(good, "app@%");
    assert!(bad.starts_with("ERROR 2003"), "an untrusted certificate was accepted: {bad}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connector_j_verifies_baton_and_logs_in_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (baton, ca) = tls_baton(dir.path(), true).await;
    let jar = "/usr/share/java/mariadb-java-client.jar";
    assert!(Path::new(jar).exists(), "{jar} missing: scripts/setup.sh installs libmariadb-java");
    let classes = dir.path().join("classes");
    let src = repo_root().join("tests/clients/java/TlsLogin.java");
    let ok = Command::new("javac").args(["-cp", jar, "-d"]).arg(&classes).arg(&src).status().expect("javac (scripts/setup.sh installs a JDK)");
    assert!(ok.success());
    let port = baton.port;
    let run = move |ca: &Path| {
        let out = Command::new("java")
            .arg("-cp")
            .arg(format!("{jar}:{}", classes.display()))
            .args(["TlsLogin", &port.to_string()])
            .arg(ca)
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout).trim(), String::from_utf8_lossy(&out.stderr).trim())
    };
    let other = TestCa::new("unrelated CA").unwrap();
    let other_path = dir.path().join("other.pem");
    other.write(&other_path).unwrap();
    let (good, bad) = tokio::task::spawn_blocking(move || (run(&ca), run(&other_path))).await.unwrap();
    // The backend leg is plaintext here (the cluster's tls is disabled).
    assert_eq!(good, "app@% []");
    assert!(bad.starts_with("ERROR"), "an untrusted certificate was accepted: {bad}");
}
