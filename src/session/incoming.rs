//! The client's side of a browser WebSocket: the request body decoded into WebSocket frames.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, ProtocolError};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

/// Decodes a request body stream into client frames, bounded by the codec's frame limit.
pub struct IncomingFrames<S> {
    payload: S,
    buf: BytesMut,
    codec: Codec,
    ended: bool,
}

impl<S> IncomingFrames<S> {
    pub fn new(payload: S, max_frame_bytes: usize) -> Self {
        IncomingFrames {
            payload,
            buf: BytesMut::new(),
            codec: Codec::new().max_size(max_frame_bytes),
            ended: false,
        }
    }
}

impl<S, E> Stream for IncomingFrames<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Frame, ProtocolError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match this.codec.decode(&mut this.buf) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(e) => {
                    this.ended = true;
                    this.buf.clear();
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => this.buf.extend_from_slice(&bytes),
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(ProtocolError::Io(std::io::Error::other(
                        e.to_string(),
                    )))));
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
