//! The client side of the connection phase: baton's greeting, TLS when the
//! client asks for it (the SSL request, then a TLS handshake on the same
//! connection, then the handshake response inside TLS; MySQL's protocol page
//! "Protocol::SSLRequest"), and the authentication exchange
//! ([`crate::authenticate`]).

use std::net::SocketAddr;

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;

use crate::auth::{self, BackendSecret, NATIVE_PLUGIN};
use crate::authenticate::{Exchange, Verdict};
use crate::context::{ProxyContext, UserEntry};
use crate::error::{MysqlError, ProxyError, Result};
use crate::packet::PacketIo;
use crate::proto::{server_capabilities, server_ext_capabilities};
use crate::stream::Stream;

/// utf8mb4_general_ci, the greeting's default collation.
pub const DEFAULT_COLLATION: u8 = 45;

/// The SSL request: the handshake response's fixed 32-byte head, CLIENT_SSL set.
const SSL_REQUEST_LEN: usize = 32;

/// A client that proved who it is.
#[derive(Debug)]
pub struct Hello {
    pub user: String,
    pub entry: UserEntry,
    /// What baton logs in to backends with.
    pub secret: BackendSecret,
    pub db: Option<Vec<u8>>,
    pub collation: u8,
    pub caps: CapabilityFlags,
    /// MariaDB extended capabilities both sides have.
    pub ext_caps: MariadbCapabilities,
    /// The nonce of the greeting (COM_CHANGE_USER proofs use it too).
    pub nonce: [u8; 20],
    /// Sequence id for the final OK/ERR.
    pub next_seq: u8,
    /// The client's connection is encrypted.
    pub tls: bool,
}

/// Send the greeting and authenticate the client.
pub async fn accept(io: &mut PacketIo<Stream>, ctx: &ProxyContext, conn_id: u32, peer: SocketAddr) -> Result<Hello> {
    let nonce = auth::new_nonce();
    let limits = ctx.limits();
    let tls = ctx.tls.current();
    let mut offered = server_capabilities();
    if tls.is_some() {
        offered |= CapabilityFlags::CLIENT_SSL;
    }
    let mut scramble_2 = nonce[8..].to_vec();
    scramble_2.push(0);
    let greeting = HandshakePacket::new(
        10,
        limits.server_version.as_bytes(),
        conn_id,
        nonce[..8].try_into().expect("8 bytes"),
        Some(scramble_2),
        offered,
        DEFAULT_COLLATION,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(NATIVE_PLUGIN),
    )
    .with_mariadb_ext_capabilities(server_ext_capabilities());
    let mut buf = Vec::with_capacity(128);
    greeting.serialize(&mut buf);
    io.send(0, &buf).await?;

    let too_large = |e| match e {
        ProxyError::Fatal(err) if err.code == 1153 => ProxyError::Fatal(MysqlError::bad_handshake("handshake response larger than 64 KiB")),
        other => other,
    };
    // Read exactly one packet: a TLS ClientHello may follow an SSL request at once.
    let (mut seq, mut payload) = io.read_exact_packet(64 * 1024).await.map_err(too_large)?;
    if seq != 1 {
        return Err(ProxyError::Fatal(MysqlError::packets_out_of_order()));
    }
    let wants_tls =
        payload.len() >= 4 && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) & CapabilityFlags::CLIENT_SSL.bits() != 0;
    if wants_tls {
        let Some(tls) = &tls else {
            return Err(ProxyError::Fatal(MysqlError::bad_handshake("TLS is not offered by this baton listener")));
        };
        if payload.len() != SSL_REQUEST_LEN {
            return Err(ProxyError::Fatal(MysqlError::bad_handshake("an SSL request must be 32 bytes")));
        }
        let tcp = io.get_mut().take_plain()?;
        // A failed TLS handshake leaves the stream detached: nothing more is sent.
        let stream = tls.acceptor.accept(tcp).await?;
        *io.get_mut() = Stream::ServerTls(Box::new(stream));
        let (s, _, p) = io.read_logical(64 * 1024).await.map_err(too_large)?;
        if s != 2 {
            return Err(ProxyError::Fatal(MysqlError::packets_out_of_order()));
        }
        (seq, payload) = (s, p);
    }
    let encrypted = io.get_ref().is_tls();
    // Parse with the capabilities both sides have: some clients set flags (such as
    // CONNECT_ATTRS) that the server did not offer and then omit the fields.
    let mut payload = payload.to_vec();
    if payload.len() >= 4 {
        let sent = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
        let effective = sent & server_capabilities().bits();
        payload[..4].copy_from_slice(&effective.to_le_bytes());
    }
    let resp: HandshakeResponse<'_> =
        ParseBuf(&payload).parse(()).map_err(|_| ProxyError::Fatal(MysqlError::bad_handshake("malformed handshake response")))?;
    let client_caps = resp.capabilities();
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
    let plugin = resp.auth_plugin().map(|p| p.as_bytes().to_vec());
    let data = resp.scramble_buf().to_vec();
    let host = peer.ip().to_string();
    if tls.as_ref().is_some_and(|t| t.required) && !encrypted {
        // As the server refuses a REQUIRE SSL account without TLS.
        return Err(ProxyError::Fatal(MysqlError::access_denied(&user, &host, !data.is_empty())));
    }
    let mut exchange = Exchange { io, ctx, nonce: &nonce, seq: seq.wrapping_add(1) };
    let verdict = exchange.run(&user, plugin.as_deref(), data).await?;
    let next_seq = exchange.seq;
    match verdict {
        Verdict::Allowed { entry, secret } if !entry.require_tls || encrypted => {
            Ok(Hello { user, entry: *entry, secret, db, collation, caps, ext_caps, nonce, next_seq, tls: encrypted })
        }
        refused => {
            // Sent here: the exchange knows the sequence id (after an auth switch or
            // a caching_sha2 packet of baton's own, it is not the client's last + 1).
            let using_password = !matches!(refused, Verdict::Denied { using_password: false });
            let e = MysqlError::access_denied(&user, &host, using_password);
            tracing::debug!(error = %e, "login refused");
            io.send(next_seq, &crate::proto::err_payload(&e)).await?;
            Err(ProxyError::Io(std::io::ErrorKind::PermissionDenied.into()))
        }
    }
}
