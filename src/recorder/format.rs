//! The record format: what a segment file holds and how it is read back. Plain functions, no
//! I/O beyond the `Write`/`Read` given; the recorder's writer thread and `tickrelay record cat`
//! use them, and so can anyone's reader (docs/recording.md has one in ten lines of Python).
//!
//! A segment is a sequence of independent zstd frames; each holds whole records, so a segment cut
//! short (a crash, `kill -9`) is readable up to its last complete frame. A record is
//!
//! ```text
//! u32 LE  length of the rest
//! u8      kind: 0 header, 1 text frame, 2 binary frame, 3 gap, 4 account snapshot
//! u64 LE  receive time, nanoseconds since the Unix epoch
//! u8      length of the source, then the source (UTF-8): `stocks`, `crypto`, `options`,
//!         `news`, `trading:<account>`; empty for headers, gaps and a segment's snapshot
//! ...     the payload: the frame exactly as received; for a gap the number of frames lost
//!         (u64 LE); for a header or a snapshot, JSON
//! ```

use std::io::{self, Read, Write};

/// The kinds of record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The first record of a segment: `{"format":"tickrelay-record","version":1,...}`.
    Header = 0,
    /// An upstream frame that came as text (JSON).
    Text = 1,
    /// An upstream frame that came as binary (msgpack).
    Binary = 2,
    /// Frames were lost here (the disk fell behind): the payload counts them.
    Gap = 3,
    /// REST state (account, positions, open orders): every account's at a segment's start
    /// (empty source), or one account's after the daemon reloaded it (`trading:<account>`).
    Snapshot = 4,
}

impl Kind {
    fn of(byte: u8) -> Option<Kind> {
        Some(match byte {
            0 => Kind::Header,
            1 => Kind::Text,
            2 => Kind::Binary,
            3 => Kind::Gap,
            4 => Kind::Snapshot,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Header => "header",
            Kind::Text | Kind::Binary => "frame",
            Kind::Gap => "gap",
            Kind::Snapshot => "snapshot",
        }
    }
}

/// One record, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub received_ns: u64,
    pub source: String,
    pub payload: Vec<u8>,
}

/// Appends one record to `out`.
pub fn write_record(out: &mut Vec<u8>, kind: Kind, received_ns: u64, source: &str, payload: &[u8]) {
    let source = &source.as_bytes()[..source.len().min(255)];
    let len = 1 + 8 + 1 + source.len() + payload.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&received_ns.to_le_bytes());
    out.push(source.len() as u8);
    out.extend_from_slice(source);
    out.extend_from_slice(payload);
}

/// Compresses `records` (whole records) as one zstd frame and writes it: the unit a crash cannot
/// tear. Answers the bytes written.
pub fn write_frame(file: &mut impl Write, records: &[u8], level: i32) -> io::Result<usize> {
    let compressed = zstd::bulk::compress(records, level)?;
    file.write_all(&compressed)?;
    Ok(compressed.len())
}

/// Longest record a reader accepts: longer is corruption, not a frame (the upstream connections
/// refuse frames far below this).
pub const MAX_RECORD_BYTES: usize = 1 << 28;

/// Reads a segment record by record, holding one record at a time (a segment may decompress to
/// gigabytes). A segment cut short ends at its last complete record, and [`Reader::truncated`]
/// says so afterwards; a malformed record is an `InvalidData` error, after which it stops.
pub struct Reader<R: Read> {
    decoder: zstd::stream::read::Decoder<'static, io::BufReader<R>>,
    records: usize,
    truncated: bool,
    done: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(file: R) -> io::Result<Self> {
        Ok(Reader {
            decoder: zstd::stream::read::Decoder::new(file)?,
            records: 0,
            truncated: false,
            done: false,
        })
    }

    /// Whether the segment ended inside a record or a compressed frame.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Fills `buf` as far as the data goes: the bytes read, fewer at the end (or a cut).
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.decoder.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The decoder yields what it could decode before an incomplete frame, then this.
                Err(e)
                    if e.kind() == io::ErrorKind::UnexpectedEof
                        || e.kind() == io::ErrorKind::Other =>
                {
                    self.truncated = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn read_record(&mut self) -> io::Result<Option<Record>> {
        let mut len = [0u8; 4];
        match self.fill(&mut len)? {
            0 => return Ok(None),
            4 => {}
            _ => {
                self.truncated = true;
                return Ok(None);
            }
        }
        let len = u32::from_le_bytes(len) as usize;
        let malformed = |what: &str, records: usize| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("record {} is malformed ({what})", records + 1),
            )
        };
        if !(10..=MAX_RECORD_BYTES).contains(&len) {
            return Err(malformed("length", self.records));
        }
        let mut body = vec![0u8; len];
        if self.fill(&mut body)? < len {
            self.truncated = true;
            return Ok(None);
        }
        let kind = Kind::of(body[0]).ok_or_else(|| malformed("kind", self.records))?;
        let received_ns = u64::from_le_bytes(body[1..9].try_into().expect("8 bytes"));
        let source_len = body[9] as usize;
        let source = body
            .get(10..10 + source_len)
            .and_then(|s| std::str::from_utf8(s).ok())
            .ok_or_else(|| malformed("source", self.records))?
            .to_owned();
        body.drain(..10 + source_len);
        self.records += 1;
        Ok(Some(Record {
            kind,
            received_ns,
            source,
            payload: body,
        }))
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = io::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.read_record().transpose();
        if !matches!(next, Some(Ok(_))) {
            self.done = true;
        }
        next
    }
}

/// Reads the records of one segment. A segment cut short ends at its last complete record:
/// `truncated` says so. Any other error is returned.
pub fn read_segment(file: impl Read) -> io::Result<(Vec<Record>, bool)> {
    let mut reader = Reader::new(file)?;
    let records = reader.by_ref().collect::<io::Result<Vec<_>>>()?;
    Ok((records, reader.truncated()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<u8> {
        let mut out = Vec::new();
        write_record(&mut out, Kind::Header, 1, "", br#"{"version":1}"#);
        write_record(&mut out, Kind::Text, 2, "stocks", br#"[{"T":"q"}]"#);
        write_record(&mut out, Kind::Gap, 3, "", &7u64.to_le_bytes());
        out
    }

    #[test]
    fn records_round_trip_through_zstd_frames() {
        let mut file = Vec::new();
        write_frame(&mut file, &records(), 3).unwrap();
        let mut more = Vec::new();
        write_record(&mut more, Kind::Binary, 4, "options", &[0x91, 0x80]);
        write_frame(&mut file, &more, 3).unwrap();
        let (read, truncated) = read_segment(&file[..]).unwrap();
        assert!(!truncated);
        assert_eq!(read.len(), 4);
        assert_eq!(read[1].source, "stocks");
        assert_eq!(read[1].payload, br#"[{"T":"q"}]"#);
        assert_eq!(read[2].kind, Kind::Gap);
        assert_eq!(read[3].kind, Kind::Binary);
        assert_eq!(read[3].received_ns, 4);
    }

    #[test]
    fn a_segment_cut_short_reads_up_to_its_last_complete_frame() {
        let mut file = Vec::new();
        let first = write_frame(&mut file, &records(), 3).unwrap();
        let mut more = Vec::new();
        for i in 0..100 {
            write_record(&mut more, Kind::Text, 10 + i, "crypto", &[b'x'; 100]);
        }
        write_frame(&mut file, &more, 3).unwrap();
        for cut in [first + 1, file.len() - 1, file.len() - 7] {
            let (read, truncated) = read_segment(&file[..cut]).unwrap();
            assert!(truncated, "cut at {cut}");
            assert_eq!(
                read.len(),
                3,
                "the first frame's records, whole: cut at {cut}"
            );
        }
    }
}
