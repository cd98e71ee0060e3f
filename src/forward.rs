//! Forwarding a state-changing admin request to the orchestrator (etcd deployments).
//!
//! Any proxy's admin port accepts a reparent or failover; when another proxy holds
//! the orchestrator role, the request is replayed to that proxy's admin port (same
//! path, body and bearer token) and its answer returned as is. A forwarded request
//! carries `X-Baton-Forwarded` so it is never forwarded twice.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest a forwarded reparent may take (prepare + grace + catch-up + verify).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(180);

/// Replay `POST path` with `body` to the admin port at `to`.
pub async fn forward(to: &str, from_id: &str, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    match tokio::time::timeout(FORWARD_TIMEOUT, exchange(to, from_id, path, headers, body)).await {
        Ok(Ok((status, body))) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, [("content-type", "application/json"), ("x-baton-orchestrator", to)], body).into_response()
        }
        Ok(Err(e)) => {
            super::admin::error(StatusCode::BAD_GATEWAY, "orchestrator_unreachable", format!("forwarding to the orchestrator at {to} failed: {e}"))
        }
        Err(_) => super::admin::error(
            StatusCode::GATEWAY_TIMEOUT,
            "orchestrator_timeout",
            format!("the orchestrator at {to} did not answer within {} s", FORWARD_TIMEOUT.as_secs()),
        ),
    }
}

async fn exchange(to: &str, from_id: &str, path: &str, headers: &HeaderMap, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = tokio::net::TcpStream::connect(to).await?;
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(|v| format!("Authorization: {v}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\nContent-Type: application/json\r\nX-Baton-Forwarded: {from_id}\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP answer");
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let head = std::str::from_utf8(&out[..split]).map_err(|_| bad())?;
    let status: u16 = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
    if head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked")) {
        return Ok((status, dechunk(&out[split + 4..]).ok_or_else(bad)?));
    }
    Ok((status, out[split + 4..].to_vec()))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}
