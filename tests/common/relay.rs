//! A TCP relay in front of a server for tests that must break what baton sees:
//! cut one connection right after the next bytes reach the server (a statement
//! that ran with no answer back), or meet new connections as a busy, hung or
//! gone server would.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Relayed to the server.
pub const NORMAL: u8 = 0;
/// Answered with ERR 1040 as the greeting (a server at max_connections).
pub const BUSY: u8 = 1;
/// Held open, never greeted (a hung server).
pub const HANG: u8 = 2;
/// Closed at once (a server that is gone).
pub const DOWN: u8 = 3;

pub struct Relay {
    pub addr: String,
    /// Cut the connection that next carries bytes to the server, right after forwarding them.
    pub cut_next: Arc<AtomicBool>,
    /// How new connections are met: NORMAL, BUSY, HANG, DOWN.
    pub mode: Arc<AtomicU8>,
}

impl Relay {
    pub async fn start(target: String) -> Relay {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let cut_next = Arc::new(AtomicBool::new(false));
        let mode = Arc::new(AtomicU8::new(NORMAL));
        let (cut, m) = (cut_next.clone(), mode.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut down_conn, _)) = l.accept().await else { return };
                match m.load(Ordering::SeqCst) {
                    BUSY => {
                        // As MariaDB at max_connections: an ERR as the greeting.
                        let msg = b"Too many connections";
                        let mut p = vec![0xff];
                        p.extend_from_slice(&1040u16.to_le_bytes());
                        p.extend_from_slice(msg);
                        let mut pkt = (p.len() as u32).to_le_bytes()[..3].to_vec();
                        pkt.push(0);
                        pkt.extend_from_slice(&p);
                        let _ = down_conn.write_all(&pkt).await;
                        continue;
                    }
                    DOWN => continue,
                    HANG => {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            drop(down_conn);
                        });
                        continue;
                    }
                    _ => {}
                }
                let target = target.clone();
                let cut = cut.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(&target).await else { return };
                    let (mut dr, mut dw) = down_conn.split();
                    let (mut ur, mut uw) = up.split();
                    let to_server = async {
                        let mut b = vec![0u8; 1 << 16];
                        loop {
                            let n = match dr.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if uw.write_all(&b[..n]).await.is_err() {
                                return;
                            }
                            if cut.swap(false, Ordering::SeqCst) {
                                return;
                            }
                        }
                    };
                    let to_client = async {
                        let mut b = vec![0u8; 1 << 16];
                        loop {
                            let n = match ur.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if dw.write_all(&b[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! { _ = to_server => {}, _ = to_client => {} }
                });
            }
        });
        Relay { addr, cut_next, mode }
    }
}
