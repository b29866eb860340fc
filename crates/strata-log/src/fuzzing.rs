//! Entry points for the fuzz targets (`fuzz/` and `crates/strata-fuzz`) into parsers that are
//! otherwise private. Not part of the API: names and shapes may change at any time.

/// Checks and decodes an index file as opening a store does (only a file whose first position
/// is 0 carries on from an empty index); the number of events it indexes when it decodes.
pub fn decode_index(bytes: &[u8]) -> Result<u64, String> {
    let file = crate::index::IndexFile::check(bytes.to_vec())?;
    let mut index = crate::index::Index::default();
    file.push_into(&mut index)?;
    Ok(index.next_position())
}

/// Checks a sealed segment's index file and adds its events to an empty index, as opening a
/// store does (only a file whose first position is 0 carries on from an empty index), then
/// reads every entry the index now takes from the file; the number of events it added. The
/// bytes are written to a file of this process's in the temp directory first: opening maps
/// the file (or reads it with `pread`: inputs of odd length), and looks ids up in it.
pub fn decode_segment_index(bytes: &[u8]) -> Result<u64, String> {
    let path = std::env::temp_dir().join(format!(
        "strata-fuzz-{}-{:?}.idx",
        std::process::id(),
        std::thread::current().id()
    ));
    let file = crate::index::SegmentIndexFile::check(bytes.to_vec(), path.clone())?;
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    let decoded = (|| {
        let mut index = crate::index::Index::default();
        file.push_into(&mut index, bytes.len().is_multiple_of(2))?;
        for p in 0..index.next_position() {
            let e = index.entries.get(p).map_err(|c| c.to_string())?;
            assert!((e.stream as usize) < index.streams.len());
            assert!((e.event_type as usize) < index.types.len());
        }
        Ok(index.next_position())
    })();
    let _ = std::fs::remove_file(&path);
    decoded
}
