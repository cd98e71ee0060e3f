//! Packet framing: the 4-byte MySQL packet header, over any async byte stream.
//!
//! Two ways to read: [`PacketIo::read_logical`] joins 16 MiB continuation packets into
//! one payload, bounded by a size limit (client commands); [`PacketIo::read_raw`]
//! hands out one physical packet, header included, for relaying unchanged.
//! Writes are queued into a buffer and sent by [`PacketIo::flush`].
//!
//! Both buffers return to [`INITIAL_CAPACITY`] once a packet that grew them past
//! [`SHRINK_ABOVE`] has been handed out (read) or flushed (write), so an idle session
//! does not keep the memory of the largest packet it ever moved.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{MysqlError, ProxyError, Result};

/// Largest payload of one physical packet; a payload of exactly this size is
/// continued in the next packet.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// Capacity of a new read or write buffer, and what a grown one returns to.
pub const INITIAL_CAPACITY: usize = 16 * 1024;

/// A buffer whose capacity exceeds this after its large packet is gone is replaced
/// by a fresh [`INITIAL_CAPACITY`] one. Ordinary traffic (flushes at 64 KiB, small
/// rows) stays below it, so only large packets pay for a new allocation.
pub const SHRINK_ABOVE: usize = 256 * 1024;

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
    /// `rbuf` sits in a large allocation that could not be given up yet (too many
    /// bytes were buffered behind the large packet); retried at the next packet.
    /// After `split_to`, `rbuf.capacity()` counts only what is left behind the
    /// packet handed out, not the allocation it keeps alive.
    rbuf_grown: bool,
    /// The sequence id of the last packet header read (a reply to a refused
    /// command carries the one after it).
    last_seq: u8,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketIo<S> {
    pub fn new(stream: S) -> Self {
        PacketIo {
            stream,
            rbuf: BytesMut::with_capacity(INITIAL_CAPACITY),
            wbuf: BytesMut::with_capacity(INITIAL_CAPACITY),
            rbuf_grown: false,
            last_seq: 0,
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The underlying stream, to upgrade it (TLS) in place.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Read one packet (no continuation) of at most `max` payload bytes without
    /// reading a byte past it, so the stream can be handed to TLS right after
    /// (a client may send its TLS ClientHello right behind its SSL request).
    /// Returns the sequence id and the payload.
    pub async fn read_exact_packet(&mut self, max: usize) -> Result<(u8, Bytes)> {
        if !self.rbuf.is_empty() {
            return Err(ProxyError::Fatal(MysqlError::packets_out_of_order()));
        }
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).await?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        if len > max || len == MAX_PAYLOAD {
            return Err(ProxyError::Fatal(MysqlError::packet_too_large()));
        }
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await?;
        self.last_seq = header[3];
        Ok((header[3], Bytes::from(payload)))
    }

    /// Is a complete physical packet already buffered (so reading it will not block)?
    pub fn has_buffered_packet(&self) -> bool {
        header_len(&self.rbuf).is_some_and(|len| self.rbuf.len() >= 4 + len)
    }

    /// Are there bytes read from the peer that are not yet handed out?
    pub fn has_buffered_bytes(&self) -> bool {
        !self.rbuf.is_empty()
    }

    /// Read what arrives next into the read buffer (kept for the next read).
    /// Err at the end of the stream. For telling whether a peer hung up where a
    /// TCP peek cannot (TLS: the peek sees records, and a close_notify is one).
    pub async fn fill_some(&mut self) -> Result<()> {
        self.fill().await
    }

    /// [`PacketIo::fill_some`] without waiting: None when nothing is ready.
    pub fn fill_now(&mut self) -> Option<Result<()>> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(INITIAL_CAPACITY);
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.stream), &mut cx, &mut self.rbuf) {
            std::task::Poll::Pending => None,
            std::task::Poll::Ready(Ok(0)) => Some(Err(ProxyError::Io(std::io::ErrorKind::UnexpectedEof.into()))),
            std::task::Poll::Ready(Ok(_)) => Some(Ok(())),
            std::task::Poll::Ready(Err(e)) => Some(Err(e.into())),
        }
    }

    async fn fill(&mut self) -> Result<()> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(INITIAL_CAPACITY);
        }
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(ProxyError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// Hand out the first `n` buffered bytes (one whole packet). If the buffer had
    /// grown for a large packet, what is left behind it moves to a fresh small buffer,
    /// so the large allocation is freed once the caller drops the packet. The common
    /// case costs a flag test and a capacity comparison.
    fn take(&mut self, n: usize) -> RawPacket {
        let grown = self.rbuf_grown || self.rbuf.capacity() > SHRINK_ABOVE;
        let bytes = self.rbuf.split_to(n).freeze();
        if grown {
            // Only a small remainder is copied: a large one (a pipelining peer) would
            // make every small packet behind it pay for a copy of the rest.
            self.rbuf_grown = self.rbuf.len() > INITIAL_CAPACITY;
            if !self.rbuf_grown {
                let mut fresh = BytesMut::with_capacity(INITIAL_CAPACITY);
                fresh.extend_from_slice(&self.rbuf);
                self.rbuf = fresh;
            }
        }
        RawPacket { bytes }
    }

    /// Read one physical packet, header included, without interpreting it.
    pub async fn read_raw(&mut self) -> Result<RawPacket> {
        loop {
            if let Some(len) = header_len(&self.rbuf) {
                if self.rbuf.len() >= 4 + len {
                    return Ok(self.take(4 + len));
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
                self.last_seq = self.rbuf[3];
                if len > max {
                    return Err(ProxyError::Fatal(MysqlError::packet_too_large()));
                }
                if self.rbuf.len() >= 4 + len {
                    return Ok(self.take(4 + len));
                }
                self.rbuf.reserve(4 + len - self.rbuf.len());
            }
            self.fill().await?;
        }
    }

    /// The sequence id of the last packet header read.
    pub fn last_seq(&self) -> u8 {
        self.last_seq
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

    /// Queue a relayed packet with another sequence id (a response into which
    /// baton inserted packets).
    pub fn queue_raw_with_seq(&mut self, bytes: &[u8], seq: u8) {
        if bytes.len() < 4 {
            return;
        }
        self.wbuf.extend_from_slice(&bytes[..3]);
        self.wbuf.put_u8(seq);
        self.wbuf.extend_from_slice(&bytes[4..]);
    }

    /// Overwrite queued, unflushed bytes at `at` (a field of a packet queued
    /// earlier in this response). False if they are no longer queued.
    pub fn patch(&mut self, at: usize, bytes: &[u8]) -> bool {
        match self.wbuf.get_mut(at..at + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Bytes queued and not yet flushed.
    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    /// Write everything queued. A buffer grown past [`SHRINK_ABOVE`] is replaced by a
    /// fresh small one.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            // TLS holds written records until flushed (a no-op on plain TCP).
            self.stream.flush().await?;
            if self.wbuf.capacity() > SHRINK_ABOVE {
                self.wbuf = BytesMut::with_capacity(INITIAL_CAPACITY);
            } else {
                self.wbuf.clear();
            }
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

    /// After a 10 MB packet is read and dropped, the read buffer holds no large
    /// allocation any more: `try_reclaim` cannot find room without allocating (it
    /// could, in the 10 MB allocation, if the buffer still kept it alive).
    #[test]
    fn read_buffer_shrinks_after_a_large_packet() {
        run(async {
            let (a, b) = tokio::io::duplex(1 << 20);
            let mut w = PacketIo::new(a);
            let mut r = PacketIo::new(b);
            let writer = tokio::spawn(async move {
                w.queue(0, &vec![7u8; 10_000_000]);
                w.queue(0, b"next");
                w.flush().await.unwrap();
                w
            });
            let (_, _, p) = r.read_logical(16 << 20).await.unwrap();
            assert_eq!(p.len(), 10_000_000);
            drop(p);
            assert!(r.rbuf.capacity() <= SHRINK_ABOVE, "capacity {}", r.rbuf.capacity());
            assert!(!r.rbuf.try_reclaim(SHRINK_ABOVE), "the read buffer still holds the 10 MB allocation");
            let (_, _, p) = r.read_logical(10).await.unwrap();
            assert_eq!(&p[..], b"next");
            writer.await.unwrap();
        });
    }

    /// After a 10 MB packet is flushed, the write buffer is back to its small size.
    #[test]
    fn write_buffer_shrinks_after_flushing_a_large_packet() {
        run(async {
            let (a, b) = tokio::io::duplex(1 << 20);
            let mut w = PacketIo::new(a);
            let mut r = PacketIo::new(b);
            let reader = tokio::spawn(async move {
                let (_, _, big) = r.read_logical(16 << 20).await.unwrap();
                let (_, _, small) = r.read_logical(10).await.unwrap();
                (big.len(), small)
            });
            w.send(0, &vec![7u8; 10_000_000]).await.unwrap();
            assert!(w.wbuf.capacity() <= SHRINK_ABOVE, "capacity {}", w.wbuf.capacity());
            // Small flushes keep the buffer they have.
            w.send(0, b"small").await.unwrap();
            assert_eq!(w.wbuf.capacity(), INITIAL_CAPACITY);
            let (big, small) = reader.await.unwrap();
            assert_eq!((big, &small[..]), (10_000_000, &b"small"[..]));
        });
    }

    /// Many bytes buffered behind the large packet: the large allocation is given up
    /// at the first packet that leaves only a small remainder, and nothing is lost.
    #[test]
    fn read_buffer_shrinks_once_a_pipelined_remainder_drains() {
        run(async {
            let (_a, b) = tokio::io::duplex(64);
            let mut r = PacketIo::new(b);
            let frame = |seq: u8, payload: &[u8]| {
                let mut f = (payload.len() as u32).to_le_bytes()[..3].to_vec();
                f.push(seq);
                f.extend_from_slice(payload);
                f
            };
            let mut data = frame(0, &vec![1u8; 1 << 20]);
            for i in 0..100u8 {
                data.extend(frame(i, &[i; 1000]));
            }
            r.rbuf = BytesMut::from(&data[..]);
            assert_eq!(r.read_raw().await.unwrap().payload_len(), 1 << 20);
            assert!(r.rbuf_grown, "100 kB behind the packet: the copy waits");
            for i in 0..100u8 {
                let p = r.read_raw().await.unwrap();
                assert_eq!((p.seq(), p.payload()), (i, &[i; 1000][..]));
            }
            assert!(!r.rbuf_grown);
            assert!(!r.rbuf.try_reclaim(SHRINK_ABOVE), "the read buffer still holds the large allocation");
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
