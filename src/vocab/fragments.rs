//! Reassembly of fragmented WebSocket messages, bounded by the largest accepted message: used by
//! every WebSocket reader, the upstream feeds' and the downstream peers' alike. A leaf.

use actix_http::ws::Item;
use bytes::{Bytes, BytesMut};

/// Why a fragment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("continuation frame without a first fragment")]
    Orphan,
    #[error("fragmented message larger than {0} bytes")]
    TooLarge(usize),
}

/// Reassembles fragmented messages, bounded by the largest accepted message.
#[derive(Debug)]
pub struct Reassembler {
    max_bytes: usize,
    /// Whether the message being assembled is binary, and its bytes so far.
    current: Option<(bool, BytesMut)>,
}

impl Reassembler {
    pub fn new(max_bytes: usize) -> Self {
        Reassembler {
            max_bytes,
            current: None,
        }
    }

    /// Adds a fragment; returns the whole message (binary?, bytes) after the last one.
    pub fn push(&mut self, item: Item) -> Result<Option<(bool, Bytes)>, FragmentError> {
        let (chunk, last) = match item {
            Item::FirstText(b) => {
                self.current = Some((false, BytesMut::new()));
                (b, false)
            }
            Item::FirstBinary(b) => {
                self.current = Some((true, BytesMut::new()));
                (b, false)
            }
            Item::Continue(b) => (b, false),
            Item::Last(b) => (b, true),
        };
        let Some((_, buf)) = self.current.as_mut() else {
            return Err(FragmentError::Orphan);
        };
        if buf.len() + chunk.len() > self.max_bytes {
            self.current = None;
            return Err(FragmentError::TooLarge(self.max_bytes));
        }
        buf.extend_from_slice(&chunk);
        if !last {
            return Ok(None);
        }
        Ok(self
            .current
            .take()
            .map(|(binary, buf)| (binary, buf.freeze())))
    }

    pub fn reset(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembles_fragments_and_bounds_them() {
        let mut r = Reassembler::new(10);
        assert_eq!(
            r.push(Item::FirstBinary(Bytes::from_static(b"ab"))),
            Ok(None)
        );
        assert_eq!(r.push(Item::Continue(Bytes::from_static(b"cd"))), Ok(None));
        assert_eq!(
            r.push(Item::Last(Bytes::new())),
            Ok(Some((true, Bytes::from_static(b"abcd"))))
        );
        assert!(
            r.push(Item::Last(Bytes::new())).is_err(),
            "no first fragment"
        );
        r.push(Item::FirstText(Bytes::from_static(b"0123456")))
            .unwrap();
        assert!(r
            .push(Item::Continue(Bytes::from_static(b"789ab")))
            .is_err());
    }
}
