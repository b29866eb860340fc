//! The archive's objects: a root object naming the store, and per segment its two files and
//! a manifest (see `docs/format.md`, "The archive").

use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

/// The archive format this build writes and reads.
pub const ARCHIVE_FORMAT: u32 = 1;
/// The root object's name, under the archive's prefix.
pub const ROOT_OBJECT: &str = "strata-archive.json";
/// The object naming how far the last whole archive run reached, under the prefix: a
/// restore goes that far and no further.
pub const COMPLETE_OBJECT: &str = "strata-archive-complete.json";
/// The folder, under the prefix, holding the segments' files and manifests.
pub(crate) const SEGMENTS_DIR: &str = "segments";

/// The root object: what the archive is and whose segments it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRoot {
    /// The archive format, [`ARCHIVE_FORMAT`].
    pub format: u32,
    /// The store whose segments it holds: its segment 0's salt, 16 hex digits.
    pub store: String,
    /// A line for a reader who finds the archive: where its format is documented.
    pub about: String,
}

impl ArchiveRoot {
    pub(crate) fn new(store: String) -> ArchiveRoot {
        ArchiveRoot {
            format: ARCHIVE_FORMAT,
            store,
            about: "A Strata archive: segments/NNN.seg and NNN.idx are a store's sealed segment files byte for byte, NNN.json their manifest; see docs/format.md, \"The archive\".".to_owned(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a root object encodes");
        v.push(b'\n');
        v
    }

    pub(crate) fn decode(b: &[u8]) -> Result<ArchiveRoot, String> {
        let root: ArchiveRoot =
            serde_json::from_slice(b).map_err(|e| format!("not an archive root object: {e}"))?;
        check_format(root.format)?;
        Ok(root)
    }
}

/// How far the last archive run that ended well reached: every segment below `segments` is
/// archived, and so is every segment any of them depends on (a scavenged segment's removals
/// follow from lifecycle events in later segments, archived by the same run). Rewritten at
/// the end of each run; the only object that is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteMark {
    /// The archive format, [`ARCHIVE_FORMAT`].
    pub format: u32,
    /// The store (as in the root object).
    pub store: String,
    /// Segments `0..segments` are archived whole.
    pub segments: u64,
    /// The position after the last event they cover.
    pub end_position: u64,
    /// The last event below the mark: its position and id, which a PostgreSQL export checks
    /// the store still holds there (absent in marks written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event: Option<MarkedEvent>,
}

/// An event named by its position and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkedEvent {
    /// Its position.
    pub position: u64,
    /// Its id.
    pub id: strata_core::Uuid,
}

impl CompleteMark {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a mark encodes");
        v.push(b'\n');
        v
    }

    pub(crate) fn decode(b: &[u8]) -> Result<CompleteMark, String> {
        let m: CompleteMark = serde_json::from_slice(b)
            .map_err(|e| format!("not an archive's complete mark: {e}"))?;
        check_format(m.format)?;
        Ok(m)
    }
}

/// One archived file: its name in `segments/`, its size and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The file's name (`NNN.seg` or `NNN.idx`).
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, 64 hex digits.
    pub sha256: String,
}

/// A segment's manifest, `segments/NNN.json`: written after its files, so a segment is
/// archived once its manifest is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentManifest {
    /// The archive format, [`ARCHIVE_FORMAT`].
    pub format: u32,
    /// The store it belongs to (as in the root object).
    pub store: String,
    /// The segment's number.
    pub segment: u64,
    /// Its header's salt, 16 hex digits.
    pub salt: String,
    /// Whether a scavenge had rewritten it (segment format version 2) when it was archived.
    pub scavenged: bool,
    /// The first position it covers.
    pub first_position: u64,
    /// The position after the last it covers (the next segment's first).
    pub end_position: u64,
    /// Events it holds.
    pub events: u64,
    /// When its first event was recorded, µs since the Unix epoch (absent: it holds none).
    pub first_recorded_at_us: Option<i64>,
    /// When its last event was recorded, µs since the Unix epoch.
    pub last_recorded_at_us: Option<i64>,
    /// Its segment file and its index file.
    pub files: Vec<FileEntry>,
}

impl SegmentManifest {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest encodes");
        v.push(b'\n');
        v
    }

    pub(crate) fn decode(b: &[u8]) -> Result<SegmentManifest, String> {
        let m: SegmentManifest =
            serde_json::from_slice(b).map_err(|e| format!("not a segment manifest: {e}"))?;
        check_format(m.format)?;
        if m.end_position < m.first_position {
            return Err(format!(
                "it ends at position {} before it starts ({})",
                m.end_position, m.first_position
            ));
        }
        if m.events > m.end_position - m.first_position {
            return Err(format!(
                "it names {} events in {} positions",
                m.events,
                m.end_position - m.first_position
            ));
        }
        for f in &m.files {
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{}'s SHA-256 is not 64 hex digits", f.name));
            }
        }
        Ok(m)
    }

    /// The entry of the file named `name`.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }
}

fn check_format(format: u32) -> Result<(), String> {
    if format != ARCHIVE_FORMAT {
        return Err(format!(
            "archive format {format} is not supported (this build reads {ARCHIVE_FORMAT})"
        ));
    }
    Ok(())
}

/// A salt as the archive writes it: 16 hex digits.
pub(crate) fn store_id(salt: u64) -> String {
    format!("{salt:016x}")
}

/// The manifest of segment `no`.
pub(crate) fn manifest_path(prefix: &ObjectPath, no: u64) -> ObjectPath {
    prefix
        .child(SEGMENTS_DIR)
        .child(format!("{no:020}.json").as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> SegmentManifest {
        SegmentManifest {
            format: ARCHIVE_FORMAT,
            store: store_id(7),
            segment: 3,
            salt: store_id(9),
            scavenged: false,
            first_position: 10,
            end_position: 20,
            events: 10,
            first_recorded_at_us: Some(1),
            last_recorded_at_us: Some(2),
            files: vec![FileEntry {
                name: "00000000000000000003.seg".to_owned(),
                bytes: 100,
                sha256: "ab".repeat(32),
            }],
        }
    }

    #[test]
    fn a_manifest_decodes_to_what_was_encoded() {
        let m = manifest();
        assert_eq!(SegmentManifest::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn manifests_that_cannot_be_true_are_refused() {
        let mut m = manifest();
        m.events = 11;
        assert!(SegmentManifest::decode(&m.encode())
            .unwrap_err()
            .contains("11 events in 10 positions"));
        let mut m = manifest();
        m.end_position = 9;
        assert!(SegmentManifest::decode(&m.encode()).is_err());
        let mut m = manifest();
        m.files[0].sha256 = "xy".repeat(32);
        assert!(SegmentManifest::decode(&m.encode()).is_err());
        let mut m = manifest();
        m.format = 2;
        assert!(SegmentManifest::decode(&m.encode())
            .unwrap_err()
            .contains("format 2 is not supported"));
        assert!(SegmentManifest::decode(b"[]").is_err());
    }
}
