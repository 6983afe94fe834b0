//! The incremental reader of a client connection: its socket read into WebSocket frames within
//! the connection's [`InboundLimits`].
//!
//! Owns: the read buffer of one connection and its inbound limits. Every session kind (browser,
//! SDK market data, `/stream`) reads its socket through [`IncomingFrames`], so a limit added here
//! holds for every peer.
//!
//! The limits are checked on the frame *header*, before its payload is buffered: a frame that
//! declares more than the message limit, or that would take a fragmented message past it, or a
//! control frame that declares more than 125 bytes, ends the stream at once with
//! [`ReadError::TooLarge`] / [`ReadError::Protocol`] (the session closes with 1009 / 1002). A
//! message must arrive whole within `message_timeout` of its first byte, or the stream ends
//! with [`ReadError::Stalled`]: a peer that sends half a frame and stops holds nothing for long.
//!
//! After such an error the reader does not stop reading at once: it discards what still arrives
//! (at most [`LINGER`] and a few times the message limit) until the peer closes, so the socket is
//! not closed with unread input, which would reset it and lose the close frame on its way out.
//! The buffer grows only as far as the frame in flight needs and is given back after a large one,
//! so an idle connection holds almost nothing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, Item, ProtocolError};
use bytes::BytesMut;
use futures_util::Stream;
use tokio::io::AsyncRead;
use tokio::time::{sleep, Sleep};

/// Bytes asked of the socket per read when the buffer has no room.
const READ_CHUNK: usize = 512;
/// Largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;
/// How long a refused connection's input is still read and discarded, so that its close frame
/// goes out before the socket closes (also how long a closing session waits for the peer).
pub const LINGER: Duration = Duration::from_secs(2);
/// Discarding also ends after this much, or after twice the message limit if that is more.
const MIN_DRAIN: usize = 1024 * 1024;

/// What one connection may send.
#[derive(Debug, Clone, Copy)]
pub struct InboundLimits {
    /// Largest message, whole or as the sum of its fragments.
    pub max_message_bytes: usize,
    /// Most frames one fragmented message may take.
    pub max_fragments: usize,
    /// A message must be complete this long after its first byte arrived.
    pub message_timeout: Duration,
}

/// Why a connection's stream of frames ended.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A frame or fragmented message declared more than the limit (close 1009).
    #[error("a message of {declared} bytes (or {fragments} fragments) is over the limit of {limit} bytes")]
    TooLarge {
        declared: u64,
        fragments: usize,
        limit: usize,
    },
    /// A started message did not complete in time (close 1008).
    #[error("a message was not completed within {0:?} of its first byte")]
    Stalled(Duration),
    /// Anything else that breaks the WebSocket framing, or the socket itself (close 1002).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl ReadError {
    /// The close code and reason this error closes the connection with.
    pub fn close(&self) -> (u16, &'static str) {
        match self {
            ReadError::TooLarge { .. } => (1009, "message too large"),
            ReadError::Stalled(_) => (1008, "message not completed in time"),
            ReadError::Protocol(_) => (1002, "protocol error"),
        }
    }
}

/// The opcode and declared payload length of the frame at the start of `buf`, once its header
/// (up to the length, not the mask) has arrived.
fn peek_header(buf: &[u8]) -> Option<(u8, u64)> {
    let (&first, &second) = (buf.first()?, buf.get(1)?);
    let opcode = first & 0x0F;
    let len = match second & 0x7F {
        126 => u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
        127 => u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?),
        n => u64::from(n),
    };
    Some((opcode, len))
}

/// The fragmented message in progress: its bytes and frames so far.
#[derive(Debug, Default, Clone, Copy)]
struct Message {
    bytes: u64,
    fragments: usize,
}

/// The inbound limits as a plain struct: what each header and each decoded frame means for them.
#[derive(Debug)]
struct Admission {
    limits: InboundLimits,
    message: Option<Message>,
}

impl Admission {
    /// Whether the frame whose header is `(opcode, len)` may be buffered.
    fn check(&self, opcode: u8, len: u64) -> Result<(), ReadError> {
        let limit = self.limits.max_message_bytes;
        let too_large = |declared, fragments| ReadError::TooLarge {
            declared,
            fragments,
            limit,
        };
        match opcode {
            // Continuation: counts toward the message it continues.
            0x0 => {
                let so_far = self.message.unwrap_or_default();
                let declared = so_far.bytes.saturating_add(len);
                let fragments = so_far.fragments + 1;
                if declared > limit as u64 || fragments > self.limits.max_fragments {
                    return Err(too_large(declared, fragments));
                }
            }
            0x8..=0xF if len > MAX_CONTROL_PAYLOAD => {
                return Err(ProtocolError::InvalidLength(len as usize).into())
            }
            _ if len > limit as u64 => return Err(too_large(len, 1)),
            _ => {}
        }
        Ok(())
    }

    /// Follows fragmented messages through the decoded frames.
    fn decoded(&mut self, frame: &Frame) {
        let Frame::Continuation(item) = frame else {
            return;
        };
        match item {
            Item::FirstText(b) | Item::FirstBinary(b) => {
                self.message = Some(Message {
                    bytes: b.len() as u64,
                    fragments: 1,
                })
            }
            Item::Continue(b) => {
                let m = self.message.get_or_insert_with(Message::default);
                m.bytes += b.len() as u64;
                m.fragments += 1;
            }
            Item::Last(_) => self.message = None,
        }
    }

    /// Whether a message has started and not ended.
    fn in_message(&self) -> bool {
        self.message.is_some()
    }
}

/// Decodes a client's socket into WebSocket frames within the connection's [`InboundLimits`].
pub struct IncomingFrames<R> {
    io: R,
    buf: BytesMut,
    codec: Codec,
    admission: Admission,
    /// Armed while a message is incomplete (when it must be whole), or while draining (when
    /// draining ends).
    deadline: Option<Pin<Box<Sleep>>>,
    state: State,
}

/// Where the reader is in a connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    /// A fatal error was reported: input is read and discarded; this much more may be.
    Draining {
        left: usize,
    },
    Ended,
}

impl<R> IncomingFrames<R> {
    /// `early` holds bytes read together with the upgrade request.
    pub fn new(io: R, early: BytesMut, limits: InboundLimits) -> Self {
        IncomingFrames {
            io,
            buf: early,
            codec: Codec::new().max_size(limits.max_message_bytes),
            admission: Admission {
                limits,
                message: None,
            },
            deadline: None,
            state: State::Reading,
        }
    }

    /// Reports `err`, lets the buffer go and, unless the socket itself failed, starts discarding
    /// what still arrives.
    fn fail(&mut self, err: ReadError) -> Poll<Option<Result<Frame, ReadError>>> {
        self.buf = BytesMut::new();
        if matches!(err, ReadError::Protocol(ProtocolError::Io(_))) {
            self.state = State::Ended;
            self.deadline = None;
        } else {
            let left = self
                .admission
                .limits
                .max_message_bytes
                .saturating_mul(2)
                .max(MIN_DRAIN);
            self.state = State::Draining { left };
            self.deadline = Some(Box::pin(sleep(LINGER)));
        }
        Poll::Ready(Some(Err(err)))
    }

    /// Reads and discards until the peer closes, the socket fails, the drain allowance is used
    /// up or the linger deadline passes; then the stream ends.
    fn drain(
        &mut self,
        cx: &mut Context<'_>,
        mut left: usize,
    ) -> Poll<Option<Result<Frame, ReadError>>>
    where
        R: AsyncRead + Unpin,
    {
        let mut scratch = [0u8; 4096];
        loop {
            let mut chunk = tokio::io::ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut chunk) {
                Poll::Ready(Ok(()))
                    if !chunk.filled().is_empty() && chunk.filled().len() < left =>
                {
                    left -= chunk.filled().len();
                    self.state = State::Draining { left };
                }
                Poll::Ready(_) => break,
                Poll::Pending => {
                    let expired = self
                        .deadline
                        .as_mut()
                        .is_none_or(|d| d.as_mut().poll(cx).is_ready());
                    if !expired {
                        return Poll::Pending;
                    }
                    break;
                }
            }
        }
        self.state = State::Ended;
        self.deadline = None;
        Poll::Ready(None)
    }

    /// One decode step: checks the header of the frame at the buffer's start, then decodes it
    /// if it is complete.
    fn decode(&mut self) -> Result<Option<Frame>, ReadError> {
        if let Some((opcode, len)) = peek_header(&self.buf) {
            self.admission.check(opcode, len)?;
        }
        let Some(frame) = self.codec.decode(&mut self.buf)? else {
            return Ok(None);
        };
        self.admission.decoded(&frame);
        if self.buf.is_empty() && self.buf.capacity() > 4 * READ_CHUNK {
            // A large frame passed: give its buffer back.
            self.buf = BytesMut::new();
        }
        Ok(Some(frame))
    }
}

impl<R: AsyncRead + Unpin> Stream for IncomingFrames<R> {
    type Item = Result<Frame, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.state {
            State::Reading => {}
            State::Draining { left } => return this.drain(cx, left),
            State::Ended => return Poll::Ready(None),
        }
        loop {
            match this.decode() {
                Ok(Some(frame)) => {
                    // A complete frame outside a fragmented message meets the deadline; a
                    // partial one after it gets a deadline of its own.
                    if !this.admission.in_message() {
                        this.deadline = None;
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) => {}
                Err(e) => return this.fail(e),
            }
            if this.buf.capacity() - this.buf.len() < READ_CHUNK {
                this.buf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf) {
                Poll::Ready(Ok(0)) => {
                    this.state = State::Ended;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(ProtocolError::Io(e).into()),
                Poll::Pending => break,
            }
        }
        // Nothing complete: a started message must finish before its deadline.
        if this.buf.is_empty() && !this.admission.in_message() {
            this.deadline = None;
            return Poll::Pending;
        }
        let timeout = this.admission.limits.message_timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => this.fail(ReadError::Stalled(timeout)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn limits() -> InboundLimits {
        InboundLimits {
            max_message_bytes: 1000,
            max_fragments: 4,
            message_timeout: Duration::from_millis(50),
        }
    }

    /// A masked client frame header declaring `len` bytes.
    fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if len <= u64::from(u16::MAX) {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    /// A whole masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = header(fin, opcode, payload.len() as u64);
        let mask = [1, 2, 3, 4];
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn reader(bytes: Vec<u8>) -> IncomingFrames<&'static [u8]> {
        IncomingFrames::new(&[][..], BytesMut::from(&bytes[..]), limits())
    }

    #[test]
    fn headers_are_read_in_all_three_length_forms() {
        assert_eq!(peek_header(&header(true, 1, 5)), Some((1, 5)));
        assert_eq!(peek_header(&header(true, 2, 300)), Some((2, 300)));
        assert_eq!(peek_header(&header(true, 1, 1 << 40)), Some((1, 1 << 40)));
        assert_eq!(peek_header(&header(true, 1, 1 << 40)[..5]), None);
    }

    #[test]
    fn a_frame_declaring_more_than_the_limit_is_refused_before_its_payload() {
        // Only the header has arrived: nothing of the 2^40 bytes is buffered.
        let mut r = reader(header(true, 1, 1 << 40));
        assert!(matches!(
            r.decode(),
            Err(ReadError::TooLarge { declared, .. }) if declared == 1 << 40
        ));
    }

    #[test]
    fn a_frame_within_the_limit_decodes() {
        let mut r = reader(frame(true, 1, b"hello"));
        assert!(matches!(r.decode(), Ok(Some(Frame::Text(b))) if &b[..] == b"hello"));
    }

    #[test]
    fn fragments_count_toward_one_message_limit() {
        let mut bytes = frame(false, 1, &[b'a'; 600]);
        bytes.extend(header(false, 0, 600));
        let mut r = reader(bytes);
        assert!(matches!(r.decode(), Ok(Some(Frame::Continuation(_)))));
        assert!(matches!(
            r.decode(),
            Err(ReadError::TooLarge { declared: 1200, .. })
        ));
    }

    #[test]
    fn endless_empty_fragments_are_refused_by_count() {
        let mut bytes = frame(false, 1, b"");
        for _ in 0..4 {
            bytes.extend(frame(false, 0, b""));
        }
        let mut r = reader(bytes);
        for _ in 0..4 {
            assert!(matches!(r.decode(), Ok(Some(Frame::Continuation(_)))));
        }
        assert!(matches!(
            r.decode(),
            Err(ReadError::TooLarge { fragments: 5, .. })
        ));
    }

    #[test]
    fn a_finished_message_resets_the_count() {
        let mut bytes = frame(false, 1, &[b'a'; 600]);
        bytes.extend(frame(true, 0, &[b'b'; 300]));
        bytes.extend(frame(true, 1, &[b'c'; 900]));
        let mut r = reader(bytes);
        assert!(matches!(r.decode(), Ok(Some(_))));
        assert!(matches!(
            r.decode(),
            Ok(Some(Frame::Continuation(Item::Last(_))))
        ));
        assert!(matches!(r.decode(), Ok(Some(Frame::Text(_)))));
    }

    #[test]
    fn a_control_frame_declaring_more_than_125_bytes_is_a_protocol_error() {
        let mut r = reader(header(true, 0x9, 126));
        assert!(matches!(
            r.decode(),
            Err(ReadError::Protocol(ProtocolError::InvalidLength(126)))
        ));
    }

    #[actix_web::test]
    async fn a_started_frame_that_stalls_ends_the_stream() {
        // Half a frame, then a socket that never sends again.
        let (client, server) = tokio::io::duplex(64);
        let partial = frame(true, 1, b"hello world")[..8].to_vec();
        let mut r = IncomingFrames::new(server, BytesMut::from(&partial[..]), limits());
        let first = tokio::time::timeout(Duration::from_secs(5), r.next())
            .await
            .expect("the deadline ends the stream");
        assert!(matches!(first, Some(Err(ReadError::Stalled(_)))));
        // Then it reads on, discarding, until the peer closes.
        drop(client);
        assert!(r.next().await.is_none());
    }

    #[actix_web::test]
    async fn after_a_refusal_what_still_arrives_is_discarded_until_the_peer_closes() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut r = IncomingFrames::new(server, BytesMut::new(), limits());
        client.write_all(&header(true, 1, 1 << 40)).await.unwrap();
        assert!(matches!(
            r.next().await,
            Some(Err(ReadError::TooLarge { .. }))
        ));
        // The declared payload keeps coming: read and dropped, not buffered, not decoded.
        client.write_all(&[0u8; 30_000]).await.unwrap();
        drop(client);
        let end = tokio::time::timeout(Duration::from_secs(5), r.next()).await;
        assert!(matches!(end, Ok(None)), "ends at the peer's EOF");
        assert_eq!(r.buf.capacity(), 0, "nothing was buffered");
    }

    #[actix_web::test]
    async fn an_idle_connection_has_no_deadline() {
        let (_client, server) = tokio::io::duplex(64);
        let mut r = IncomingFrames::new(server, BytesMut::new(), limits());
        let waited = tokio::time::timeout(Duration::from_millis(200), r.next()).await;
        assert!(waited.is_err(), "nothing started, nothing times out");
    }
}
