//! The client side of the connection phase: baton's greeting, the client's
//! handshake response, and mysql_native_password verification (with an auth
//! switch for clients that start with another plugin).

use std::net::SocketAddr;

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthSwitchRequest, HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use tokio::net::TcpStream;

use crate::auth::{self, Stage1, NATIVE_PLUGIN};
use crate::context::{ProxyContext, UserEntry};
use crate::error::{MysqlError, ProxyError, Result};
use crate::packet::PacketIo;
use crate::proto::{server_capabilities, server_ext_capabilities};

/// utf8mb4_general_ci, the greeting's default collation.
pub const DEFAULT_COLLATION: u8 = 45;

/// A client that proved who it is.
#[derive(Debug)]
pub struct Hello {
    pub user: String,
    pub entry: UserEntry,
    pub stage1: Stage1,
    pub db: Option<Vec<u8>>,
    pub collation: u8,
    pub caps: CapabilityFlags,
    /// MariaDB extended capabilities both sides have.
    pub ext_caps: MariadbCapabilities,
    /// The nonce of the greeting (COM_CHANGE_USER proofs use it too).
    pub nonce: [u8; 20],
    /// Sequence id for the final OK/ERR.
    pub next_seq: u8,
}

/// Send the greeting and authenticate the client.
pub async fn accept(io: &mut PacketIo<TcpStream>, ctx: &ProxyContext, conn_id: u32, peer: SocketAddr) -> Result<Hello> {
    let nonce = auth::new_nonce();
    let limits = ctx.limits();
    let mut scramble_2 = nonce[8..].to_vec();
    scramble_2.push(0);
    let greeting = HandshakePacket::new(
        10,
        limits.server_version.as_bytes(),
        conn_id,
        nonce[..8].try_into().expect("8 bytes"),
        Some(scramble_2),
        server_capabilities(),
        DEFAULT_COLLATION,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(NATIVE_PLUGIN),
    )
    .with_mariadb_ext_capabilities(server_ext_capabilities());
    let mut buf = Vec::with_capacity(128);
    greeting.serialize(&mut buf);
    io.send(0, &buf).await?;

    let (seq, _, payload) = io.read_logical(64 * 1024).await.map_err(|e| match e {
        ProxyError::Fatal(err) if err.code == 1153 => ProxyError::Fatal(MysqlError::bad_handshake("handshake response larger than 64 KiB")),
        other => other,
    })?;
    if seq != 1 {
        return Err(ProxyError::Fatal(MysqlError::packets_out_of_order()));
    }
    // Parse with the capabilities both sides have: some clients set flags (such as
    // CONNECT_ATTRS) that the server did not offer and then omit the fields.
    let mut payload = payload.to_vec();
    if payload.len() >= 4 {
        let offered = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
        let effective = offered & (server_capabilities() | CapabilityFlags::CLIENT_SSL).bits();
        payload[..4].copy_from_slice(&effective.to_le_bytes());
    }
    let resp: HandshakeResponse<'_> =
        ParseBuf(&payload).parse(()).map_err(|_| ProxyError::Fatal(MysqlError::bad_handshake("malformed handshake response")))?;
    let client_caps = resp.capabilities();
    if client_caps.contains(CapabilityFlags::CLIENT_SSL) {
        return Err(ProxyError::Fatal(MysqlError::bad_handshake("TLS is not offered by this baton listener")));
    }
    if !client_caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err(ProxyError::Fatal(MysqlError::unsupported_client("protocol 4.1 is required")));
    }
    let caps = client_caps & server_capabilities();
    let ext_caps = if caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) {
        MariadbCapabilities::empty() // a MySQL client: the field is filler
    } else {
        resp.mariadb_ext_capabilities() & server_ext_capabilities()
    };
    let user = String::from_utf8_lossy(resp.user()).into_owned();
    let db = resp.db_name().filter(|d| !d.is_empty()).map(<[u8]>::to_vec);
    let collation = match resp.collation() {
        0 => DEFAULT_COLLATION,
        c => c,
    };
    let plugin_ok = resp.auth_plugin().is_none_or(|p| p.as_bytes() == NATIVE_PLUGIN);
    let mut proof = resp.scramble_buf().to_vec();
    let mut next_seq = seq.wrapping_add(1);
    if !plugin_ok {
        // Ask the client to answer our nonce with mysql_native_password instead.
        let mut data = nonce.to_vec();
        data.push(0);
        let mut sw = Vec::new();
        AuthSwitchRequest::new(NATIVE_PLUGIN, data).serialize(&mut sw);
        io.send(next_seq, &sw).await?;
        let (s, _, reply) = io.read_logical(64 * 1024).await?;
        if s != next_seq.wrapping_add(1) {
            return Err(ProxyError::Fatal(MysqlError::packets_out_of_order()));
        }
        proof = reply.to_vec();
        next_seq = s.wrapping_add(1);
    }
    let denied = || ProxyError::Fatal(MysqlError::access_denied(&user, &peer.ip().to_string(), !proof.is_empty()));
    let users = ctx.users();
    let entry = users.get(&user).ok_or_else(denied)?;
    let stage1 = auth::verify(&entry.hash, &nonce, &proof).ok_or_else(denied)?;
    Ok(Hello { user: user.clone(), entry: entry.clone(), stage1, db, collation, caps, ext_caps, nonce, next_seq })
}
