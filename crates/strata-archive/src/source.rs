//! The archive as the place a store reads its evicted segments from
//! ([`strata_log::SegmentSource`]), and what gives their disk back.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use sha2::Digest;
use strata_log::{
    ArchivedCopy, EvictReport, LogConfig, LogStore, OpenError, SealedFilesError, SegmentSource,
};

use crate::{Archive, ArchiveError};

/// Longest a read of an archived block waits for the object store, retries included: past
/// it the read fails with a storage error (appends never wait on it).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads ranges of archived segment files, on a runtime of its own: the store's reads call
/// it from its blocking pool (or any thread), whatever runtime they run under.
struct ArchivedSegments {
    objects: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    name: String,
    runtime: Runtime,
}

/// A runtime that may be dropped anywhere (an async context included): it shuts down in the
/// background.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl ArchivedSegments {
    /// Asks for `ranges` of segment `segment_no` at once, on the source's runtime, and waits
    /// for every answer (at most [`FETCH_TIMEOUT`]).
    fn get_ranges(
        &self,
        segment_no: u64,
        ranges: &[(u64, usize)],
    ) -> std::io::Result<Vec<Vec<u8>>> {
        let (seg_name, _) = strata_log::sealed_file_names(segment_no);
        let object = self
            .prefix
            .child(crate::format::SEGMENTS_DIR)
            .child(seg_name);
        let objects = self.objects.clone();
        // Ranges that follow one another go in one request: an object store's cost is per
        // request more than per byte.
        let mut wanted: Vec<std::ops::Range<u64>> = Vec::new();
        for &(offset, len) in ranges {
            match wanted.last_mut() {
                Some(last) if last.end == offset => last.end += len as u64,
                _ => wanted.push(offset..offset + len as u64),
            }
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self
            .runtime
            .0
            .as_ref()
            .expect("the runtime lives as long as the source");
        rt.spawn(async move {
            let got = futures::future::try_join_all(
                wanted.iter().map(|r| objects.get_range(&object, r.clone())),
            )
            .await;
            let _ = tx.send(got);
        });
        let failed = |reason: String| {
            std::io::Error::other(format!(
                "reading segment {segment_no} from the archive {}: {reason}",
                self.name
            ))
        };
        match rx.recv_timeout(FETCH_TIMEOUT) {
            Ok(Ok(pieces)) => {
                // Split back into the ranges asked for (a short answer gives short ranges,
                // which the caller reports).
                let mut out = Vec::with_capacity(ranges.len());
                let mut pieces = pieces.into_iter();
                let mut piece = bytes::Bytes::new();
                for (i, &(offset, len)) in ranges.iter().enumerate() {
                    let starts_request =
                        i == 0 || ranges[i - 1].0 + ranges[i - 1].1 as u64 != offset;
                    if starts_request {
                        piece = pieces.next().unwrap_or_default();
                    }
                    let n = len.min(piece.len());
                    out.push(piece.split_to(n).to_vec());
                }
                Ok(out)
            }
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                failed(format!("no answer in {} s", FETCH_TIMEOUT.as_secs())),
            )),
        }
    }
}

impl SegmentSource for ArchivedSegments {
    fn fetch(&self, segment_no: u64, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut got = self.get_ranges(segment_no, &[(offset, len)])?;
        Ok(got.pop().unwrap_or_default())
    }

    fn fetch_many(
        &self,
        segment_no: u64,
        ranges: &[(u64, usize)],
    ) -> std::io::Result<Vec<Vec<u8>>> {
        self.get_ranges(segment_no, ranges)
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

impl Archive {
    /// The archive as a store's source of evicted segments ([`LogConfig::archive`]).
    pub fn segment_source(&self) -> Result<Arc<dyn SegmentSource>, ArchiveError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("strata-archive-read")
            .enable_all()
            .build()
            .map_err(ArchiveError::io("starting the archive's reader"))?;
        Ok(Arc::new(ArchivedSegments {
            objects: self.objects.clone(),
            prefix: self.prefix.clone(),
            name: self.reopen_address(),
            runtime: Runtime(Some(runtime)),
        }))
    }

    /// The address a later open reaches this archive at: a local directory by its absolute
    /// path, anything else as given.
    fn reopen_address(&self) -> String {
        match &self.local_root {
            Some(root) => root.display().to_string(),
            None => self.url.clone(),
        }
    }

    /// Gives back the local disk of `store`'s sealed segments that this archive holds (those
    /// below its complete mark), keeping the newest `keep_newest` sealed segments local:
    /// each one whose file is byte for byte the archived one (size and SHA-256 of its
    /// manifest) is read from the archive from then on ([`LogStore::evict_archived`]). A
    /// segment a scavenge rewrote after it was archived stays local.
    pub async fn evict_archived(
        &self,
        store: &LogStore,
        keep_newest: u64,
    ) -> Result<EvictReport, ArchiveError> {
        let keep = KeepLocal {
            newest_segments: keep_newest,
            ..KeepLocal::default()
        };
        self.evict_archived_with(store, &keep).await
    }

    /// [`Archive::evict_archived`] with every way of saying what stays local: a segment is
    /// given back only when `keep` keeps it by none of its rules.
    pub async fn evict_archived_with(
        &self,
        store: &LogStore,
        keep: &KeepLocal,
    ) -> Result<EvictReport, ArchiveError> {
        let keep_newest = keep.newest_segments;
        let Some(mark) = self.complete().await? else {
            return Ok(EvictReport::default());
        };
        // Only the manifests of segments still local that an eviction may give back, each
        // object checked to be there whole (a lifecycle rule or a hand may have removed it).
        let candidates: Vec<u64> = {
            let sealed = store.sealed_files().await.map_err(|e| match e {
                SealedFilesError::Busy => ArchiveError::Busy,
                SealedFilesError::Store(e) => ArchiveError::Store(e),
                other => ArchiveError::Interrupted(other.to_string()),
            })?;
            let keep_from = (sealed.segments.len() as u64).saturating_sub(keep_newest);
            sealed
                .segments
                .iter()
                .filter(|s| s.segment_file.is_some())
                .map(|s| s.segment_no)
                .filter(|&no| no < mark.segments.min(keep_from))
                .collect()
        };
        let root = self.root().await?;
        let mut archived: HashMap<u64, (u64, String)> = HashMap::new();
        let mut kept: std::collections::HashSet<u64> = std::collections::HashSet::new();
        let newer_than_us = keep.newer_than.map(|age| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            now.saturating_sub(age).as_micros() as i64
        });
        let looked_at: std::collections::HashSet<u64> = candidates.iter().copied().collect();
        for no in candidates {
            let m = self.manifest(no).await?;
            if root.as_ref().map(|r| &r.store) != Some(&m.store) {
                return Err(ArchiveError::Damaged {
                    object: crate::format::manifest_path(&self.prefix, no).to_string(),
                    reason: format!("it names store {}, not the root object's", m.store),
                });
            }
            let recent = newer_than_us
                .is_some_and(|cut| m.last_recorded_at_us.is_some_and(|last| last >= cut));
            let above = keep.from_position.is_some_and(|p| m.end_position > p);
            if recent || above {
                kept.insert(no);
                continue;
            }
            let (seg_name, _) = strata_log::sealed_file_names(no);
            let Some(f) = m.files.iter().find(|f| f.name == seg_name) else {
                continue;
            };
            match self.objects.head(&self.segment_object(&seg_name)).await {
                Ok(meta) if meta.size == f.bytes => {
                    archived.insert(no, (f.bytes, f.sha256.clone()));
                }
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.unavailable()(e)),
            }
        }
        let same = Box::new(move |no: u64, file: &std::fs::File| {
            // A segment this pass did not look at (sealed since it listed them) waits for
            // the next one.
            if kept.contains(&no) || !looked_at.contains(&no) {
                return Ok(ArchivedCopy::Kept);
            }
            let Some((bytes, sha256)) = archived.get(&no) else {
                return Ok(ArchivedCopy::Missing);
            };
            let same = file.metadata()?.len() == *bytes && &sha256_of(file)? == sha256;
            Ok(match same {
                true => ArchivedCopy::Same,
                false => ArchivedCopy::Differs,
            })
        });
        store
            .evict_archived(self.segment_source()?, mark.segments, keep_newest, same)
            .await
            .map_err(|e| match e {
                SealedFilesError::Busy => ArchiveError::Busy,
                SealedFilesError::Store(e) => ArchiveError::Store(e),
                other => ArchiveError::Interrupted(other.to_string()),
            })
    }
}

/// What stays on local disk when archived segments are given back
/// ([`Archive::evict_archived_with`]): a segment stays when any rule keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeepLocal {
    /// The newest sealed segments kept (the open one always is).
    pub newest_segments: u64,
    /// Segments holding any event recorded less than this long ago.
    pub newer_than: Option<std::time::Duration>,
    /// Segments holding any position at or above this one.
    pub from_position: Option<u64>,
}

impl KeepLocal {
    /// Keeps the newest `segments` sealed segments.
    pub fn newest_segments(segments: u64) -> KeepLocal {
        KeepLocal {
            newest_segments: segments,
            ..KeepLocal::default()
        }
    }

    /// Also keeps segments holding an event recorded less than `age` ago.
    pub fn newer_than(mut self, age: std::time::Duration) -> KeepLocal {
        self.newer_than = Some(age);
        self
    }

    /// Also keeps segments holding a position at or above `position`.
    pub fn from_position(mut self, position: u64) -> KeepLocal {
        self.from_position = Some(position);
        self
    }
}

/// The SHA-256 of an open file, in hex, read in chunks.
fn sha256_of(file: &std::fs::File) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; crate::UPLOAD_CHUNK_BYTES];
    let mut at = 0u64;
    loop {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
}

/// Opens the embedded store in `dir` with `config`; when some of its segments live only in
/// an archive and `config` names none, from the archive their stubs name (its credentials,
/// for S3, from the environment).
pub fn open_store(dir: &Path, config: LogConfig) -> Result<LogStore, ArchiveError> {
    let retry = config.clone();
    match LogStore::open_with(dir, config) {
        Err(OpenError::Archived { archive, .. }) if retry.archive.is_none() => {
            let source = recorded_archive(&archive)?.segment_source()?;
            Ok(LogStore::open_with(
                dir,
                LogConfig {
                    archive: Some(source),
                    ..retry
                },
            )?)
        }
        other => Ok(other?),
    }
}

/// [`strata_log::verify`] of the embedded store in `dir`; segments of it that live only in an
/// archive are read (and checked) from the archive their stubs name.
pub fn verify_store(dir: &Path) -> Result<strata_log::VerifyReport, ArchiveError> {
    match strata_log::verify(dir) {
        Err(OpenError::Archived { archive, .. }) => {
            let source = recorded_archive(&archive)?.segment_source()?;
            Ok(strata_log::verify_with(dir, Some(source))?)
        }
        other => Ok(other?),
    }
}

/// The archive at the address a stub records. A local directory must be there: opening one
/// that is not would make an empty one, and every read of the segments it should hold fail.
fn recorded_archive(address: &str) -> Result<Archive, ArchiveError> {
    if !address.contains("://") && !Path::new(address).is_dir() {
        return Err(ArchiveError::Unavailable {
            url: address.to_owned(),
            reason: "the store's archived segments are there, and the directory is gone".to_owned(),
        });
    }
    Archive::open(address)
}
