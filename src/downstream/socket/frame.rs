//! WebSocket frame encoding for what the server sends: unmasked, unfragmented frames, written
//! straight into the buffer of one socket write. A leaf: the outbox encodes with it, the hub and
//! the sessions name its opcodes.

use bytes::{BufMut, BytesMut};

/// WebSocket opcodes of the frames a server sends.
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Appends one unmasked, unfragmented server frame.
pub fn encode(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    let len = payload.len();
    out.reserve(len + 10);
    out.put_u8(0x80 | opcode);
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
    out.put_slice(payload);
}
