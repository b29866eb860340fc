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
/// store does (only a file whose first position is 0 carries on from an empty index); the
/// number of events it added.
pub fn decode_segment_index(bytes: &[u8]) -> Result<u64, String> {
    let file = crate::index::SegmentIndexFile::check(bytes.to_vec(), "fuzz.idx".into())?;
    let mut index = crate::index::Index::default();
    file.push_into(&mut index)?;
    Ok(index.next_position())
}
