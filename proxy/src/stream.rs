//! The byte stream under a [`crate::packet::PacketIo`]: plain TCP, or TLS over it
//! (towards a client, baton is the TLS server; towards a backend, the client).
//!
//! The MySQL protocol starts TLS inside the connection (after the SSL request of
//! the handshake), so a connection begins [`Stream::Plain`] and is upgraded in place.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection's stream.
pub enum Stream {
    Plain(TcpStream),
    /// A client's connection after its SSL request.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A backend connection after baton's SSL request.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Taken out for an upgrade that failed: every read and write fails.
    Detached,
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::ServerTls(s) => Some(s.get_ref().0),
            Stream::ClientTls(s) => Some(s.get_ref().0),
            Stream::Detached => None,
        }
    }

    /// Is this connection encrypted?
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::ServerTls(_) | Stream::ClientTls(_))
    }

    /// The TLS version and cipher suite in use (for logs and tests).
    pub fn tls_cipher(&self) -> Option<String> {
        let (v, c) = match self {
            Stream::ServerTls(s) => (s.get_ref().1.protocol_version(), s.get_ref().1.negotiated_cipher_suite()),
            Stream::ClientTls(s) => (s.get_ref().1.protocol_version(), s.get_ref().1.negotiated_cipher_suite()),
            _ => return None,
        };
        Some(format!("{:?} {:?}", v?, c?.suite()))
    }

    /// Take the plain TCP stream out for a TLS handshake (leaves [`Stream::Detached`]).
    pub fn take_plain(&mut self) -> io::Result<TcpStream> {
        match std::mem::replace(self, Stream::Detached) {
            Stream::Plain(s) => Ok(s),
            other => {
                *self = other;
                Err(io::Error::other("the connection is already encrypted"))
            }
        }
    }

    /// Without waiting: has the peer closed, or sent something unasked? A TLS
    /// stream reads through TLS, so records the peer sends on its own (TLS 1.3
    /// session tickets) are consumed by TLS and do not count. The byte read, if
    /// any, is lost: the connection must not be used again.
    pub fn closed_or_unasked_data(&mut self) -> bool {
        let mut b = [0u8; 1];
        let mut buf = ReadBuf::new(&mut b);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(self).poll_read(&mut cx, &mut buf) {
            Poll::Pending => false,
            Poll::Ready(Ok(())) => true, // EOF (nothing filled) or a byte
            Poll::Ready(Err(_)) => true,
        }
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Plain(_) => "Stream::Plain",
            Stream::ServerTls(_) => "Stream::ServerTls",
            Stream::ClientTls(_) => "Stream::ClientTls",
            Stream::Detached => "Stream::Detached",
        })
    }
}

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection detached by a failed TLS handshake")
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::ServerTls(s) => s.is_write_vectored(),
            Stream::ClientTls(s) => s.is_write_vectored(),
            Stream::Detached => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }
}
