//! The client's side of a browser WebSocket: its socket read into frames.
//!
//! The buffer starts with whatever arrived with the upgrade request and grows only as far as the
//! frames in flight need (bounded by the frame limit), so an idle session holds almost nothing.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, ProtocolError};
use bytes::BytesMut;
use futures_util::Stream;
use tokio::io::AsyncRead;

/// Bytes asked of the socket per read when the buffer has no room.
const READ_CHUNK: usize = 512;

/// Decodes a client's socket into WebSocket frames.
pub struct IncomingFrames<R> {
    io: R,
    buf: BytesMut,
    codec: Codec,
    ended: bool,
}

impl<R> IncomingFrames<R> {
    /// `early` holds bytes read together with the upgrade request.
    pub fn new(io: R, early: BytesMut, max_frame_bytes: usize) -> Self {
        IncomingFrames {
            io,
            buf: early,
            codec: Codec::new().max_size(max_frame_bytes),
            ended: false,
        }
    }
}

impl<R: AsyncRead + Unpin> Stream for IncomingFrames<R> {
    type Item = Result<Frame, ProtocolError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match this.codec.decode(&mut this.buf) {
                Ok(Some(frame)) => {
                    if this.buf.is_empty() && this.buf.capacity() > 4 * READ_CHUNK {
                        // A large frame passed: give its buffer back.
                        this.buf = BytesMut::new();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) => {}
                Err(e) => {
                    this.ended = true;
                    this.buf = BytesMut::new();
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if this.ended {
                return Poll::Ready(None);
            }
            if this.buf.capacity() - this.buf.len() < READ_CHUNK {
                this.buf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf) {
                Poll::Ready(Ok(0)) => this.ended = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(ProtocolError::Io(e))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
