//! Walking raw msgpack without decoding it: the byte slices of an array's elements, so that one
//! malformed element of a frame does not cost the others.

/// The byte slices of the elements of a msgpack array, or `None` if `data` is not exactly one
/// well-formed array.
pub fn msgpack_array_elements(data: &[u8]) -> Option<Vec<&[u8]>> {
    let (count, header) = match *data.first()? {
        m @ 0x90..=0x9f => (usize::from(m & 0x0f), 1),
        0xdc => (
            usize::from(u16::from_be_bytes(data.get(1..3)?.try_into().ok()?)),
            3,
        ),
        0xdd => (
            u32::from_be_bytes(data.get(1..5)?.try_into().ok()?) as usize,
            5,
        ),
        _ => return None,
    };
    let mut out = Vec::with_capacity(count.min(data.len()));
    let mut rest = &data[header..];
    for _ in 0..count {
        let len = msgpack_value_len(rest)?;
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    rest.is_empty().then_some(out)
}

/// The length in bytes of the one msgpack value at the start of `data`, or `None` when it is
/// truncated or malformed. Iterative, so hostile nesting cannot overflow the stack.
pub fn msgpack_value_len(data: &[u8]) -> Option<usize> {
    let mut pos = 0usize;
    let mut pending = 1usize; // values still to skip
    while pending > 0 {
        pending -= 1;
        let marker = *data.get(pos)?;
        let be = |at: usize, n: usize| -> Option<usize> {
            let bytes = data.get(at..at + n)?;
            Some(
                bytes
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
            )
        };
        let (head, body, children) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, 0),
            0x80..=0x8f => (1, 0, 2 * usize::from(marker & 0x0f)),
            0x90..=0x9f => (1, 0, usize::from(marker & 0x0f)),
            0xa0..=0xbf => (1, usize::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => (2, be(pos + 1, 1)?, 0),
            0xc5 | 0xda => (3, be(pos + 1, 2)?, 0),
            0xc6 | 0xdb => (5, be(pos + 1, 4)?, 0),
            0xc7 => (3, be(pos + 1, 1)?, 0),
            0xc8 => (4, be(pos + 1, 2)?, 0),
            0xc9 => (6, be(pos + 1, 4)?, 0),
            0xca | 0xce | 0xd2 => (5, 0, 0),
            0xcb | 0xcf | 0xd3 => (9, 0, 0),
            0xcc | 0xd0 => (2, 0, 0),
            0xcd | 0xd1 => (3, 0, 0),
            0xd4 => (3, 0, 0),
            0xd5 => (4, 0, 0),
            0xd6 => (6, 0, 0),
            0xd7 => (10, 0, 0),
            0xd8 => (18, 0, 0),
            0xdc => (3, 0, be(pos + 1, 2)?),
            0xdd => (5, 0, be(pos + 1, 4)?),
            0xde => (3, 0, 2 * be(pos + 1, 2)?),
            0xdf => (5, 0, 2 * be(pos + 1, 4)?),
            0xc1 => return None,
        };
        pos = pos.checked_add(head)?.checked_add(body)?;
        if pos > data.len() {
            return None;
        }
        // Every value takes at least one byte: more pending values than bytes left is malformed.
        pending = pending.checked_add(children)?;
        if pending > data.len() - pos {
            return None;
        }
    }
    Some(pos)
}
