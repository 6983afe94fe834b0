//! WebSocket framing (RFC 6455) by hand, for both ends: the flood is a server (reads masked
//! frames, writes unmasked ones), the clients are clients (the reverse).
//!
//! Hand-rolled rather than actix-http's `Codec` so a read buffer can be decoded in place without
//! copying each frame, which keeps thousands of clients cheap.

use std::io;

use tokio::net::TcpStream;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
pub const MAX_HEADER: usize = 14;

/// Free space a read asks for: small reads would cost a system call each.
const READ_CHUNK: usize = 4096;

/// Why the byte stream is not a valid WebSocket stream.
#[derive(Debug)]
pub enum WsError {
    TooLarge(usize),
    UnknownOpcode(u8),
    BadFragment,
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::TooLarge(n) => write!(f, "a {n}-byte WebSocket message is too large"),
            WsError::UnknownOpcode(op) => write!(f, "unknown WebSocket opcode {op:#x}"),
            WsError::BadFragment => f.write_str("continuation frame out of place"),
        }
    }
}

impl std::error::Error for WsError {}

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub header_len: usize,
    pub payload_len: usize,
}

/// Parses the header at the start of `buf`; `None` until all of it has arrived.
pub fn parse_head(buf: &[u8]) -> Option<Head> {
    let (&b0, rest) = buf.split_first()?;
    let &b1 = rest.first()?;
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut len) = match b1 & 0x7F {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let mask = if masked {
        let key: [u8; 4] = buf.get(len..len + 4)?.try_into().ok()?;
        len += 4;
        Some(key)
    } else {
        None
    };
    Some(Head {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0F,
        mask,
        header_len: len,
        payload_len,
    })
}

/// Writes a header for a final frame into `out`; returns its length.
pub fn write_head(
    out: &mut [u8; MAX_HEADER],
    opcode: u8,
    len: usize,
    mask: Option<[u8; 4]>,
) -> usize {
    out[0] = 0x80 | opcode;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut n = match len {
        0..=125 => {
            out[1] = mask_bit | len as u8;
            2
        }
        126..=0xFFFF => {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    if let Some(key) = mask {
        out[n..n + 4].copy_from_slice(&key);
        n += 4;
    }
    n
}

/// Appends one whole frame (masked when `mask` is given, as clients must send).
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    let mut head = [0; MAX_HEADER];
    let n = write_head(&mut head, opcode, payload.len(), mask);
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key);
    }
}

/// XORs `data` with the masking key (masking and unmasking are the same operation).
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let word = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i];
    }
}

/// A whole message, borrowed from the reader's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a [u8]),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    /// The close code, if the peer sent one.
    Close(Option<u16>),
}

/// Buffers bytes from a socket and hands out whole messages, reassembling fragments and
/// unmasking in place.
pub struct Reader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The opcode and bytes of a fragmented message being assembled.
    fragments: Option<(u8, Vec<u8>)>,
    /// The last message handed out was assembled in `fragments`: drop it on the next call.
    fragments_done: bool,
    max_message: usize,
}

impl Reader {
    pub fn new(capacity: usize, max_message: usize) -> Self {
        Reader {
            buf: vec![0; capacity.max(MAX_HEADER)],
            start: 0,
            end: 0,
            fragments: None,
            fragments_done: false,
            max_message,
        }
    }

    /// Adds bytes that arrived with the HTTP handshake.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Reads what the socket has without waiting: `Ok(0)` means the peer closed; `WouldBlock`
    /// means wait for readiness.
    pub fn fill(&mut self, stream: &TcpStream) -> io::Result<usize> {
        self.make_room(READ_CHUNK);
        let n = stream.try_read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Makes room for `extra` more bytes after the unread ones, and for the whole frame that has
    /// started: moves unread bytes to the front, and grows the buffer only when that is not enough.
    fn make_room(&mut self, extra: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let pending = self.end - self.start;
        // A frame over the limit is refused by `next_message`; never allocate for it.
        let frame_len = parse_head(&self.buf[self.start..self.end])
            .map(|h| h.header_len + h.payload_len)
            .filter(|&len| len <= self.max_message + MAX_HEADER)
            .unwrap_or(0);
        let needed = (pending + extra).max(frame_len);
        if self.start + needed <= self.buf.len() {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.start = 0;
        self.end = pending;
        if needed > self.buf.len() {
            let len = needed.max(self.buf.len() * 2);
            self.buf.resize(len, 0);
        }
    }

    /// The next whole message, or `None` until more bytes arrive.
    pub fn next_message(&mut self) -> Result<Option<Message<'_>>, WsError> {
        if self.fragments_done {
            self.fragments = None;
            self.fragments_done = false;
        }
        loop {
            let Some(head) = parse_head(&self.buf[self.start..self.end]) else {
                return Ok(None);
            };
            if head.payload_len > self.max_message {
                return Err(WsError::TooLarge(head.payload_len));
            }
            let begin = self.start + head.header_len;
            let end = begin + head.payload_len;
            if end > self.end {
                return Ok(None);
            }
            self.start = end;
            if let Some(key) = head.mask {
                apply_mask(&mut self.buf[begin..end], key);
            }
            match (head.opcode, head.fin) {
                (OP_TEXT, true) if self.fragments.is_none() => {
                    return Ok(Some(Message::Text(&self.buf[begin..end])))
                }
                (OP_BINARY, true) if self.fragments.is_none() => {
                    return Ok(Some(Message::Binary(&self.buf[begin..end])))
                }
                (OP_TEXT | OP_BINARY, false) if self.fragments.is_none() => {
                    self.fragments = Some((head.opcode, self.buf[begin..end].to_vec()));
                }
                (OP_CONTINUATION, fin) => {
                    let Some((_, bytes)) = self.fragments.as_mut() else {
                        return Err(WsError::BadFragment);
                    };
                    if bytes.len() + head.payload_len > self.max_message {
                        return Err(WsError::TooLarge(bytes.len() + head.payload_len));
                    }
                    bytes.extend_from_slice(&self.buf[begin..end]);
                    if fin {
                        return Ok(Some(self.assembled()));
                    }
                }
                (OP_TEXT | OP_BINARY, _) => return Err(WsError::BadFragment),
                (OP_PING, _) => return Ok(Some(Message::Ping(&self.buf[begin..end]))),
                (OP_PONG, _) => return Ok(Some(Message::Pong)),
                (OP_CLOSE, _) => {
                    let code = self.buf[begin..end]
                        .get(..2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]));
                    return Ok(Some(Message::Close(code)));
                }
                (op, _) => return Err(WsError::UnknownOpcode(op)),
            }
        }
    }

    /// The message just completed in `fragments` (dropped on the next call).
    fn assembled(&mut self) -> Message<'_> {
        self.fragments_done = true;
        match &self.fragments {
            Some((OP_BINARY, bytes)) => Message::Binary(bytes),
            Some((_, bytes)) => Message::Text(bytes),
            None => Message::Text(&[]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, opcode, payload, mask);
        if !fin {
            out[0] &= 0x7F;
        }
        out
    }

    #[test]
    fn headers_round_trip_for_every_length_form() {
        for len in [0, 125, 126, 65_535, 65_536] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut head = [0; MAX_HEADER];
                let n = write_head(&mut head, OP_BINARY, len, mask);
                let parsed = parse_head(&head[..n]).unwrap();
                assert_eq!(parsed.payload_len, len);
                assert_eq!(parsed.header_len, n);
                assert_eq!(parsed.mask, mask);
                assert!(parsed.fin);
                assert!(parse_head(&head[..n - 1]).is_none());
            }
        }
    }

    #[test]
    fn reader_unmasks_and_reassembles() {
        let key = Some([9, 8, 7, 6]);
        let mut bytes = frame(OP_TEXT, false, b"hello ", key);
        bytes.extend(frame(OP_PING, true, b"p", key));
        bytes.extend(frame(OP_CONTINUATION, true, b"world", key));
        bytes.extend(frame(OP_BINARY, true, &[1, 2, 3], None));
        bytes.extend(frame(OP_CLOSE, true, &[0x0F, 0xA8], None));
        let mut reader = Reader::new(16, 1 << 20);
        // Feed it in awkward pieces so frames straddle the buffer's edge.
        let mut got = Vec::new();
        for piece in bytes.chunks(5) {
            reader.extend(piece);
            while let Some(m) = reader.next_message().unwrap() {
                got.push(format!("{m:?}"));
            }
        }
        let world = Message::Text(b"hello world");
        assert_eq!(
            got,
            vec![
                format!("{:?}", Message::Ping(b"p")),
                format!("{world:?}"),
                format!("{:?}", Message::Binary(&[1, 2, 3])),
                format!("{:?}", Message::Close(Some(4008))),
            ]
        );
    }

    #[test]
    fn reader_rejects_oversized_and_orphan_frames() {
        let mut reader = Reader::new(64, 4);
        reader.extend(&frame(OP_TEXT, true, b"too long", None));
        assert!(matches!(reader.next_message(), Err(WsError::TooLarge(8))));
        let mut reader = Reader::new(64, 64);
        reader.extend(&frame(OP_CONTINUATION, true, b"x", None));
        assert!(matches!(reader.next_message(), Err(WsError::BadFragment)));
    }
}
