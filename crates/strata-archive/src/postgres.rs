//! A PostgreSQL store's events in the same archive format as the embedded store's: exported
//! into segments (format version 2, see `docs/format.md`) a segment at a time, and an archive
//! made by either backend restored into an empty PostgreSQL store.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use strata_core::RecordedEvent;
use strata_log::{SealedSegment, SegmentWriter};
use strata_postgres::{ImportError, PostgresStore};

use crate::format::{
    ArchiveRoot, CompleteMark, MarkedEvent, ARCHIVE_FORMAT, COMPLETE_OBJECT, ROOT_OBJECT,
};
use crate::{blocking, Archive, ArchiveError, ArchiveReport, Progress, ProgressFn, RestoreReport};

/// Bytes of records an exported segment holds before the next one starts (as the embedded
/// store's segments, smaller: an export builds one in a scratch directory, then uploads it).
pub const EXPORT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Events read from PostgreSQL at a time, by an export or taken in at a time by a restore.
pub const EXPORT_PAGE_EVENTS: usize = 1000;
/// Bytes of payload and metadata read at a time (one event at least), likewise.
pub const EXPORT_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// A segment's salt: segment 0's is the store's id; the others' are mixed from it and their
/// number (a salt only has to differ from the other segments' of the store).
fn salt(store: u64, no: u64) -> u64 {
    if no == 0 {
        return store;
    }
    // splitmix64
    let mut z = store.wrapping_add(no.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn store_error(e: strata_core::ReadError) -> ArchiveError {
    ArchiveError::Store(e)
}

/// A segment being exported: its writer, in a scratch folder.
struct Building {
    writer: SegmentWriter,
    no: u64,
    first_position: u64,
}

impl Archive {
    /// Exports the final events of PostgreSQL `store` (those below its readable head's next
    /// position) that the archive does not hold yet, into segments of about
    /// [`EXPORT_SEGMENT_BYTES`] each, with their index files and manifests, as
    /// [`Archive::archive_store`] archives the embedded store's; then the mark of how far
    /// this run reached. The archive's segments are the format `strata restore` reads into
    /// either backend. Every event goes, also one readers no longer see but no scavenge
    /// deleted (the archive is history); positions left by rolled-back appends, and versions
    /// a scavenge deleted, are gaps, which the format records.
    pub async fn archive_postgres(
        &self,
        store: &PostgresStore,
        progress: ProgressFn<'_>,
    ) -> Result<ArchiveReport, ArchiveError> {
        self.archive_postgres_with(store, EXPORT_SEGMENT_BYTES, progress)
            .await
    }

    /// [`Archive::archive_postgres`] with segments of `segment_bytes` (one event at least).
    /// One export of a store runs at a time, across processes: another one meanwhile is
    /// refused ([`ArchiveError::Busy`]).
    pub async fn archive_postgres_with(
        &self,
        store: &PostgresStore,
        segment_bytes: u64,
        progress: ProgressFn<'_>,
    ) -> Result<ArchiveReport, ArchiveError> {
        let started = std::time::Instant::now();
        let hold = store
            .hold_export()
            .await
            .map_err(store_error)?
            .ok_or(ArchiveError::Busy)?;
        let result = self
            .archive_postgres_held(store, segment_bytes, progress)
            .await;
        hold.release().await;
        let mut report = result?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    async fn archive_postgres_held(
        &self,
        store: &PostgresStore,
        segment_bytes: u64,
        progress: ProgressFn<'_>,
    ) -> Result<ArchiveReport, ArchiveError> {
        let store_id = store.store_id().await.map_err(store_error)?;
        let store_salt = u64::from_str_radix(&store_id, 16).map_err(|_| {
            ArchiveError::Store(strata_core::ReadError::Storage(
                format!("the store's id {store_id:?} is not 16 hex digits").into(),
            ))
        })?;
        let mark = self.complete().await?;
        let root = self.root().await?;
        if let Some(root) = root.as_ref().filter(|r| r.store != store_id) {
            return Err(ArchiveError::OtherStore {
                url: self.url.clone(),
                archived: root.store.clone(),
                this: store_id,
            });
        }
        let held = mark.as_ref().map_or(0, |m| m.segments);
        let from = mark.as_ref().map_or(0, |m| m.end_position);
        let below = store.final_below().await.map_err(store_error)?;
        let mut report = ArchiveReport {
            already_archived: held,
            archived_below: from,
            ..ArchiveReport::default()
        };
        let diverged = |reason: String| ArchiveError::Diverged {
            url: self.url.clone(),
            segment: held.saturating_sub(1),
            reason,
        };
        if below < from {
            return Err(diverged(format!(
                "the archive holds events up to position {from}, the store's final events end at {below}"
            )));
        }
        if let Some(last) = mark.as_ref().and_then(|m| m.last_event) {
            if store
                .holds_event(last.position, last.id)
                .await
                .map_err(store_error)?
                == Some(false)
            {
                return Err(diverged(format!(
                    "the archive's last event, {} at position {}, is not the store's",
                    last.id, last.position
                )));
            }
        }
        if below == from {
            return Ok(report);
        }
        // The archive is this store's from its first export with anything to export on.
        if root.is_none() {
            self.put_small(ROOT_OBJECT, ArchiveRoot::new(store_id.clone()).encode())
                .await?;
        }
        let scratch = {
            let base = std::env::temp_dir();
            blocking(move || crate::make_staging_dir(&base.join("strata-export"))).await?
        };
        let result = self
            .export_range(
                store,
                (store_salt, &store_id),
                (held, from, below),
                segment_bytes,
                &scratch,
                &mut report,
                progress,
            )
            .await;
        crate::remove_scratch(scratch.clone()).await;
        let (segments, exported_last) = result?;
        let last_event = exported_last.or(mark.as_ref().and_then(|m| m.last_event));
        let new_mark = CompleteMark {
            format: ARCHIVE_FORMAT,
            store: store_id,
            segments,
            end_position: report.archived_below,
            last_event,
        };
        if segments > 0 && mark.as_ref() != Some(&new_mark) {
            self.put_small(COMPLETE_OBJECT, new_mark.encode()).await?;
        }
        Ok(report)
    }

    /// Exports positions `from..below` as segments from `held` on, in `scratch`; returns the
    /// number of segments the archive holds afterwards, and the last event exported.
    #[allow(clippy::too_many_arguments)]
    async fn export_range(
        &self,
        store: &PostgresStore,
        (store_salt, store_id): (u64, &str),
        (held, from, below): (u64, u64, u64),
        segment_bytes: u64,
        scratch: &Path,
        report: &mut ArchiveReport,
        progress: ProgressFn<'_>,
    ) -> Result<(u64, Option<MarkedEvent>), ArchiveError> {
        let seg_dir = strata_log::segments_dir(scratch);
        let mut last_event = None;
        let mut done = Progress::default();
        progress(done);
        let mut next_no = held;
        let mut building: Option<Building> = None;
        let limit = segment_bytes.max(1);
        // Pages are read one ahead of the segment being written.
        let (tx, mut pages) = tokio::sync::mpsc::channel(1);
        let reader = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut cursor = from;
                loop {
                    let page = store
                        .export_page(cursor, below, EXPORT_PAGE_EVENTS, EXPORT_PAGE_BYTES)
                        .await;
                    let next = match &page {
                        Ok(p) => p.last().map(|e| e.position.0 + 1),
                        Err(_) => None,
                    };
                    if tx.send(page).await.is_err() {
                        return;
                    }
                    match next {
                        Some(n) => cursor = n,
                        None => return,
                    }
                }
            })
        };
        let mut reader = AbortOnDrop(Some(reader));
        while let Some(page) = pages.recv().await {
            let mut pending: VecDeque<RecordedEvent> = page.map_err(store_error)?.into();
            while let Some(first) = pending.front() {
                let first = first.position.0;
                let b = match building.take() {
                    Some(b) => b,
                    None => {
                        let (dir, no) = (seg_dir.clone(), next_no);
                        let first_position = if no == held { from } else { first };
                        let writer = blocking(move || {
                            SegmentWriter::create(&dir, no, salt(store_salt, no), first_position)
                                .map_err(export_error)
                        })
                        .await?;
                        next_no += 1;
                        done.segments_total += 1;
                        Building {
                            writer,
                            no,
                            first_position,
                        }
                    }
                };
                // Records are encoded and written on the blocking pool, up to where the
                // segment is full.
                let (b, rest, last) = blocking(move || {
                    let (mut b, mut rest, mut last) = (b, pending, None);
                    while let Some(e) = rest.front() {
                        if b.writer.bytes() >= limit {
                            break;
                        }
                        b.writer.push(e).map_err(export_error)?;
                        last = Some(MarkedEvent {
                            position: e.position.0,
                            id: e.event_id,
                        });
                        rest.pop_front();
                    }
                    Ok((b, rest, last))
                })
                .await?;
                last_event = last.or(last_event);
                pending = rest;
                match pending.front() {
                    // Full: it ends where the next event starts the next segment.
                    Some(next) => {
                        let end = next.position.0;
                        self.finish_exported(store, b, end, store_id, &seg_dir)
                            .await
                            .map(|m| account(report, &mut done, m, progress))?;
                    }
                    None => building = Some(b),
                }
            }
        }
        // The channel closed: the reader read to the end, or it panicked (then nothing past
        // what it sent counts as read).
        if let Some(handle) = reader.0.take() {
            handle
                .await
                .map_err(|e| ArchiveError::Interrupted(format!("reading the store's rows: {e}")))?;
        }
        if let Some(b) = building.take() {
            self.finish_exported(store, b, below, store_id, &seg_dir)
                .await
                .map(|m| account(report, &mut done, m, progress))?;
        }
        Ok((next_no, last_event))
    }

    /// Ends segment `b` at `end_position`, uploads its two files and its manifest, and
    /// removes them from the scratch folder.
    async fn finish_exported(
        &self,
        store: &PostgresStore,
        b: Building,
        end_position: u64,
        store_id: &str,
        seg_dir: &Path,
    ) -> Result<crate::SegmentManifest, ArchiveError> {
        let firsts: Vec<(String, u64)> = b
            .writer
            .first_versions()
            .filter(|&(_, v)| v > 0)
            .map(|(s, v)| (s.to_owned(), v))
            .collect();
        let next: HashMap<String, u64> = match firsts.is_empty() {
            true => HashMap::new(),
            false => store
                .next_versions_below(&firsts)
                .await
                .map_err(store_error)?,
        };
        let (no, first_position) = (b.no, b.first_position);
        let dir = seg_dir.to_path_buf();
        let sealed = blocking(move || {
            let summary = b.writer.finish(end_position, &next).map_err(export_error)?;
            let (seg_name, idx_name) = strata_log::sealed_file_names(no);
            let open = |name: &str| {
                let p = dir.join(name);
                std::fs::File::open(&p)
                    .map(|f| (Arc::new(f), p))
                    .map_err(ArchiveError::io(format!("opening the exported {name}")))
            };
            let (segment_file, segment_path) = open(&seg_name)?;
            let (index_file, index_path) = open(&idx_name)?;
            Ok(SealedSegment {
                segment_no: no,
                salt: summary.header.salt,
                first_position,
                end_position,
                scavenged: true,
                segment_path,
                index_path,
                segment_file: Some(segment_file),
                index_file,
            })
        })
        .await?;
        let mut done = Progress::default();
        let (manifest, _) = self
            .archive_segment(&sealed, store_id, &mut done, &|_| {})
            .await?;
        let (seg, idx) = (sealed.segment_path.clone(), sealed.index_path.clone());
        drop(sealed);
        blocking(move || {
            let _ = std::fs::remove_file(seg);
            let _ = std::fs::remove_file(idx);
            Ok(())
        })
        .await?;
        Ok(manifest)
    }

    /// Brings an empty PostgreSQL `store` to the archive's state (an archive made by either
    /// backend): the archive is restored into a scratch directory under `scratch` (checked as
    /// [`Archive::restore`] checks it; it needs room for one copy), then its events go into the
    /// store in batches that keep their positions, versions, ids and times; the store takes the
    /// archive's id and appends after the archive's last position. A store that holds an event,
    /// or has taken a position, is refused ([`ArchiveError::StoreNotEmpty`]).
    pub async fn restore_postgres(
        &self,
        store: &PostgresStore,
        scratch: &Path,
        progress: ProgressFn<'_>,
    ) -> Result<RestoreReport, ArchiveError> {
        let started = std::time::Instant::now();
        if !store.is_empty().await.map_err(store_error)? {
            return Err(ArchiveError::StoreNotEmpty {
                store: "the PostgreSQL store".to_owned(),
            });
        }
        let root = self.root().await?.ok_or_else(|| ArchiveError::Empty {
            url: self.url.clone(),
            reason: "it has no root object".to_owned(),
        })?;
        let scratch = scratch.to_path_buf();
        let dir = blocking(move || {
            std::fs::create_dir_all(&scratch)
                .map_err(ArchiveError::io(format!("creating {}", scratch.display())))?;
            crate::make_staging_dir(&scratch.join("strata-restore"))
        })
        .await?;
        let copy = dir.join("store");
        let result = async {
            let mut report = self.restore(&copy, progress).await?;
            let (events, last) = self.import_dir(store, &copy).await?;
            report.events = events;
            store
                .skip_positions_below(report.next_position, last)
                .await
                .map_err(|e| import_error(e, last.is_some()))?;
            store.set_store_id(&root.store).await.map_err(store_error)?;
            report.elapsed = started.elapsed();
            Ok(report)
        }
        .await;
        crate::remove_scratch(dir).await;
        result
    }

    /// Takes the events of restored data directory `dir` into `store`, a batch at a time
    /// (read on the blocking pool, at most two batches ahead); returns how many, and the
    /// position of the last.
    async fn import_dir(
        &self,
        store: &PostgresStore,
        dir: &Path,
    ) -> Result<(u64, Option<u64>), ArchiveError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<RecordedEvent>>(2);
        let dir = dir.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || {
            let mut batch = Vec::new();
            let mut bytes = 0usize;
            strata_log::each_sealed_event(&dir, |e| {
                bytes += e.data.len() + e.metadata.to_bytes().len();
                batch.push(e);
                if batch.len() >= EXPORT_PAGE_EVENTS || bytes >= EXPORT_PAGE_BYTES {
                    bytes = 0;
                    tx.blocking_send(std::mem::take(&mut batch))
                        .map_err(|_| "the import stopped".to_owned())?;
                }
                Ok::<(), String>(())
            })?;
            if !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
            Ok::<(), String>(())
        });
        let mut events = 0u64;
        let mut after = None;
        let mut failed = None;
        while let Some(batch) = rx.recv().await {
            if let Err(e) = store.import_events(&batch, after).await {
                failed = Some(e);
                break;
            }
            events += batch.len() as u64;
            after = batch.last().map(|e| e.position.0).or(after);
        }
        drop(rx);
        let read = reader
            .await
            .map_err(|e| ArchiveError::Interrupted(e.to_string()))?;
        if let Some(e) = failed {
            return Err(import_error(e, after.is_some()));
        }
        read.map_err(|reason| ArchiveError::Damaged {
            object: self.url.clone(),
            reason,
        })?;
        Ok((events, after))
    }
}

/// Aborts a task when dropped: an export that stops stops reading ahead.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

/// Counts a segment an export uploaded.
fn account(
    report: &mut ArchiveReport,
    done: &mut Progress,
    m: crate::SegmentManifest,
    progress: ProgressFn<'_>,
) {
    report.segments += 1;
    report.events += m.events;
    let bytes: u64 = m.files.iter().map(|f| f.bytes).sum();
    report.bytes += bytes;
    report.archived_below = m.end_position;
    done.segments_done += 1;
    done.bytes += bytes;
    progress(*done);
}

/// An import's error; `started`: a batch went in before it (so a position taken meanwhile
/// was an append during the restore).
fn import_error(e: ImportError, started: bool) -> ArchiveError {
    match e {
        ImportError::Store(e) => ArchiveError::Store(e),
        ImportError::PositionsTaken { .. } if !started => ArchiveError::StoreNotEmpty {
            store: "the PostgreSQL store".to_owned(),
        },
        ImportError::PositionsTaken { .. } => ArchiveError::StoreNotEmpty {
            store: "the PostgreSQL store (it took an append during the restore)".to_owned(),
        },
        ImportError::Unstorable { position, reason } => {
            ArchiveError::Unstorable { position, reason }
        }
        other => ArchiveError::Interrupted(other.to_string()),
    }
}

fn export_error(e: strata_log::ExportError) -> ArchiveError {
    ArchiveError::Export(e)
}

#[cfg(test)]
mod tests {
    #[test]
    fn salts_differ_by_segment_and_segment_0_is_the_store() {
        assert_eq!(super::salt(42, 0), 42);
        let salts: std::collections::HashSet<u64> = (0..1000).map(|n| super::salt(42, n)).collect();
        assert_eq!(salts.len(), 1000);
    }
}
