//! Faults the client-driver matrix (issue 10, tests/clients/) exposed, each kept
//! as its failing input against the real cluster:
//! - a session that narrowed its own session tracking moves across a reparent
//!   (was: ERROR 9106, as if it held state baton cannot carry);
//! - a session idle on a primary that is SIGKILLed is held and answered by the
//!   new primary (was: its connection closed, 2013 in every driver);
//! - a login right after the crash is held too (was: ERROR 9107 at once).

mod common;

use std::time::Duration;

use common::reparent::*;
use common::*;
use mysql_async::prelude::*;

const FAST: &str = "[buffer]\nwindow_ms = 30000\nmax_failover_duration_ms = 60000\nmin_time_between_failovers_ms = 0\n\
                    [reparent]\ntransaction_grace_ms = 1000\ncheck_interval_ms = 20\ncatchup_timeout_ms = 10000\n\
                    [health]\ninterval_ms = 300\ntimeout_ms = 700\nfailure_threshold = 3\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_that_narrowed_its_tracking_moves_across_a_reparent() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start_baton(&info, &primary, FAST, "none").await;
    let mut c = mysql_async::Conn::new(opts(running.mysql_addr.port(), Some("baton_test"))).await.unwrap();
    // Connector/J 3.x does this at connect; PyMySQL users with '' or DEFAULT too.
    c.query_drop("SET session_track_system_variables='autocommit'").await.unwrap();
    let other = info.servers.iter().find(|s| **s != primary).unwrap().clone();
    let (status, report) = reparent(&running, &other).await;
    assert_eq!(status, 200, "{report:#}");
    let port: Option<u16> = c.query_first("SELECT @@port").await.expect("the session moved");
    assert_eq!(format!("127.0.0.1:{}", port.unwrap()), other);
    c.query_drop("SET autocommit=1").await.expect("a statement after the move");
    c.ping().await.expect("COM_PING on the moved session");
    drop(c);
    let (status, report) = reparent(&running, &primary).await;
    assert_eq!(status, 200, "{report:#}");
    running.shutdown(Some(Duration::from_millis(200))).await;
}

/// baton in front of the reparent cluster: semi_sync, `auto_failover = true`.
async fn start_auto_failover(info: &baton_testkit::ClusterInfo, primary: &str) -> (baton::Running, tempfile::TempDir) {
    start_baton_with(info, primary, FAST, "semi_sync", "auto_failover = true\n").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_session_and_a_new_login_right_after_a_crash_are_held_not_refused() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start_auto_failover(&info, &primary).await;
    let port = running.mysql_addr.port();
    let mut idle = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    idle.query_drop("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&info, &primary, "KILL");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let login = tokio::spawn(async move {
        let mut c = mysql_async::Conn::new(opts(port, Some("baton_test"))).await?;
        let p: Option<u16> = c.query_first("SELECT @@port").await?;
        Ok::<_, mysql_async::Error>(p)
    });
    let moved: Result<Option<u16>, _> = idle.query_first("SELECT @@port").await;
    let moved = moved.expect("the idle session's next statement is held, then answered").unwrap();
    let logged_in = login.await.unwrap().expect("a login right after the crash is held, then served").unwrap();
    let new_primary = running.store.current().cluster("main").unwrap().primary.clone();
    assert_ne!(new_primary, primary);
    assert_eq!(format!("127.0.0.1:{moved}"), new_primary);
    assert_eq!(format!("127.0.0.1:{logged_in}"), new_primary);
    running.shutdown(Some(Duration::from_millis(100))).await;
    restart(&info, &primary).await;
    heal(&info).await;
}

/// A pool validates a connection with COM_PING right before using it
/// (mysql-connector-python's pool pings twice: at checkout and at `cursor()`).
/// A ping sent on a busy session's backend just as the primary dies has nothing
/// to lose: it is answered (held, or at once while the cluster buffers), never
/// 9105. Found by the driver matrix: "MySQL Connection not available" from the
/// second ping.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ping_right_after_a_crash_is_answered() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start_auto_failover(&info, &primary).await;
    let port = running.mysql_addr.port();
    let mut busy = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    busy.query_drop("SELECT 1").await.unwrap();
    signal(&info, &primary, "KILL");
    // Within baton's 100 ms in which a busy backend is not checked before use.
    busy.ping().await.expect("a ping on a session whose primary just died is answered");
    let p: Option<u16> = busy.query_first("SELECT @@port").await.unwrap();
    let new_primary = running.store.current().cluster("main").unwrap().primary.clone();
    assert_eq!(format!("127.0.0.1:{}", p.unwrap()), new_primary);
    running.shutdown(Some(Duration::from_millis(100))).await;
    restart(&info, &primary).await;
    heal(&info).await;
}

/// A pool's validation query (`SELECT 1`, any SELECT that calls nothing) sent
/// to a primary that hangs (SIGSTOP) is cut by the failover's fence before any
/// answer: it changed nothing, so it is sent again to the new primary, not
/// answered 9105. (The client matrix's quiet crash hit the same with a SIGKILL
/// whose sockets closed after the statement was sent.) A write in the same
/// position still gets 9105 (`tests/failover.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_select_cut_by_a_failover_is_sent_again() {
    let _l = LOCK.lock().await;
    let info = info();
    let primary = heal(&info).await;
    let (running, _dir) = start_auto_failover(&info, &primary).await;
    let port = running.mysql_addr.port();
    let mut c = mysql_async::Conn::new(opts(port, Some("baton_test"))).await.unwrap();
    c.query_drop("SELECT 1").await.unwrap();
    signal(&info, &primary, "STOP");
    let p: Result<Option<u16>, _> = c.query_first("SELECT @@port").await;
    signal(&info, &primary, "KILL");
    signal(&info, &primary, "CONT");
    let p = p.expect("the SELECT is answered by the new primary").unwrap();
    let new_primary = running.store.current().cluster("main").unwrap().primary.clone();
    assert_ne!(new_primary, primary);
    assert_eq!(format!("127.0.0.1:{p}"), new_primary);
    running.shutdown(Some(Duration::from_millis(100))).await;
    restart(&info, &primary).await;
    heal(&info).await;
}
