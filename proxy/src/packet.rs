//! Packet framing: the 4-byte MySQL packet header, over any async byte stream.
//!
//! Two ways to read: [`PacketIo::read_logical`] joins 16 MiB continuation packets into
//! one payload, bounded by a size limit (client commands); [`PacketIo::read_raw`]
//! hands out one physical packet, header included, for relaying unchanged.
//! Writes are queued into a buffer and sent by [`PacketIo::flush`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{MysqlError, ProxyError, Result};

/// Largest payload of one physical packet; a payload of exactly this size is
/// continued in the next packet.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// One physical packet, header included.
#[derive(Debug, Clone)]
pub struct RawPacket {
    /// Header (4 bytes) + payload.
    pub bytes: Bytes,
}

impl RawPacket {
    pub fn seq(&self) -> u8 {
        self.bytes[3]
    }
    pub fn payload(&self) -> &[u8] {
        &self.bytes[4..]
    }
    pub fn payload_len(&self) -> usize {
        self.bytes.len() - 4
    }
    /// True when the next packet continues this one's payload.
    pub fn is_continued(&self) -> bool {
        self.payload_len() == MAX_PAYLOAD
    }
}

/// A packet stream over `S` with read and write buffers.
pub struct PacketIo<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketIo<S> {
    pub fn new(stream: S) -> Self {
        PacketIo { stream, rbuf: BytesMut::with_capacity(16 * 1024), wbuf: BytesMut::with_capacity(16 * 1024) }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Is a complete physical packet already buffered (so reading it will not block)?
    pub fn has_buffered_packet(&self) -> bool {
        header_len(&self.rbuf).is_some_and(|len| self.rbuf.len() >= 4 + len)
    }

    /// Are there bytes read from the peer that are not yet handed out?
    pub fn has_buffered_bytes(&self) -> bool {
        !self.rbuf.is_empty()
    }

    async fn fill(&mut self) -> Result<()> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(16 * 1024);
        }
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(ProxyError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// Read one physical packet, header included, without interpreting it.
    pub async fn read_raw(&mut self) -> Result<RawPacket> {
        loop {
            if let Some(len) = header_len(&self.rbuf) {
                if self.rbuf.len() >= 4 + len {
                    return Ok(RawPacket { bytes: self.rbuf.split_to(4 + len).freeze() });
                }
                self.rbuf.reserve(4 + len - self.rbuf.len());
            }
            self.fill().await?;
        }
    }

    /// Read one logical packet (continuations joined). Returns (first sequence id,
    /// last sequence id, payload). A payload over `max` is refused with ERR 1153
    /// before its body is read.
    pub async fn read_logical(&mut self, max: usize) -> Result<(u8, u8, Bytes)> {
        let first = self.read_raw_bounded(max).await?;
        let first_seq = first.seq();
        if !first.is_continued() {
            let mut b = first.bytes;
            b.advance(4);
            return Ok((first_seq, first_seq, b));
        }
        let mut payload = BytesMut::from(first.payload());
        let mut last = first;
        while last.is_continued() {
            let next = self.read_raw_bounded(max.saturating_sub(payload.len())).await?;
            if next.seq() != last.seq().wrapping_add(1) {
                return Err(ProxyError::Fatal(MysqlError::packets_out_of_order()));
            }
            payload.extend_from_slice(next.payload());
            last = next;
        }
        Ok((first_seq, last.seq(), payload.freeze()))
    }

    async fn read_raw_bounded(&mut self, max: usize) -> Result<RawPacket> {
        loop {
            if let Some(len) = header_len(&self.rbuf) {
                if len > max {
                    return Err(ProxyError::Fatal(MysqlError::packet_too_large()));
                }
                if self.rbuf.len() >= 4 + len {
                    return Ok(RawPacket { bytes: self.rbuf.split_to(4 + len).freeze() });
                }
                self.rbuf.reserve(4 + len - self.rbuf.len());
            }
            self.fill().await?;
        }
    }

    /// Queue a payload as one logical packet starting at `seq` (split at 16 MiB).
    /// Returns the sequence id the next packet should use.
    pub fn queue(&mut self, mut seq: u8, payload: &[u8]) -> u8 {
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_PAYLOAD);
            self.wbuf.reserve(4 + n);
            self.wbuf.put_uint_le(n as u64, 3);
            self.wbuf.put_u8(seq);
            self.wbuf.put_slice(&rest[..n]);
            seq = seq.wrapping_add(1);
            rest = &rest[n..];
            if n < MAX_PAYLOAD {
                return seq;
            }
        }
    }

    /// Queue bytes that are already framed (relayed packets).
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Bytes queued and not yet flushed.
    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    /// Write everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Queue and flush one packet.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) -> Result<u8> {
        let next = self.queue(seq, payload);
        self.flush().await?;
        Ok(next)
    }
}

fn header_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= 4).then(|| buf[0] as usize | (buf[1] as usize) << 8 | (buf[2] as usize) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    #[test]
    fn round_trips_large_payloads() {
        run(async {
            let (a, b) = tokio::io::duplex(1 << 20);
            let mut w = PacketIo::new(a);
            let mut r = PacketIo::new(b);
            let big = vec![7u8; MAX_PAYLOAD + 10];
            let writer = tokio::spawn(async move {
                w.send(0, &big).await.unwrap();
                w.send(0, b"").await.unwrap();
                w
            });
            let (s0, s1, p) = r.read_logical(32 << 20).await.unwrap();
            assert_eq!((s0, s1, p.len()), (0, 1, MAX_PAYLOAD + 10));
            let (_, _, p) = r.read_logical(10).await.unwrap();
            assert!(p.is_empty());
            writer.await.unwrap();
        });
    }

    #[test]
    fn oversized_packet_is_refused_before_reading_it() {
        run(async {
            let (a, b) = tokio::io::duplex(1024);
            let mut w = PacketIo::new(a);
            let mut r = PacketIo::new(b);
            w.queue_raw(&[0xff, 0xff, 0x00, 0]);
            w.flush().await.unwrap();
            match r.read_logical(1024).await {
                Err(ProxyError::Fatal(e)) => assert_eq!(e.code, 1153),
                other => panic!("{other:?}"),
            }
        });
    }

    proptest! {
        /// Arbitrary bytes never panic the framer: they yield packets, an error, or EOF.
        #[test]
        fn framing_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), max in 0usize..200) {
            run(async {
                let (a, b) = tokio::io::duplex(4096);
                let mut w = PacketIo::new(a);
                w.queue_raw(&data);
                w.flush().await.unwrap();
                drop(w);
                let mut r = PacketIo::new(b);
                for _ in 0..400 {
                    if r.read_logical(max).await.is_err() { break; }
                }
            });
        }
    }
}
