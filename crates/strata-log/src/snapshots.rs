//! The embedded snapshot store: an append-only file of snapshot records beside the log.
//!
//! Record layout (little-endian, see `docs/format.md`):
//!
//! ```text
//!  0  record length (u32)         4
//!  4  CRC32C of bytes 8..length   4
//!  8  kind (u8): 1 save, 2 delete 1
//!  9  reserved (u8)               1
//! 10  stream id length (u16)      2
//! 12  schema version (u32)        4
//! 16  stream version (u64)        8
//! 24  taken at, µs (i64)          8
//! 32  data length (u32)           4
//! 36  reserved (u32)              4
//! 40  stream id, data
//! ```
//!
//! Snapshots are derived data, so a record that fails its checks ends the file: the rest is
//! cut off on open (with a warning) instead of refusing to open the store.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use strata_core::{BackendError, Snapshot, SnapshotError, StreamId};

use crate::format::{u16_at, u32_at, u64_at};
use crate::io::{LogFile, Vfs};
use crate::segment::read_up_to;

pub(crate) const SNAPSHOT_FILE: &str = "snapshots.log";
const HEADER: usize = 40;
const KIND_SAVE: u8 = 1;
const KIND_DELETE: u8 = 2;

#[derive(Debug, Clone, Copy)]
struct Meta {
    schema_version: u32,
    offset: u64,
    len: u32,
}

pub(crate) struct SnapshotFile {
    path: PathBuf,
    file: Arc<dyn LogFile>,
    state: Mutex<SnapState>,
}

struct SnapState {
    end: u64,
    by_stream: HashMap<StreamId, BTreeMap<u64, Meta>>,
    failed: Option<String>,
}

struct Decoded {
    kind: u8,
    stream: StreamId,
    schema_version: u32,
    stream_version: u64,
    taken_at_us: i64,
    data: Vec<u8>,
}

fn encode(
    kind: u8,
    stream: &StreamId,
    schema: u32,
    version: u64,
    taken_at_us: i64,
    data: &[u8],
) -> Vec<u8> {
    let len = HEADER + stream.as_str().len() + data.len();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.push(kind);
    b.push(0);
    b.extend_from_slice(&(stream.as_str().len() as u16).to_le_bytes());
    b.extend_from_slice(&schema.to_le_bytes());
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&taken_at_us.to_le_bytes());
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(stream.as_str().as_bytes());
    b.extend_from_slice(data);
    let crc = crc32c::crc32c(&b[8..]);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<Decoded> {
    if b.len() < HEADER {
        return None;
    }
    let len = u32_at(b, 0) as usize;
    if len < HEADER || b.len() < len || crc32c::crc32c(&b[8..len]) != u32_at(b, 4) {
        return None;
    }
    let sid_len = u16_at(b, 10) as usize;
    let data_len = u32_at(b, 32) as usize;
    if HEADER + sid_len + data_len != len {
        return None;
    }
    let stream = StreamId::new(std::str::from_utf8(&b[HEADER..HEADER + sid_len]).ok()?).ok()?;
    Some(Decoded {
        kind: b[8],
        stream,
        schema_version: u32_at(b, 12),
        stream_version: u64_at(b, 16),
        taken_at_us: u64_at(b, 24) as i64,
        data: b[HEADER + sid_len..len].to_vec(),
    })
}

impl SnapshotFile {
    pub fn open(vfs: &dyn Vfs, path: PathBuf) -> std::io::Result<SnapshotFile> {
        let existed = path.exists();
        let file = vfs.open(&path, true)?;
        if !existed {
            // The new file's directory entry must be durable before a delete's fdatasync can
            // make anything in it durable.
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            vfs.sync_dir(dir)?;
        }
        let file_len = file.size()?;
        let mut by_stream: HashMap<StreamId, BTreeMap<u64, Meta>> = HashMap::new();
        let mut off = 0u64;
        while off < file_len {
            let mut head = [0u8; 4];
            if read_up_to(&*file, &mut head, off)? < 4 {
                break;
            }
            let len = u32::from_le_bytes(head) as usize;
            if len < HEADER || off + len as u64 > file_len {
                break;
            }
            let mut rec = vec![0u8; len];
            file.read_exact_at(&mut rec, off)?;
            let Some(d) = decode(&rec) else { break };
            match d.kind {
                KIND_SAVE => {
                    by_stream.entry(d.stream).or_default().insert(
                        d.stream_version,
                        Meta {
                            schema_version: d.schema_version,
                            offset: off,
                            len: len as u32,
                        },
                    );
                }
                KIND_DELETE => {
                    by_stream.remove(&d.stream);
                }
                _ => break,
            }
            off += len as u64;
        }
        if off < file_len {
            tracing::warn!(file = %path.display(), from = file_len, to = off, "cutting an unreadable snapshot-file tail");
            file.set_len(off)?;
            file.sync_data()?;
        }
        Ok(SnapshotFile {
            path,
            file,
            state: Mutex::new(SnapState {
                end: off,
                by_stream,
                failed: None,
            }),
        })
    }

    /// Appends one record; `durable`: fdatasync before returning. Saves are not made durable
    /// one by one: a snapshot is derived data, and a crash that loses the newest ones (or
    /// tears one, which its CRC catches and open cuts off) costs a longer replay, never a
    /// wrong state. Waiting for an fdatasync on every save held a command (and the runtime
    /// thread running it) for a disk flush. A delete is made durable, and with it every save
    /// before it.
    fn append(
        &self,
        st: &mut SnapState,
        bytes: &[u8],
        durable: bool,
    ) -> Result<u64, SnapshotError> {
        if let Some(f) = &st.failed {
            return Err(SnapshotError::Storage(f.clone().into()));
        }
        let off = st.end;
        let result = self.file.write_all_at(bytes, off).and_then(|()| {
            if durable {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            let reason = format!("writing {} failed: {e}", self.path.display());
            st.failed = Some(reason.clone());
            return Err(SnapshotError::Storage(reason.into()));
        }
        st.end += bytes.len() as u64;
        Ok(off)
    }

    pub fn save(&self, s: &Snapshot) -> Result<(), SnapshotError> {
        s.validate()?;
        let bytes = encode(
            KIND_SAVE,
            &s.stream_id,
            s.schema_version,
            s.stream_version,
            strata_core::timestamp_to_micros(s.taken_at),
            &s.data,
        );
        let mut st = self.state.lock();
        let off = self.append(&mut st, &bytes, false)?;
        st.by_stream.entry(s.stream_id.clone()).or_default().insert(
            s.stream_version,
            Meta {
                schema_version: s.schema_version,
                offset: off,
                len: bytes.len() as u32,
            },
        );
        Ok(())
    }

    pub fn load(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, SnapshotError> {
        let meta = {
            let st = self.state.lock();
            let Some(versions) = st.by_stream.get(stream) else {
                return Ok(None);
            };
            versions
                .range(..=max_version.unwrap_or(u64::MAX))
                .rev()
                .find(|(_, m)| m.schema_version == schema_version)
                .map(|(_, m)| *m)
        };
        let Some(meta) = meta else { return Ok(None) };
        let mut rec = vec![0u8; meta.len as usize];
        self.file
            .read_exact_at(&mut rec, meta.offset)
            .map_err(|e| {
                SnapshotError::Storage(BackendError::with_source(
                    format!("reading {}: {e}", self.path.display()),
                    e,
                ))
            })?;
        let d = decode(&rec).ok_or_else(|| {
            SnapshotError::Storage(
                (format!(
                    "snapshot record at offset {} of {} failed its checks",
                    meta.offset,
                    self.path.display()
                ))
                .into(),
            )
        })?;
        Ok(Some(Snapshot {
            stream_id: d.stream,
            stream_version: d.stream_version,
            schema_version: d.schema_version,
            data: d.data,
            taken_at: strata_core::timestamp_from_micros(d.taken_at_us),
        }))
    }

    pub fn delete(&self, stream: &StreamId) -> Result<u64, SnapshotError> {
        let mut st = self.state.lock();
        let count = st.by_stream.get(stream).map_or(0, |v| v.len() as u64);
        if count == 0 {
            return Ok(0);
        }
        let bytes = encode(KIND_DELETE, stream, 0, 0, 0, &[]);
        self.append(&mut st, &bytes, true)?;
        st.by_stream.remove(stream);
        Ok(count)
    }
}
