//! The frame codec of both ports: a 4-byte big-endian length, then that
//! many bytes of one bincode message, with separate caps for frames read
//! and frames written (a node reads requests far smaller than the replies
//! it writes).
//!
//! Written by hand rather than with tokio-util's `LengthDelimitedCodec`:
//! that codec, on reading a header, reserves the whole announced length at
//! once (`src.reserve(n)` in its `decode`), so a peer that sends one 4-byte
//! header claiming the maximum makes the node allocate the maximum for
//! nothing — on many connections, many times over. This codec keeps no
//! more than what arrived: it reserves nothing itself, and the framed
//! reader grows its buffer (amortized doubling, from 8 KiB) only to hold
//! bytes actually read, so a connection holds at most about twice what its
//! peer sent of the frame in progress, whatever length it announced.
//!
//! A peer that starts a frame and does not finish it is dropped: the codec
//! sets a deadline for the frame in progress (see [`frame_deadline`]) and
//! [`DeadlineIo`], the stream under it, fails the read once it passes; a
//! peer that stops reading what this end writes is dropped after
//! [`WRITE_STALL_TIMEOUT_MS`](crate::limits::WRITE_STALL_TIMEOUT_MS)
//! without progress. An idle connection between frames is not timed out
//! (an observer's long poll sends nothing for a while).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tarpc::tokio_util::bytes::{Buf, BufMut, Bytes, BytesMut};
use tarpc::tokio_util::codec::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::limits::{FRAME_TIMEOUT_MS, MIN_FRAME_BYTES_PER_S, WRITE_STALL_TIMEOUT_MS};
use crate::service::BoxedIo;

/// Bytes of the length header in front of every frame.
pub const HEADER_BYTES: usize = 4;

/// Length-delimited frames with a cap on frames read and one on frames
/// written; a frame over either is an `InvalidData` error, which closes the
/// connection.
#[derive(Debug)]
pub struct FrameCodec {
    /// Largest frame body accepted from the peer, bytes.
    max_read_bytes: usize,
    /// Largest frame body this end sends, bytes: what the peer accepts.
    max_write_bytes: usize,
    /// Length of the frame whose header was read and whose body has not
    /// fully arrived; `None` between frames.
    pending: Option<usize>,
    /// When the frame in progress must be complete; `None` between frames.
    /// Shared with the [`DeadlineIo`] the codec reads from.
    deadline: SharedDeadline,
}

/// The deadline of the frame in progress, written by the codec and read by
/// the stream wrapper that enforces it.
type SharedDeadline = Arc<Mutex<Option<Instant>>>;

fn lock(deadline: &SharedDeadline) -> std::sync::MutexGuard<'_, Option<Instant>> {
    // The guarded value is a plain `Option<Instant>`: a panic elsewhere
    // while holding the lock cannot leave it half-written.
    deadline.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Time a frame of `len` bytes may take to arrive from its first byte:
/// [`FRAME_TIMEOUT_MS`] plus `len` at [`MIN_FRAME_BYTES_PER_S`].
pub fn frame_deadline(len: usize) -> std::time::Duration {
    let transfer_ms = (len as u64).saturating_mul(1000) / MIN_FRAME_BYTES_PER_S;
    std::time::Duration::from_millis(FRAME_TIMEOUT_MS.saturating_add(transfer_ms))
}

impl FrameCodec {
    /// A codec reading frames of at most `max_read_bytes` and writing
    /// frames of at most `max_write_bytes` (both at most `u32::MAX`, the
    /// header's range).
    pub fn new(max_read_bytes: usize, max_write_bytes: usize) -> FrameCodec {
        let header_max = u32::MAX as usize;
        FrameCodec {
            max_read_bytes: max_read_bytes.min(header_max),
            max_write_bytes: max_write_bytes.min(header_max),
            pending: None,
            deadline: Arc::default(),
        }
    }

    /// Wraps `io` so that it enforces this codec's frame deadlines (and the
    /// write-stall timeout): the stream to frame with this codec.
    pub fn guard(&self, io: BoxedIo) -> DeadlineIo {
        DeadlineIo {
            inner: io,
            frame_deadline: self.deadline.clone(),
            read_timer: None,
            write_timer: None,
        }
    }

    /// Largest frame body accepted from the peer, bytes.
    pub fn max_read_bytes(&self) -> usize {
        self.max_read_bytes
    }
}

fn too_large(what: &str, len: usize, max: usize) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{what} frame of {len} bytes is above the limit of {max} bytes"),
    )
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, std::io::Error> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                let Some(header) = src.get(..HEADER_BYTES) else {
                    if !src.is_empty() {
                        // A header in pieces: the frame has started.
                        lock(&self.deadline).get_or_insert_with(|| Instant::now() + frame_deadline(0));
                    }
                    return Ok(None);
                };
                let mut raw = [0u8; HEADER_BYTES];
                raw.copy_from_slice(header);
                let len = u32::from_be_bytes(raw) as usize;
                if len > self.max_read_bytes {
                    return Err(too_large("incoming", len, self.max_read_bytes));
                }
                src.advance(HEADER_BYTES);
                self.pending = Some(len);
                let mut deadline = lock(&self.deadline);
                let started = deadline
                    .and_then(|d| d.checked_sub(frame_deadline(0)))
                    .unwrap_or_else(Instant::now);
                *deadline = Some(started + frame_deadline(len));
                len
            }
        };
        if src.len() < len {
            // Deliberately no `reserve(len)`: see the module comment.
            return Ok(None);
        }
        self.pending = None;
        *lock(&self.deadline) = None;
        Ok(Some(src.split_to(len)))
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, data: Bytes, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        if data.len() > self.max_write_bytes {
            return Err(too_large("outgoing", data.len(), self.max_write_bytes));
        }
        // Checked above: the length fits the header.
        let len = data.len() as u32;
        dst.reserve(HEADER_BYTES + data.len());
        dst.put_u32(len);
        dst.extend_from_slice(&data);
        Ok(())
    }
}

/// A connection's stream that fails a read once the frame in progress is
/// past its deadline, and a write that made no progress for
/// [`WRITE_STALL_TIMEOUT_MS`]: so a peer that starts a frame and stalls,
/// or stops reading, does not hold the connection (and its buffers)
/// forever. Made by [`FrameCodec::guard`].
pub struct DeadlineIo {
    inner: BoxedIo,
    frame_deadline: SharedDeadline,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_string())
}

/// Polls `timer` for `deadline`, (re)arming it; ready once it passed.
fn expired(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if sleep.deadline() != deadline {
        sleep.as_mut().reset(deadline);
    }
    sleep.as_mut().poll(cx).is_ready()
}

impl AsyncRead for DeadlineIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => {
                let deadline = *lock(&this.frame_deadline);
                match deadline {
                    None => {
                        this.read_timer = None;
                        Poll::Pending
                    }
                    Some(deadline) if expired(&mut this.read_timer, deadline, cx) => {
                        Poll::Ready(Err(timed_out("the peer did not complete its frame in time")))
                    }
                    Some(_) => Poll::Pending,
                }
            }
        }
    }
}

impl DeadlineIo {
    fn write_stalled(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let deadline = match &self.write_timer {
            Some(timer) => timer.deadline(),
            None => Instant::now() + std::time::Duration::from_millis(WRITE_STALL_TIMEOUT_MS),
        };
        if expired(&mut self.write_timer, deadline, cx) {
            Poll::Ready(timed_out("the peer stopped reading"))
        } else {
            Poll::Pending
        }
    }

    fn written<T>(&mut self, result: Poll<std::io::Result<T>>, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.write_timer = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.write_stalled(cx).map(Err),
        }
    }
}

impl AsyncWrite for DeadlineIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.written(result, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.written(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        FrameCodec::new(usize::MAX, usize::MAX)
            .encode(Bytes::copy_from_slice(body), &mut out)
            .unwrap();
        out
    }

    #[test]
    fn frames_round_trip_across_arbitrary_splits() {
        let mut wire = BytesMut::new();
        for body in [&b""[..], b"a", &[9u8; 3000][..], b"last"] {
            wire.extend_from_slice(&frame(body));
        }
        for step in [1, 2, 3, 5, 4096] {
            let mut codec = FrameCodec::new(4096, 4096);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                buf.extend_from_slice(chunk);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    got.push(f.to_vec());
                }
            }
            assert_eq!(
                got,
                vec![b"".to_vec(), b"a".to_vec(), vec![9u8; 3000], b"last".to_vec()]
            );
        }
    }

    #[test]
    fn a_header_announcing_the_maximum_reserves_nothing() {
        let mut codec = FrameCodec::new(1 << 30, 1 << 30);
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u32(1 << 30);
        buf.extend_from_slice(b"only a few bytes");
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() < 1024, "reserved {} bytes", buf.capacity());
        // LengthDelimitedCodec would have reserved the whole gigabyte here.
    }

    #[test]
    fn frames_over_the_caps_are_refused_both_ways() {
        let mut codec = FrameCodec::new(10, 5);
        let mut buf = BytesMut::new();
        buf.put_u32(11);
        let e = codec.decode(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("11 bytes"), "{e}");
        let mut out = BytesMut::new();
        assert!(codec.encode(Bytes::from_static(b"123456"), &mut out).is_err());
        assert!(out.is_empty());
        codec.encode(Bytes::from_static(b"12345"), &mut out).unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 5, b'1', b'2', b'3', b'4', b'5']);
    }

    fn pair() -> (BoxedIo, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(1024);
        (Box::new(a), b)
    }

    // Time is paused: tokio advances it to the next timer whenever every
    // task waits, so these run at once and measure nothing.

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stalls_mid_frame_is_dropped() {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let (io, mut peer) = pair();
        let codec = FrameCodec::new(1 << 20, 1 << 20);
        let mut framed = tarpc::tokio_util::codec::Framed::new(codec.guard(io), codec);
        peer.write_all(&[0, 0, 0, 100]).await.unwrap();
        peer.write_all(&[1; 10]).await.unwrap();
        let started = Instant::now();
        let e = framed.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(started.elapsed() >= frame_deadline(100));
        drop(peer);
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_in_pieces_starts_the_clock_too() {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let (io, mut peer) = pair();
        let codec = FrameCodec::new(1 << 20, 1 << 20);
        let mut framed = tarpc::tokio_util::codec::Framed::new(codec.guard(io), codec);
        peer.write_all(&[0, 0]).await.unwrap();
        let e = framed.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_between_frames_is_kept() {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let (io, mut peer) = pair();
        let codec = FrameCodec::new(1 << 20, 1 << 20);
        let mut framed = tarpc::tokio_util::codec::Framed::new(codec.guard(io), codec);
        peer.write_all(&[0, 0, 0, 2, 7, 7]).await.unwrap();
        assert_eq!(&framed.next().await.unwrap().unwrap()[..], &[7, 7]);
        // A day of silence after a complete frame is not a stall.
        let idle = tokio::time::timeout(std::time::Duration::from_secs(86_400), framed.next()).await;
        assert!(idle.is_err(), "the idle connection ended: {idle:?}");
        peer.write_all(&[0, 0, 0, 1, 9]).await.unwrap();
        assert_eq!(&framed.next().await.unwrap().unwrap()[..], &[9]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_dropped() {
        use futures::SinkExt;
        let (io, peer) = pair();
        let codec = FrameCodec::new(1 << 20, 1 << 20);
        let mut framed = tarpc::tokio_util::codec::Framed::new(codec.guard(io), codec);
        // More than the pipe holds; the peer never reads.
        let e = framed.send(Bytes::from(vec![0u8; 64 << 10])).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        drop(peer);
    }
}
