//! The on-disk format, byte by byte (see `docs/format.md`). All integers are little-endian.
//!
//! A segment file starts with a 64-byte header, followed by records. Each record starts at an
//! 8-byte-aligned offset and is zero-padded to the next multiple of 8.
//!
//! ```text
//! segment header (64 bytes)
//!   0  magic "STRATALG"            8
//!   8  format version (u32) = 1    4
//!  12  header length (u32) = 64    4
//!  16  salt (u64, random)          8
//!  24  segment number (u64)        8
//!  32  first position (u64)        8
//!  40  created at, µs (i64)        8
//!  48  flags (u8)                  1   bit 0 = batch marks (HEADER_FLAG_BATCH_MARKS): the
//!                                      segment's records carry FLAG_BATCH_START; other
//!                                      bits zero
//!  49  reserved, zero              11
//!  60  CRC32C of bytes 0..60       4
//!
//! record (64-byte header + variable part + padding)
//!   0  record length (u32), without padding
//!   4  CRC32C of salt (8 bytes LE) ++ record bytes 8..length
//!   8  position (u64)
//!  16  recorded at, µs since epoch (i64)
//!  24  event id (16 bytes, UUID big-endian as in RFC 9562)
//!  40  stream version (u64)
//!  48  data length (u32)
//!  52  metadata length (u32)
//!  56  stream id length (u16)
//!  58  event type length (u16)
//!  60  content type length (u8)
//!  61  flags (u8): bit 0 = COMMIT, set on the last event of an append;
//!      bit 1 = BATCH_START, set on the first record of a write batch (only in segments
//!      with batch marks); other bits zero (a record with any other bit set is refused)
//!  62  reserved, zero (u16)
//!  64  stream id, event type, content type, metadata, data
//! ```

use strata_core::{StreamId, Uuid};

/// Magic bytes at the start of every segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"STRATALG";
/// The format version this code writes, and reads with [`SCAVENGED_FORMAT_VERSION`].
pub const FORMAT_VERSION: u32 = 1;
/// The format version of a segment a scavenge rewrote: version 1 whose records may skip
/// positions and stream versions (those of the events removed). Versions of Strata that
/// read only version 1 refuse such a segment rather than misread it.
pub const SCAVENGED_FORMAT_VERSION: u32 = 2;
/// Bytes in a segment header.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// Bytes in a record header.
pub const RECORD_HEADER_BYTES: usize = 64;
/// Records start at multiples of this.
pub const RECORD_ALIGN_BYTES: usize = 8;
/// Flag: the last record of an append. An append is visible only when its COMMIT is stored.
pub const FLAG_COMMIT: u8 = 1;
/// Flag: the first record of a write batch (one write + fdatasync), set in segments whose
/// header has [`SegmentHeader::batch_marks`]. A batch is written only after the previous one
/// was made durable, so a valid batch start after a damaged record proves that record was
/// durable once (corruption); without one, the damage is the torn last batch.
pub const FLAG_BATCH_START: u8 = 2;
/// Header byte 48, bit 0: the segment's records carry [`FLAG_BATCH_START`].
const HEADER_FLAG_BATCH_MARKS: u8 = 1;

/// The versions a scavenge removed from a segment, per stream (one run each): what a
/// scavenged segment holds after its records, at [`SegmentHeader::runs_at`], so that the
/// segment alone tells its streams' versions (a stream may have no event left in it).
pub type RemovedRuns = Vec<(String, std::ops::Range<u64>)>;

/// Encodes `runs` as a scavenged segment keeps them, salted with `salt`: a 4-byte length
/// (of what follows it but the CRC), a CRC32C of the salt and those bytes, the count of
/// runs (u32), then per run its stream id (u16 length, UTF-8), its first and its end
/// version (u64 each); zero padding to a multiple of 8.
pub fn encode_removed_runs(runs: &[(String, std::ops::Range<u64>)], salt: u64, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    body.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    for (stream, versions) in runs {
        body.extend_from_slice(&(stream.len() as u16).to_le_bytes());
        body.extend_from_slice(stream.as_bytes());
        body.extend_from_slice(&versions.start.to_le_bytes());
        body.extend_from_slice(&versions.end.to_le_bytes());
    }
    let mut crc = crc32c::crc32c(&salt.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &body);
    let start = out.len();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&body);
    out.resize(
        start + (8 + body.len()).next_multiple_of(RECORD_ALIGN_BYTES),
        0,
    );
}

/// Decodes the removed runs `b` (from [`SegmentHeader::runs_at`] to the end of the
/// segment) of a segment salted with `salt`, checking them whole: length, CRC, stream ids,
/// and each run holding at least one version.
pub fn decode_removed_runs(b: &[u8], salt: u64) -> Result<RemovedRuns, String> {
    let cut = || "the segment's removed runs are cut short".to_owned();
    if b.len() < 8 {
        return Err(cut());
    }
    let len = u32_at(b, 0) as usize;
    let body = b.get(8..8 + len).ok_or_else(cut)?;
    if b.len() != (8 + len).next_multiple_of(RECORD_ALIGN_BYTES) {
        return Err("the segment does not end with its removed runs".to_owned());
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&salt.to_le_bytes()), body);
    if crc != u32_at(b, 4) {
        return Err("the segment's removed runs fail their CRC".to_owned());
    }
    if body.len() < 4 {
        return Err(cut());
    }
    let count = u32_at(body, 0) as usize;
    let mut at = 4;
    let mut runs = Vec::with_capacity(count.min(body.len() / 18));
    for _ in 0..count {
        let n = body
            .get(at..at + 2)
            .map(|b| u16_at(b, 0) as usize)
            .ok_or_else(cut)?;
        let name = body.get(at + 2..at + 2 + n).ok_or_else(cut)?;
        let stream = std::str::from_utf8(name)
            .ok()
            .filter(|s| StreamId::new(*s).is_ok())
            .ok_or("a removed run names no valid stream")?;
        let v = body.get(at + 2 + n..at + 18 + n).ok_or_else(cut)?;
        let versions = u64_at(v, 0)..u64_at(v, 8);
        if versions.is_empty() {
            return Err(format!("stream {stream}'s removed run is empty"));
        }
        runs.push((stream.to_owned(), versions));
        at += 18 + n;
    }
    if at != body.len() {
        return Err("the segment's removed runs hold more than their count".to_owned());
    }
    Ok(runs)
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Random per segment; mixed into every record CRC so stale bytes never validate.
    pub salt: u64,
    /// The segment's number (its file name).
    pub segment_no: u64,
    /// Position of the first record the segment holds.
    pub first_position: u64,
    /// When the segment was created, µs since the epoch.
    pub created_at_us: i64,
    /// Its records mark where each write batch starts ([`FLAG_BATCH_START`]). Segments
    /// created before the marks existed have none, and are never preallocated.
    pub batch_marks: bool,
    /// A scavenge rewrote it ([`SCAVENGED_FORMAT_VERSION`]): its records hold increasing
    /// positions and stream versions with gaps where events were removed; `first_position`
    /// is still the first position it covers (whose event may be gone).
    pub scavenged: bool,
    /// In a scavenged segment, where its records end and its removed runs start (see
    /// [`encode_removed_runs`]): header bytes 52..60. Zero in the others.
    pub runs_at: u64,
}

impl SegmentHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES as usize];
        b[0..8].copy_from_slice(SEGMENT_MAGIC);
        let version = match self.scavenged {
            true => SCAVENGED_FORMAT_VERSION,
            false => FORMAT_VERSION,
        };
        b[8..12].copy_from_slice(&version.to_le_bytes());
        b[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.salt.to_le_bytes());
        b[24..32].copy_from_slice(&self.segment_no.to_le_bytes());
        b[32..40].copy_from_slice(&self.first_position.to_le_bytes());
        b[40..48].copy_from_slice(&self.created_at_us.to_le_bytes());
        if self.batch_marks {
            b[48] = HEADER_FLAG_BATCH_MARKS;
        }
        if self.scavenged {
            b[52..60].copy_from_slice(&self.runs_at.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        if b.len() < SEGMENT_HEADER_BYTES as usize {
            return Err(format!("segment header is {} bytes, expected 64", b.len()));
        }
        if &b[0..8] != SEGMENT_MAGIC {
            return Err("not a Strata segment (bad magic)".to_owned());
        }
        let crc = u32_at(b, 60);
        if crc32c::crc32c(&b[0..60]) != crc {
            return Err("segment header CRC mismatch".to_owned());
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION && version != SCAVENGED_FORMAT_VERSION {
            return Err(format!(
                "segment format version {version} is not supported (this build reads {FORMAT_VERSION} and {SCAVENGED_FORMAT_VERSION})"
            ));
        }
        if u32_at(b, 12) as u64 != SEGMENT_HEADER_BYTES {
            return Err("unexpected segment header length".to_owned());
        }
        Ok(SegmentHeader {
            salt: u64_at(b, 16),
            segment_no: u64_at(b, 24),
            first_position: u64_at(b, 32),
            created_at_us: u64_at(b, 40) as i64,
            batch_marks: b[48] & HEADER_FLAG_BATCH_MARKS != 0,
            scavenged: version == SCAVENGED_FORMAT_VERSION,
            runs_at: match version {
                SCAVENGED_FORMAT_VERSION => {
                    let at = u64_at(b, 52);
                    if at < SEGMENT_HEADER_BYTES || !at.is_multiple_of(RECORD_ALIGN_BYTES as u64) {
                        return Err(
                            "a scavenged segment's runs are not after its header".to_owned()
                        );
                    }
                    at
                }
                _ => 0,
            },
        })
    }
}

/// One event as a record, borrowed for encoding.
pub struct RecordRef<'a> {
    /// Global position.
    pub position: u64,
    /// Recorded-at, µs.
    pub recorded_at_us: i64,
    /// Event id.
    pub event_id: Uuid,
    /// Stream version.
    pub stream_version: u64,
    /// Stream id.
    pub stream_id: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Content type.
    pub content_type: &'a str,
    /// Encoded metadata.
    pub metadata: &'a [u8],
    /// Payload.
    pub data: &'a [u8],
    /// Flags.
    pub flags: u8,
}

/// Bytes a record with these variable parts occupies, padding included.
pub fn padded_len(unpadded: usize) -> usize {
    unpadded.div_ceil(RECORD_ALIGN_BYTES) * RECORD_ALIGN_BYTES
}

impl RecordRef<'_> {
    /// Record length without padding.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_BYTES
            + self.stream_id.len()
            + self.event_type.len()
            + self.content_type.len()
            + self.metadata.len()
            + self.data.len()
    }

    /// Appends the encoded, padded record to `out`.
    pub fn encode_into(&self, salt: u64, out: &mut Vec<u8>) {
        let len = self.encoded_len();
        let start = out.len();
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&[0u8; 4]); // CRC, filled below
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.recorded_at_us.to_le_bytes());
        out.extend_from_slice(self.event_id.as_bytes());
        out.extend_from_slice(&self.stream_version.to_le_bytes());
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.stream_id.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.event_type.len() as u16).to_le_bytes());
        out.push(self.content_type.len() as u8);
        out.push(self.flags);
        out.extend_from_slice(&[0u8; 2]);
        out.extend_from_slice(self.stream_id.as_bytes());
        out.extend_from_slice(self.event_type.as_bytes());
        out.extend_from_slice(self.content_type.as_bytes());
        out.extend_from_slice(self.metadata);
        out.extend_from_slice(self.data);
        let crc = record_crc(salt, &out[start + 8..start + len]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        out.resize(start + padded_len(len), 0);
    }
}

pub(crate) fn record_crc(salt: u64, body: &[u8]) -> u32 {
    let c = crc32c::crc32c(&salt.to_le_bytes());
    crc32c::crc32c_append(c, body)
}

/// A record decoded from bytes, borrowing them.
#[derive(Debug)]
pub struct DecodedRecord<'a> {
    /// Global position.
    pub position: u64,
    /// Recorded-at, µs.
    pub recorded_at_us: i64,
    /// Event id.
    pub event_id: Uuid,
    /// Stream version.
    pub stream_version: u64,
    /// Stream id.
    pub stream_id: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Content type.
    pub content_type: &'a str,
    /// Encoded metadata.
    pub metadata: &'a [u8],
    /// Payload.
    pub data: &'a [u8],
    /// Flags.
    pub flags: u8,
    /// Bytes the record occupies, padding included.
    pub padded_len: usize,
}

/// Why bytes did not decode as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the record needs; `needed` is the full padded length when known.
    Short {
        /// Bytes needed for the whole record, when the length field could be read.
        needed: Option<usize>,
    },
    /// The bytes are not a valid record.
    Invalid(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Short { needed: Some(n) } => {
                write!(f, "the record is cut short (it needs {n} bytes)")
            }
            DecodeError::Short { needed: None } => f.write_str("the record is cut short"),
            DecodeError::Invalid(reason) => f.write_str(reason),
        }
    }
}

/// The record length stored at the start of `b`, if `b` holds at least 4 bytes and the value
/// is plausible.
pub fn peek_len(b: &[u8]) -> Option<usize> {
    if b.len() < 4 {
        return None;
    }
    let len = u32_at(b, 0) as usize;
    (len >= RECORD_HEADER_BYTES).then_some(len)
}

/// Decodes the record at the start of `b`, checking length, CRC and structure.
pub fn decode_record(salt: u64, b: &[u8]) -> Result<DecodedRecord<'_>, DecodeError> {
    if b.len() < RECORD_HEADER_BYTES {
        return Err(DecodeError::Short {
            needed: peek_len(b).map(padded_len),
        });
    }
    let len = u32_at(b, 0) as usize;
    if len < RECORD_HEADER_BYTES {
        return Err(DecodeError::Invalid(format!(
            "record length {len} is too small"
        )));
    }
    let data_len = u32_at(b, 48) as usize;
    let meta_len = u32_at(b, 52) as usize;
    let sid_len = u16_at(b, 56) as usize;
    let et_len = u16_at(b, 58) as usize;
    let ct_len = b[60] as usize;
    let flags = b[61];
    let expected = RECORD_HEADER_BYTES + sid_len + et_len + ct_len + meta_len + data_len;
    if expected != len {
        return Err(DecodeError::Invalid(format!(
            "record length {len} does not match its parts ({expected})"
        )));
    }
    if b.len() < len {
        return Err(DecodeError::Short {
            needed: Some(padded_len(len)),
        });
    }
    let crc = u32_at(b, 4);
    if record_crc(salt, &b[8..len]) != crc {
        return Err(DecodeError::Invalid("record CRC mismatch".to_owned()));
    }
    if u16_at(b, 62) != 0 || flags & !(FLAG_COMMIT | FLAG_BATCH_START) != 0 {
        return Err(DecodeError::Invalid("unknown record flags".to_owned()));
    }
    let mut at = RECORD_HEADER_BYTES;
    let mut take = |n: usize| {
        let s = &b[at..at + n];
        at += n;
        s
    };
    let stream_id = std::str::from_utf8(take(sid_len))
        .map_err(|_| DecodeError::Invalid("stream id is not UTF-8".to_owned()))?;
    let event_type = std::str::from_utf8(take(et_len))
        .map_err(|_| DecodeError::Invalid("event type is not UTF-8".to_owned()))?;
    let content_type = std::str::from_utf8(take(ct_len))
        .map_err(|_| DecodeError::Invalid("content type is not UTF-8".to_owned()))?;
    let metadata = take(meta_len);
    let data = take(data_len);
    let mut id = [0u8; 16];
    id.copy_from_slice(&b[24..40]);
    Ok(DecodedRecord {
        position: u64_at(b, 8),
        recorded_at_us: u64_at(b, 16) as i64,
        event_id: Uuid::from_bytes(id),
        stream_version: u64_at(b, 40),
        stream_id,
        event_type,
        content_type,
        metadata,
        data,
        flags,
        padded_len: padded_len(len),
    })
}

impl<'a> DecodedRecord<'a> {
    /// The record as one to encode again (with the same salt, the same bytes).
    pub fn to_ref(&self) -> RecordRef<'a> {
        RecordRef {
            position: self.position,
            recorded_at_us: self.recorded_at_us,
            event_id: self.event_id,
            stream_version: self.stream_version,
            stream_id: self.stream_id,
            event_type: self.event_type,
            content_type: self.content_type,
            metadata: self.metadata,
            data: self.data,
            flags: self.flags,
        }
    }

    /// Whether this record ends its append.
    pub fn is_commit(&self) -> bool {
        self.flags & FLAG_COMMIT != 0
    }

    /// Whether this record starts a write batch.
    pub fn starts_batch(&self) -> bool {
        self.flags & FLAG_BATCH_START != 0
    }

    /// Converts into an owned event.
    pub fn to_event(&self) -> Result<strata_core::RecordedEvent, String> {
        Ok(strata_core::RecordedEvent {
            event_id: self.event_id,
            stream_id: StreamId::new(self.stream_id).map_err(|e| e.to_string())?,
            stream_version: self.stream_version,
            position: strata_core::Position(self.position),
            recorded_at: strata_core::timestamp_from_micros(self.recorded_at_us),
            event_type: self.event_type.to_owned(),
            content_type: self.content_type.to_owned(),
            data: self.data.to_vec(),
            metadata: strata_core::Metadata::from_bytes(self.metadata)
                .map_err(|e| format!("metadata is not JSON: {e}"))?,
        })
    }
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}
/// The UUID in the 16 bytes of `b` at `at`.
pub(crate) fn uuid_at(b: &[u8], at: usize) -> strata_core::Uuid {
    let mut id = [0u8; 16];
    id.copy_from_slice(&b[at..at + 16]);
    strata_core::Uuid::from_bytes(id)
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(flags: u8) -> Vec<u8> {
        let mut out = Vec::new();
        RecordRef {
            position: 7,
            recorded_at_us: 1_700_000_000_000_000,
            event_id: Uuid::from_u128(42),
            stream_version: 3,
            stream_id: "account-1",
            event_type: "MoneyDeposited",
            content_type: "application/json",
            metadata: b"{\"a\":1}",
            data: b"{\"amount\":5}",
            flags,
        }
        .encode_into(99, &mut out);
        out
    }

    #[test]
    fn record_round_trip() {
        let b = sample(FLAG_COMMIT);
        assert_eq!(b.len() % RECORD_ALIGN_BYTES, 0);
        let r = decode_record(99, &b).unwrap();
        assert_eq!(r.position, 7);
        assert_eq!(r.stream_id, "account-1");
        assert_eq!(r.data, b"{\"amount\":5}");
        assert!(r.is_commit());
        assert_eq!(r.padded_len, b.len());
    }

    #[test]
    fn other_salt_does_not_validate() {
        let b = sample(0);
        assert!(matches!(
            decode_record(98, &b),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let b = sample(FLAG_COMMIT);
        let len = u32_at(&b, 0) as usize;
        for i in 0..len {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                assert!(decode_record(99, &c).is_err(), "flip at byte {i} bit {bit}");
            }
        }
    }

    /// Removed runs cut short, lying about their length or count, or naming no valid stream
    /// are errors, never a panic, even under a good CRC.
    #[test]
    fn removed_runs_refuse_what_does_not_fit() {
        let salt = 42u64;
        let mut good = Vec::new();
        encode_removed_runs(&[("account-1".to_owned(), 1..9)], salt, &mut good);
        assert_eq!(
            decode_removed_runs(&good, salt).unwrap(),
            vec![("account-1".to_owned(), 1..9)]
        );
        let with_crc = |body: &[u8]| {
            let mut b = (body.len() as u32).to_le_bytes().to_vec();
            let crc = crc32c::crc32c_append(crc32c::crc32c(&salt.to_le_bytes()), body);
            b.extend_from_slice(&crc.to_le_bytes());
            b.extend_from_slice(body);
            b.resize(b.len().next_multiple_of(8), 0);
            b
        };
        for body in [
            &[][..],
            &[1, 0][..],
            &[1, 0, 0, 0][..],
            &[1, 0, 0, 0, 200, 0, b'a'][..],
            &[
                1, 0, 0, 0, 1, 0, b'$', 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
            ][..],
            &[
                1, 0, 0, 0, 1, 0, b'a', 5, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0,
            ][..],
        ] {
            assert!(
                decode_removed_runs(&with_crc(body), salt).is_err(),
                "{body:?}"
            );
        }
        assert!(
            decode_removed_runs(&good, salt + 1).is_err(),
            "another salt"
        );
        assert!(
            decode_removed_runs(&good[..good.len() - 8], salt).is_err(),
            "cut"
        );
    }

    #[test]
    fn header_round_trip_and_crc() {
        let h = SegmentHeader {
            salt: 5,
            segment_no: 2,
            first_position: 100,
            created_at_us: 9,
            batch_marks: false,
            scavenged: false,
            runs_at: 0,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        let marked = SegmentHeader {
            batch_marks: true,
            ..h
        };
        assert_eq!(SegmentHeader::decode(&marked.encode()).unwrap(), marked);
        let scavenged = SegmentHeader {
            scavenged: true,
            runs_at: 4096,
            ..h
        };
        let b2 = scavenged.encode();
        assert_eq!(u32_at(&b2, 8), SCAVENGED_FORMAT_VERSION);
        assert_eq!(SegmentHeader::decode(&b2).unwrap(), scavenged);
        let mut c = b;
        c[20] ^= 1;
        assert!(SegmentHeader::decode(&c).is_err());
    }
}
