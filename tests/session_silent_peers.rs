//! Silent TCP peers do not hold the primary's connections (issue 9, item 1's
//! cost). In a test binary of its own: it reads the primary's global counters
//! (Threads_connected, Aborted_connects), which tests running beside it in the
//! same process would move.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Item 1's cost, bounded: baton greets the primary before each client's greeting
/// (its thread id is the client's id), but at most 32 such connections wait for
/// logins at once, each for at most a second, and one left unused ends with a
/// failed login rather than an interrupted handshake (which would count toward
/// the server's max_connect_errors). 40 silent TCP peers: the primary's
/// connections come back to where they were while the peers stay connected, and
/// its Aborted_connects grows by at most one per peer, never a handshake error.
#[tokio::test]
async fn silent_peers_do_not_hold_primary_connections() {
    let baton = TestBaton::start("").await;
    let socket = cluster().sockets[0].clone();
    let status = |name: &str| -> u64 {
        let q = format!("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = '{name}'");
        baton_testkit::sql(&socket, &q).unwrap().trim().parse().unwrap()
    };
    let threads0 = status("THREADS_CONNECTED");
    let handshake_errors0 = status("CONNECTION_ERRORS_INTERNAL") + status("ABORTED_CONNECTS_PREAUTH");
    let mut socks = Vec::new();
    for _ in 0..40 {
        socks.push(TcpStream::connect(("127.0.0.1", baton.port)).await.unwrap());
    }
    // Each peer got its greeting (so baton has greeted for it, or fallen back).
    for s in &mut socks {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).await.unwrap();
    }
    let peak = status("THREADS_CONNECTED");
    assert!(peak <= threads0 + 32 + 3, "held {} primary connections for 40 peers", peak - threads0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status("THREADS_CONNECTED") > threads0 + 3 {
        assert!(Instant::now() < deadline, "greeted connections not given up while peers stay silent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(socks);
    let handshake_errors1 = status("CONNECTION_ERRORS_INTERNAL") + status("ABORTED_CONNECTS_PREAUTH");
    assert_eq!(handshake_errors1, handshake_errors0, "unused greetings ended as failed logins, not interrupted handshakes");
}
