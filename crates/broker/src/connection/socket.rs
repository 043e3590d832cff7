//! The two kinds of socket a connection runs over, and their halves.
//!
//! A plain TCP socket is the fast path: the reader reads it by readiness (one `recv` per
//! event), writes its own acknowledgements with a non-blocking `send`, and an idle
//! connection parks its socket in the listener's [`Lot`]. Any other byte stream (TLS,
//! MQTT over WebSocket: see [`Duplex`]) is read and written through tokio's `AsyncRead`
//! and `AsyncWrite`, its acknowledgements go through the writer task, and it never parks
//! (its state, the TLS session or the WebSocket framing, lives in the stream and cannot
//! be handed to epoll).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadHalf, WriteHalf,
};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::park::Lot;

/// What an idle stream connection lends its read while it waits.
const IDLE_READ: usize = 256;

/// A connected byte stream the broker serves MQTT over, other than a plain TCP socket:
/// a TLS session, a WebSocket carrying binary frames. Anything that is `AsyncRead +
/// AsyncWrite` qualifies.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Duplex for T {}

/// A connection's socket, whole.
pub(crate) enum Socket {
    /// A plain TCP socket, which parks in `lot` when idle.
    Tcp { stream: TcpStream, lot: Arc<Lot> },
    /// Any other stream; it never parks.
    Stream(Box<dyn Duplex>),
}

/// The half of a socket the reader reads.
pub(super) enum ReadSide {
    Tcp { half: OwnedReadHalf, lot: Arc<Lot> },
    Stream(ReadHalf<Box<dyn Duplex>>),
}

/// The half of a socket the writer writes.
pub(super) enum WriteSide {
    Tcp(OwnedWriteHalf),
    Stream(WriteHalf<Box<dyn Duplex>>),
}

impl Socket {
    pub(super) fn split(self) -> (ReadSide, WriteSide) {
        match self {
            Socket::Tcp { stream, lot } => {
                let (half, write) = stream.into_split();
                (ReadSide::Tcp { half, lot }, WriteSide::Tcp(write))
            }
            Socket::Stream(stream) => {
                let (read, write) = tokio::io::split(stream);
                (ReadSide::Stream(read), WriteSide::Stream(write))
            }
        }
    }
}

impl ReadSide {
    /// The TCP socket, for the reader's own non-blocking writes; `None` for other
    /// streams, whose writes all go through the writer.
    pub(super) fn tcp(&self) -> Option<&TcpStream> {
        match self {
            ReadSide::Tcp { half, .. } => Some(half.as_ref()),
            ReadSide::Stream(_) => None,
        }
    }

    /// Whether the connection may park when idle.
    pub(super) fn may_park(&self) -> bool {
        matches!(self, ReadSide::Tcp { .. })
    }

    /// The lot a TCP connection parks in.
    pub(super) fn lot(&self) -> Option<&Arc<Lot>> {
        match self {
            ReadSide::Tcp { lot, .. } => Some(lot),
            ReadSide::Stream(_) => None,
        }
    }

    /// The socket whole again, if both halves are TCP (to park); the halves back
    /// otherwise.
    pub(super) fn reunite(
        self,
        writer: WriteSide,
    ) -> Result<(TcpStream, Arc<Lot>), (ReadSide, WriteSide)> {
        match (self, writer) {
            (ReadSide::Tcp { half, lot }, WriteSide::Tcp(write)) => match half.reunite(write) {
                Ok(stream) => Ok((stream, lot)),
                Err(tokio::net::tcp::ReuniteError(half, write)) => {
                    Err((ReadSide::Tcp { half, lot }, WriteSide::Tcp(write)))
                }
            },
            (read, write) => Err((read, write)),
        }
    }

    /// Reads what the socket has into `buffer`, asking for about `chunk` bytes. An idle
    /// connection holds (almost) no read buffer: for TCP an empty buffer is released
    /// before waiting and a fresh one reserved once data is ready; a stream reads what
    /// it has at once into a full buffer, and waits with a small one. The old
    /// allocation usually lives on anyway, in payloads still being delivered.
    pub(super) async fn read_some(
        &mut self,
        buffer: &mut BytesMut,
        chunk: usize,
    ) -> io::Result<usize> {
        match self {
            ReadSide::Tcp { half, .. } => read_tcp(half, buffer, chunk).await,
            ReadSide::Stream(stream) => {
                if buffer.capacity() - buffer.len() < chunk / 4 {
                    buffer.reserve(chunk);
                }
                // Whatever the stream has now goes into the full-sized buffer...
                {
                    let read = std::pin::pin!(stream.read_buf(&mut *buffer));
                    let mut now = Context::from_waker(std::task::Waker::noop());
                    if let Poll::Ready(read) = read.poll(&mut now) {
                        return read;
                    }
                }
                // ... but an idle connection waits with a small one: a stream cannot say it
                // is readable before a read, so some buffer must be lent to the wait.
                if buffer.is_empty() {
                    *buffer = BytesMut::with_capacity(IDLE_READ);
                }
                stream.read_buf(buffer).await
            }
        }
    }
}

/// Reads a TCP socket by readiness; see [`ReadSide::read_some`].
async fn read_tcp(
    reader: &OwnedReadHalf,
    buffer: &mut BytesMut,
    chunk: usize,
) -> io::Result<usize> {
    loop {
        if buffer.is_empty() && buffer.capacity() > 0 {
            *buffer = BytesMut::new();
        }
        reader.readable().await?;
        if buffer.capacity() - buffer.len() < chunk / 4 {
            buffer.reserve(chunk);
        }
        let room = buffer.capacity() - buffer.len();
        let mut short = 0;
        // A read that did not fill the room drained the socket: answering `WouldBlock`
        // from the closure makes Tokio clear the readiness it saw, so the next
        // `readable()` waits for the next event instead of a `recv` that finds nothing
        // (one syscall saved per read, as Tokio's own `poll_read` does). Data that came
        // after our `recv` raised a newer event, which the clearing leaves alone.
        let read = reader.as_ref().try_io(Interest::READABLE, || {
            let read = reader.try_read_buf(buffer)?;
            if read > 0 && read < room {
                short = read;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(read)
        });
        match read {
            Ok(read) => return Ok(read),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock && short > 0 => {
                return Ok(short);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
}

impl WriteSide {
    /// Writes `bytes` and flushes them: a TLS or WebSocket stream may buffer (a TCP
    /// socket's flush does nothing).
    pub(super) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await?;
        self.flush().await
    }
}

impl AsyncWrite for WriteSide {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteSide::Tcp(half) => Pin::new(half).poll_write(cx, buf),
            WriteSide::Stream(half) => Pin::new(half).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteSide::Tcp(half) => Pin::new(half).poll_flush(cx),
            WriteSide::Stream(half) => Pin::new(half).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteSide::Tcp(half) => Pin::new(half).poll_shutdown(cx),
            WriteSide::Stream(half) => Pin::new(half).poll_shutdown(cx),
        }
    }
}
