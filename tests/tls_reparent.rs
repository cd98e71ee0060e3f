//! A planned reparent under TLS writers (issue 12): clients speak TLS to baton,
//! baton speaks TLS (verify_ca) to every server; writes outside transactions see
//! no error, no acknowledged row is lost or doubled, and sessions move with TLS
//! on the new backend leg.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baton_testkit::tls::TestCa;
use common::reparent::*;
use mysql_async::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn planned_reparents_under_tls_writers_lose_nothing_and_keep_tls() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("baton reparent test CA").unwrap();
    let ca_path = certs.path().join("ca.pem");
    ca.write(&ca_path).unwrap();
    let cert = ca.issue(certs.path(), "baton", &["127.0.0.1"], None).unwrap();
    let server_ca = info.tls_ca.clone().expect("the harness's CA");
    let extra = format!(
        "[server.tls]\ncert = {:?}\nkey = {:?}\nrequired = true\n{SESSION_FAST}",
        cert.cert.display().to_string(),
        cert.key.display().to_string()
    );
    let (running, _dir) = start_tls_baton(&info, &primary, &extra, &server_ca).await;
    let port = running.mysql_addr.port();
    let tls_opts = move |db: Option<&str>| -> mysql_async::Opts {
        let ssl = mysql_async::SslOpts::default().with_root_certs(vec![ca_path.clone().into()]);
        mysql_async::OptsBuilder::from_opts(common::opts(port, db)).ssl_opts(Some(ssl)).into()
    };
    let mut setup = mysql_async::Conn::new(tls_opts(Some("baton_test"))).await.unwrap();
    setup
        .query_drop(
            "DROP TABLE IF EXISTS tls_rows; CREATE TABLE tls_rows (id BIGINT AUTO_INCREMENT PRIMARY KEY, writer INT NOT NULL, seq INT NOT NULL)",
        )
        .await
        .unwrap();
    // A session that stays open across the moves.
    let mut watcher = mysql_async::Conn::new(tls_opts(Some("baton_test"))).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (1..=4i64)
        .map(|w| {
            let (stop, acked, opts) = (stop.clone(), acked.clone(), tls_opts(Some("baton_test")));
            tokio::spawn(async move {
                let mut c = mysql_async::Conn::new(opts).await.unwrap();
                let (mut ok, mut errors) = (Vec::new(), Vec::new());
                let mut seq = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    match c.query_drop(format!("INSERT INTO tls_rows (writer, seq) VALUES ({w}, {seq})")).await {
                        Ok(()) => {
                            ok.push((w, seq));
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (ok, errors)
            })
        })
        .collect();

    let others: Vec<String> = info.servers.iter().filter(|s| **s != primary).cloned().collect();
    for to in [&others[0], &primary] {
        let before = acked.load(Ordering::Relaxed);
        wait_count(&acked, before + 100, Duration::from_secs(30)).await;
        let (status, report) = reparent(&running, to).await;
        assert_eq!(status, 200, "reparent to {to}: {report:#}");
        assert_eq!(report["outcome"], "ok", "{report:#}");
        let after = acked.load(Ordering::Relaxed);
        wait_count(&acked, after + 100, Duration::from_secs(30)).await;
        // The open session moved to the new primary, encrypted on the new leg.
        let (port, version): (u16, String) = watcher
            .query_first("SELECT @@port, VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_version'")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(format!("127.0.0.1:{port}"), *to);
        assert!(version.starts_with("TLSv1."), "backend leg after the move: {version:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut errors) = (Vec::new(), Vec::new());
    for w in writers {
        let (ok, e) = w.await.unwrap();
        all.extend(ok);
        errors.extend(e);
    }
    assert!(errors.is_empty(), "client errors during reparents: {errors:#?}");
    let mut p = admin(&primary).await;
    let rows: Vec<(i64, i64, i64)> = p.query("SELECT writer, seq, COUNT(*) FROM baton_test.tls_rows GROUP BY writer, seq").await.unwrap();
    let counts: HashMap<(i64, i64), i64> = rows.into_iter().map(|(w, s, n)| ((w, s), n)).collect();
    assert!(counts.values().all(|n| *n == 1), "rows applied twice");
    assert!(all.iter().all(|k| counts.contains_key(k)), "acknowledged rows lost");
    assert_eq!(counts.len(), all.len(), "rows present that were never acknowledged");
    running.shutdown(Some(Duration::from_millis(200))).await;
}

/// [`start_baton`] with `tls = "verify_ca"` towards the cluster.
async fn start_tls_baton(info: &baton_testkit::ClusterInfo, primary: &str, extra: &str, ca: &std::path::Path) -> (baton::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let tables = cluster_tables(info, primary, "none").replacen(
        "[[clusters]]\n",
        &format!("[[clusters]]\ntls = \"verify_ca\"\ntls_ca = {:?}\n", ca.display().to_string()),
        1,
    );
    assert!(tables.contains("verify_ca"), "{tables}");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\n[topology]\npath = {:?}\n{extra}\n{tables}",
        dir.path().join("topology.json").display().to_string()
    );
    let config = baton_control::Config::parse(&text).expect("config");
    (baton::start(config).await.expect("baton starts"), dir)
}
