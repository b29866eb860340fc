//! # strata-archive
//!
//! Strata's archive: the embedded store's sealed segments, copied byte for byte to object
//! storage (a local directory, or any S3-compatible service) with a manifest each, checked
//! by SHA-256, and restored into a new data directory. The archive is self-describing: its
//! objects are the segment and index files `docs/format.md` documents, and a JSON manifest
//! per segment names their sizes and digests, so it can be read without Strata running.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_core::{EventData, EventStore, ExpectedVersion, ReadAllOptions, StreamId};
//! let (data, copies, restored) = (tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?);
//! let store = strata_log::LogStore::open(data.path())?;
//! let e = EventData::json("Opened", &serde_json::json!({"balance": 100}))?;
//! store.append(&StreamId::new("account-1")?, ExpectedVersion::NoStream, vec![e]).await?;
//! // Everything appended so far goes into sealed segments; the archive copies those.
//! store.seal_open_segment().await?;
//! let archive = strata_archive::Archive::open(&copies.path().display().to_string())?;
//! let report = archive.archive_store(&store, &|_| {}).await?;
//! assert_eq!(report.events, 1);
//!
//! // A new directory comes back to what was archived.
//! let target = restored.path().join("store");
//! archive.restore(&target, &|_| {}).await?;
//! let back = strata_log::LogStore::open(&target)?;
//! assert_eq!(back.read_all(ReadAllOptions::forward()).await?.events.len(), 1);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod format;
#[cfg(feature = "postgres")]
mod postgres;
mod source;
mod target;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use sha2::Digest;
use strata_core::ReadError;
use strata_log::{LogStore, SealedFilesError, SealedSegment};

pub use format::{
    ArchiveRoot, CompleteMark, FileEntry, MarkedEvent, SegmentManifest, ARCHIVE_FORMAT,
    COMPLETE_OBJECT, ROOT_OBJECT,
};
#[cfg(feature = "postgres")]
pub use postgres::{EXPORT_PAGE_BYTES, EXPORT_PAGE_EVENTS, EXPORT_SEGMENT_BYTES};
pub use source::{open_store, verify_store, KeepLocal, FETCH_TIMEOUT};

/// Bytes of a segment file read, hashed and sent at a time (and fetched at a time by a
/// restore).
pub const UPLOAD_CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// Chunks of one upload or download in flight at once: one buffers at most
/// `UPLOAD_CHUNK_BYTES * UPLOAD_CONCURRENCY` bytes.
pub const UPLOAD_CONCURRENCY: usize = 4;

/// Why an archive operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The archive's address is not one Strata can use.
    #[error("invalid archive address {url:?}: {reason}")]
    InvalidAddress {
        /// The address given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The object store answered with an error or could not be reached.
    #[error("the archive at {url} failed: {reason}")]
    Unavailable {
        /// The archive's address.
        url: String,
        /// What the object store said.
        reason: String,
    },
    /// The archive holds the segments of another store.
    #[error("the archive at {url} holds another store's segments (store {archived}, this one is {this})")]
    OtherStore {
        /// The archive's address.
        url: String,
        /// The store id the archive names.
        archived: String,
        /// This store's id.
        this: String,
    },
    /// The archive's last segment is not this store's segment of that number: the archive
    /// and the store went separate ways (two copies of one store archiving to one place).
    #[error("the archive at {url} and this store differ at segment {segment}: {reason}")]
    Diverged {
        /// The archive's address.
        url: String,
        /// The segment.
        segment: u64,
        /// What differs.
        reason: String,
    },
    /// An archived object is missing, or does not hold what its manifest says.
    #[error("archived object {object} is damaged: {reason}")]
    Damaged {
        /// The object's path in the archive.
        object: String,
        /// What does not match.
        reason: String,
    },
    /// The archive holds no segment a restore can use (none, or none a run finished).
    #[error("the archive at {url} holds no segment to restore: {reason}")]
    Empty {
        /// The archive's address.
        url: String,
        /// Why.
        reason: String,
    },
    /// A restore goes into a new or empty directory only.
    #[error("{dir} is not empty: a restore goes into a new or empty directory")]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// A restore's target is not a directory it can make.
    #[error("cannot restore into {dir}: {reason}")]
    InvalidTarget {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// A scavenge of the store is running; archive after it.
    #[error("a scavenge or another archive of this store is running")]
    Busy,
    /// One of the store's own sealed segments does not check out: it is not archived.
    #[error("segment {segment} of the store does not check out, so it is not archived: {reason}")]
    LocalSegment {
        /// The segment.
        segment: u64,
        /// What is wrong.
        reason: String,
    },
    /// The store could not answer (closed, stopped after an I/O error).
    #[error("the store failed")]
    Store(#[source] ReadError),
    /// The store could not be opened ([`open_store`]).
    #[error("the store could not be opened")]
    Open(#[from] strata_log::OpenError),
    /// A local file could not be read or written.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A restore goes into an empty store only: this one holds events, or has taken
    /// positions.
    #[error("{store} is not empty: a restore goes into an empty store")]
    StoreNotEmpty {
        /// The store, for people.
        store: String,
    },
    /// An exported segment could not be made of the store's events.
    #[error("exporting the store's events failed")]
    Export(#[from] strata_log::ExportError),
    /// The target store cannot hold an archived event as it is.
    #[error("the event at position {position} cannot be restored there: {reason}")]
    Unstorable {
        /// Its position.
        position: u64,
        /// Why.
        reason: String,
    },
    /// A task of the operation ended without an answer (it panicked, or the runtime is
    /// shutting down).
    #[error("the archive operation was interrupted: {0}")]
    Interrupted(String),
}

impl ArchiveError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArchiveError {
        let context = context.into();
        move |source| ArchiveError::Io { context, source }
    }
}

/// Runs `f` on the blocking pool (file system work never runs on the runtime's workers).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ArchiveError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ArchiveError::Interrupted(e.to_string()))?
}

/// Progress of an archive or a restore: segments done of those to do, bytes moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Segments done.
    pub segments_done: u64,
    /// Segments to do in all.
    pub segments_total: u64,
    /// Bytes copied so far.
    pub bytes: u64,
}

/// Receives progress as an operation goes (at least once, at its end).
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// What [`Archive::archive_store`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Segments copied by this run.
    pub segments: u64,
    /// Their events.
    pub events: u64,
    /// Their bytes (segment and index files).
    pub bytes: u64,
    /// Sealed segments the archive held already.
    pub already_archived: u64,
    /// The position below which every event is archived (the end of the last segment the
    /// archive holds; 0 when it holds none).
    pub archived_below: u64,
    /// How long it took.
    pub elapsed: std::time::Duration,
}

/// What [`Archive::restore`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Segments restored.
    pub segments: u64,
    /// Events the restored store holds.
    pub events: u64,
    /// Bytes downloaded.
    pub bytes: u64,
    /// The position the restored store appends at next.
    pub next_position: u64,
    /// Archived events left out: versions of a stream between the removed versions of two
    /// segments archived after different scavenges, which the later scavenge had removed from
    /// the store (see [`strata_log::reconcile_copied_segments`]).
    pub removed: u64,
    /// How long it took.
    pub elapsed: std::time::Duration,
}

/// What [`Archive::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveVerifyReport {
    /// Segments checked.
    pub segments: u64,
    /// Events the archive restores to.
    pub events: u64,
    /// Bytes checked.
    pub bytes: u64,
    /// What `strata verify` found in the archive restored into a scratch directory.
    pub store: strata_log::VerifyReport,
}

/// An archive: a place in object storage holding sealed segments, their index files and a
/// manifest each.
#[derive(Clone)]
pub struct Archive {
    objects: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    /// A local directory's path: what is written there is fsynced (the object store's local
    /// file system does not).
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("url", &self.url).finish()
    }
}

impl Archive {
    /// Opens the archive at `url`: a local directory (a path, or `file:///abs/path`; made
    /// when missing), or `s3://bucket/prefix` configured from the `AWS_*` environment
    /// variables (`AWS_ENDPOINT_URL` for an S3-compatible service; an `http://` endpoint is
    /// allowed).
    pub fn open(url: &str) -> Result<Archive, ArchiveError> {
        Self::open_with_options(url, std::iter::empty::<(String, String)>())
    }

    /// As [`Archive::open`], with S3 settings given as `object_store` configuration keys
    /// (`aws_endpoint`, `aws_access_key_id`, `aws_secret_access_key`, `aws_region`,
    /// `aws_allow_http`), taking precedence over the environment's.
    pub fn open_with_options(
        url: &str,
        options: impl IntoIterator<Item = (impl AsRef<str>, impl Into<String>)>,
    ) -> Result<Archive, ArchiveError> {
        let (objects, prefix, local_root) = target::open(url, options)?;
        Ok(Archive {
            objects,
            prefix,
            url: url.to_owned(),
            local_root,
        })
    }

    /// The address the archive was opened at.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How to name the archive to someone who must not learn the host's paths: an S3
    /// address as given, a local directory as "the archive directory".
    pub fn public_name(&self) -> String {
        match self.local_root {
            Some(_) => "the archive directory".to_owned(),
            None => self.url.clone(),
        }
    }

    fn path(&self, name: &str) -> ObjectPath {
        self.prefix.child(name)
    }

    fn segment_object(&self, name: &str) -> ObjectPath {
        self.prefix.child(format::SEGMENTS_DIR).child(name)
    }

    fn unavailable(&self) -> impl Fn(object_store::Error) -> ArchiveError + '_ {
        move |e| ArchiveError::Unavailable {
            url: self.url.clone(),
            reason: e.to_string(),
        }
    }

    /// Makes objects written to a local archive durable: each file, then its folder.
    async fn sync_local(&self, objects: &[ObjectPath]) -> Result<(), ArchiveError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let paths: Vec<PathBuf> = objects
            .iter()
            .map(|o| {
                o.parts()
                    .fold(root.clone(), |p, part| p.join(part.as_ref()))
            })
            .collect();
        blocking(move || {
            let mut dirs: Vec<PathBuf> = Vec::new();
            for p in &paths {
                std::fs::File::open(p)
                    .and_then(|f| f.sync_all())
                    .map_err(ArchiveError::io(format!("syncing {}", p.display())))?;
                if let Some(d) = p.parent().filter(|d| !dirs.iter().any(|x| x == d)) {
                    dirs.push(d.to_path_buf());
                }
            }
            for d in dirs {
                sync_dir(&d).map_err(ArchiveError::io(format!("syncing {}", d.display())))?;
            }
            Ok(())
        })
        .await
    }

    /// Writes a small object at `name` under the prefix (the root object, the complete
    /// mark), durably on a local archive.
    async fn put_small(&self, name: &str, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        let path = self.path(name);
        self.objects
            .put(&path, bytes.into())
            .await
            .map_err(self.unavailable())?;
        self.sync_local(&[path]).await
    }

    /// Reads a small JSON object, `None` when there is none.
    async fn get_small(&self, path: &ObjectPath) -> Result<Option<bytes::Bytes>, ArchiveError> {
        match self.objects.get(path).await {
            Ok(got) => Ok(Some(got.bytes().await.map_err(self.unavailable())?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.unavailable()(e)),
        }
    }

    /// The archive's root object, `None` while it holds nothing.
    pub async fn root(&self) -> Result<Option<ArchiveRoot>, ArchiveError> {
        let path = self.path(ROOT_OBJECT);
        let Some(bytes) = self.get_small(&path).await? else {
            return Ok(None);
        };
        ArchiveRoot::decode(&bytes)
            .map(Some)
            .map_err(|reason| ArchiveError::Damaged {
                object: path.to_string(),
                reason,
            })
    }

    /// How far the last whole archive run reached, `None` before one ended.
    pub async fn complete(&self) -> Result<Option<CompleteMark>, ArchiveError> {
        let path = self.path(COMPLETE_OBJECT);
        let Some(bytes) = self.get_small(&path).await? else {
            return Ok(None);
        };
        CompleteMark::decode(&bytes)
            .map(Some)
            .map_err(|reason| ArchiveError::Damaged {
                object: path.to_string(),
                reason,
            })
    }

    /// Segment `no`'s manifest, checked to describe it.
    async fn manifest(&self, no: u64) -> Result<SegmentManifest, ArchiveError> {
        let path = format::manifest_path(&self.prefix, no);
        let damaged = |reason: String| ArchiveError::Damaged {
            object: path.to_string(),
            reason,
        };
        let Some(bytes) = self.get_small(&path).await? else {
            return Err(damaged("missing".to_owned()));
        };
        let m = SegmentManifest::decode(&bytes).map_err(damaged)?;
        if m.segment != no {
            return Err(damaged(format!("it describes segment {}", m.segment)));
        }
        Ok(m)
    }

    /// The manifests of segments `0..count`, checked to follow one another (each starting
    /// where the one before ends, segment 0 at position 0) and to name the root object's
    /// store.
    pub async fn segments(&self, count: u64) -> Result<Vec<SegmentManifest>, ArchiveError> {
        let root = self.root().await?;
        let mut out: Vec<SegmentManifest> = Vec::with_capacity(count as usize);
        for no in 0..count {
            let m = self.manifest(no).await?;
            let damaged = |reason: String| ArchiveError::Damaged {
                object: format::manifest_path(&self.prefix, no).to_string(),
                reason,
            };
            match &root {
                Some(r) if r.store == m.store => {}
                Some(r) => {
                    return Err(damaged(format!(
                        "it names store {}, the root object store {}",
                        m.store, r.store
                    )))
                }
                None => return Err(damaged("the archive has no root object".to_owned())),
            }
            let expected_first = out.last().map_or(0, |b| b.end_position);
            if m.first_position != expected_first {
                return Err(damaged(format!(
                    "it starts at position {}, where the segment before ends at {expected_first}",
                    m.first_position
                )));
            }
            if no == 0 && m.salt != m.store {
                return Err(damaged(
                    "segment 0's salt is not the store id the archive names".to_owned(),
                ));
            }
            out.push(m);
        }
        Ok(out)
    }

    /// Copies `store`'s sealed segments that the archive does not hold yet, oldest first:
    /// for each, the segment file, its index file, then its manifest (a segment is archived
    /// once its manifest is there); at the end, the mark of how far this run reached (a
    /// restore goes no further). A segment the archive holds is never written again: the
    /// archive keeps what a segment held when it was first archived, also after a scavenge
    /// rewrites it in the store. Scavenges wait until the copy ends ([`ArchiveError::Busy`]
    /// while one runs). Segments still open are not copied: see
    /// [`LogStore::seal_open_segment`].
    pub async fn archive_store(
        &self,
        store: &LogStore,
        progress: ProgressFn<'_>,
    ) -> Result<ArchiveReport, ArchiveError> {
        let started = std::time::Instant::now();
        let sealed = store.sealed_files().await.map_err(|e| match e {
            SealedFilesError::Busy => ArchiveError::Busy,
            SealedFilesError::Store(e) => ArchiveError::Store(e),
            other => ArchiveError::Interrupted(other.to_string()),
        })?;
        let mut report = ArchiveReport::default();
        let Some(first) = sealed.segments.first() else {
            progress(Progress::default());
            return Ok(report);
        };
        let store_id = format::store_id(first.salt);
        match self.root().await? {
            Some(root) if root.store != store_id => {
                return Err(ArchiveError::OtherStore {
                    url: self.url.clone(),
                    archived: root.store,
                    this: store_id,
                })
            }
            Some(_) => {}
            None => {
                self.put_small(ROOT_OBJECT, ArchiveRoot::new(store_id.clone()).encode())
                    .await?
            }
        }
        // Segments below the complete mark are archived for good; those above it were left by
        // a run that did not end, and are written again (they may differ: a store restored
        // from the archive before that run's end went on from the mark).
        let mark = self.complete().await?;
        let held = mark.as_ref().map_or(0, |m| m.segments);
        report.already_archived = held;
        if let Some(last_no) = held.checked_sub(1) {
            let last = self.manifest(last_no).await?;
            let diverged = |reason: String| ArchiveError::Diverged {
                url: self.url.clone(),
                segment: last_no,
                reason,
            };
            match sealed.segments.get(last_no as usize) {
                Some(local) => {
                    if last.salt != format::store_id(local.salt)
                        || last.first_position != local.first_position
                        || last.end_position != local.end_position
                    {
                        return Err(diverged(format!(
                            "the archive's segment covers positions {}..{} (salt {}), the store's {}..{} (salt {})",
                            last.first_position,
                            last.end_position,
                            last.salt,
                            local.first_position,
                            local.end_position,
                            format::store_id(local.salt)
                        )));
                    }
                }
                None => {
                    return Err(diverged(format!(
                        "the archive holds {held} segments, the store only {} sealed (or its index files are still being written)",
                        sealed.segments.len()
                    )))
                }
            }
            report.archived_below = last.end_position;
        }
        let todo = &sealed.segments[held as usize..];
        // The mark names the last event below it, as a PostgreSQL export's does: another
        // copy of the store that went its own way is refused by it (see `archive_postgres`).
        let mut last_event = mark.as_ref().and_then(|m| m.last_event);
        let mut done = Progress {
            segments_done: 0,
            segments_total: todo.len() as u64,
            bytes: 0,
        };
        progress(done);
        for seg in todo {
            let (manifest, last) = self
                .archive_segment(seg, &store_id, &mut done, progress)
                .await?;
            last_event = last.or(last_event);
            report.segments += 1;
            report.events += manifest.events;
            report.bytes += manifest.files.iter().map(|f| f.bytes).sum::<u64>();
            report.archived_below = manifest.end_position;
            done.segments_done += 1;
            progress(done);
        }
        let new_mark = CompleteMark {
            format: ARCHIVE_FORMAT,
            store: store_id,
            segments: sealed.segments.len() as u64,
            end_position: report.archived_below,
            last_event,
        };
        if mark.as_ref() != Some(&new_mark) {
            self.put_small(COMPLETE_OBJECT, new_mark.encode()).await?;
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    async fn archive_segment(
        &self,
        seg: &SealedSegment,
        store_id: &str,
        done: &mut Progress,
        progress: ProgressFn<'_>,
    ) -> Result<(SegmentManifest, Option<MarkedEvent>), ArchiveError> {
        let (seg_name, idx_name) = strata_log::sealed_file_names(seg.segment_no);
        let (seg_object, idx_object) = (
            self.segment_object(&seg_name),
            self.segment_object(&idx_name),
        );
        let Some(segment_file) = &seg.segment_file else {
            return Err(ArchiveError::LocalSegment {
                segment: seg.segment_no,
                reason: "it lives only in another archive, the one the store reads it from"
                    .to_owned(),
            });
        };
        let seg_file = self
            .upload_file(segment_file, &seg_object, &seg_name, done, progress)
            .await?;
        let idx_file = self
            .upload_file(&seg.index_file, &idx_object, &idx_name, done, progress)
            .await?;
        // Checked after it was read: a scavenge by another handle on the directory (after a
        // close and a reopen) gives a replaced file's blocks back, and they then read as
        // zeros for good. Whole now, it was whole when it was read.
        let summary = {
            let (file, path) = (segment_file.clone(), seg.segment_path.clone());
            let (end, no) = (seg.end_position, seg.segment_no);
            blocking(
                move || match strata_log::check_sealed_segment_file(&file, end) {
                    Ok(summary) => Ok(summary),
                    Err(_) if replaced(&file, &path) => Err(ArchiveError::Busy),
                    Err(reason) => Err(ArchiveError::LocalSegment {
                        segment: no,
                        reason,
                    }),
                },
            )
            .await?
        };
        if seg_file.bytes != summary.bytes {
            return Err(ArchiveError::Busy);
        }
        self.sync_local(&[seg_object, idx_object]).await?;
        let manifest = SegmentManifest {
            format: ARCHIVE_FORMAT,
            store: store_id.to_owned(),
            segment: seg.segment_no,
            salt: format::store_id(summary.header.salt),
            scavenged: summary.header.scavenged,
            first_position: summary.header.first_position,
            end_position: seg.end_position,
            events: summary.events,
            first_recorded_at_us: summary.recorded_us.map(|r| r.0),
            last_recorded_at_us: summary.recorded_us.map(|r| r.1),
            files: vec![seg_file, idx_file],
        };
        let path = format::manifest_path(&self.prefix, seg.segment_no);
        self.objects
            .put(&path, manifest.encode().into())
            .await
            .map_err(self.unavailable())?;
        self.sync_local(&[path]).await?;
        let last = summary
            .last_event
            .map(|(position, id)| MarkedEvent { position, id });
        Ok((manifest, last))
    }

    /// Uploads an open file in chunks, hashing it on the way; an upload that fails is
    /// aborted (no parts left behind).
    async fn upload_file(
        &self,
        file: &Arc<std::fs::File>,
        to: &ObjectPath,
        name: &str,
        done: &mut Progress,
        progress: ProgressFn<'_>,
    ) -> Result<FileEntry, ArchiveError> {
        // A file of one chunk or less goes in one request.
        let size = {
            let file = file.clone();
            blocking(move || {
                file.metadata()
                    .map(|m| m.len())
                    .map_err(ArchiveError::io("reading a sealed file's size".to_owned()))
            })
            .await?
        };
        if size <= UPLOAD_CHUNK_BYTES as u64 {
            let (file, n) = (file.clone(), size as usize);
            let (bytes, sha256) = blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, 0)
                    .map_err(ArchiveError::io("reading a sealed file".to_owned()))?;
                let sha256 = hex::encode(sha2::Sha256::digest(&buf));
                Ok((buf, sha256))
            })
            .await?;
            self.objects
                .put(to, bytes.into())
                .await
                .map_err(self.unavailable())?;
            done.bytes += size;
            progress(*done);
            return Ok(FileEntry {
                name: name.to_owned(),
                bytes: size,
                sha256,
            });
        }
        let upload = self
            .objects
            .put_multipart(to)
            .await
            .map_err(self.unavailable())?;
        let mut writer =
            object_store::WriteMultipart::new_with_chunk_size(upload, UPLOAD_CHUNK_BYTES);
        let mut hasher = sha2::Sha256::new();
        let mut offset = 0u64;
        let outcome: Result<(), ArchiveError> = async {
            loop {
                let (chunk, h) = {
                    let (file, mut h, name) = (file.clone(), hasher.clone(), name.to_owned());
                    blocking(move || {
                        use std::os::unix::fs::FileExt;
                        let mut buf = vec![0u8; UPLOAD_CHUNK_BYTES];
                        let mut n = 0;
                        while n < buf.len() {
                            let got = file
                                .read_at(&mut buf[n..], offset + n as u64)
                                .map_err(ArchiveError::io(format!("reading {name}")))?;
                            if got == 0 {
                                break;
                            }
                            n += got;
                        }
                        buf.truncate(n);
                        h.update(&buf);
                        Ok((buf, h))
                    })
                    .await?
                };
                hasher = h;
                if chunk.is_empty() {
                    return Ok(());
                }
                let n = chunk.len();
                writer
                    .wait_for_capacity(UPLOAD_CONCURRENCY)
                    .await
                    .map_err(self.unavailable())?;
                writer.put(bytes::Bytes::from(chunk));
                offset += n as u64;
                done.bytes += n as u64;
                progress(*done);
            }
        }
        .await;
        match outcome {
            Ok(()) => {
                writer.finish().await.map_err(self.unavailable())?;
            }
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        }
        Ok(FileEntry {
            name: name.to_owned(),
            bytes: offset,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Downloads an archived file to `local` in ranges of [`UPLOAD_CHUNK_BYTES`], up to
    /// [`UPLOAD_CONCURRENCY`] at a time, checking its size and digest against `entry`, and
    /// syncs it.
    async fn download_file(
        &self,
        entry: &FileEntry,
        local: &Path,
        done: &mut Progress,
        progress: ProgressFn<'_>,
    ) -> Result<(), ArchiveError> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let object = self.segment_object(&entry.name);
        let damaged = |reason: String| ArchiveError::Damaged {
            object: object.to_string(),
            reason,
        };
        let size = match self.objects.head(&object).await {
            Ok(meta) => meta.size,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(damaged("missing, though its manifest names it".to_owned()))
            }
            Err(e) => return Err(self.unavailable()(e)),
        };
        if size != entry.bytes {
            return Err(damaged(format!(
                "{size} bytes, where its manifest names {}",
                entry.bytes
            )));
        }
        let mut file = tokio::fs::File::create(local)
            .await
            .map_err(ArchiveError::io(format!("creating {}", entry.name)))?;
        let chunk = UPLOAD_CHUNK_BYTES as u64;
        let ranges = (0..size.div_ceil(chunk)).map(|i| i * chunk..((i + 1) * chunk).min(size));
        let objects = &self.objects;
        let object_ref = &object;
        let mut pieces = futures::stream::iter(ranges)
            .map(|r| async move { objects.get_range(object_ref, r).await })
            .buffered(UPLOAD_CONCURRENCY);
        let mut hasher = sha2::Sha256::new();
        while let Some(piece) = pieces.next().await {
            let piece = piece.map_err(self.unavailable())?;
            hasher = {
                let piece = piece.clone();
                blocking(move || {
                    hasher.update(&piece);
                    Ok(hasher)
                })
                .await?
            };
            file.write_all(&piece)
                .await
                .map_err(ArchiveError::io(format!("writing {}", entry.name)))?;
            done.bytes += piece.len() as u64;
            progress(*done);
        }
        let digest = hex::encode(hasher.finalize());
        if digest != entry.sha256 {
            return Err(damaged(format!(
                "its SHA-256 is {digest}, where its manifest names {}",
                entry.sha256
            )));
        }
        file.sync_all()
            .await
            .map_err(ArchiveError::io(format!("syncing {}", entry.name)))?;
        Ok(())
    }

    /// Makes `dir` (new, or an empty directory) a data directory holding every segment the
    /// last whole archive run reached: each file downloaded and checked against its
    /// manifest's size and SHA-256, each segment's records checked, then an empty segment to
    /// append to after the last. The directory is built beside `dir`
    /// (`.NAME.restoring-…`, removed if the restore fails) and renamed into place only once
    /// whole, so a restore that fails leaves `dir` as it was.
    pub async fn restore(
        &self,
        dir: &Path,
        progress: ProgressFn<'_>,
    ) -> Result<RestoreReport, ArchiveError> {
        let started = std::time::Instant::now();
        let target = dir.to_path_buf();
        let staging = blocking(move || {
            if dir_has_entries(&target)? {
                return Err(ArchiveError::NotEmpty { dir: target });
            }
            make_staging_dir(&target)
        })
        .await?;
        let result = self.restore_into(&staging, dir, progress).await;
        let cleanup = staging.clone();
        let removed = blocking(move || {
            if cleanup.exists() {
                std::fs::remove_dir_all(&cleanup).map_err(ArchiveError::io(
                    "removing the unfinished restore".to_owned(),
                ))?;
            }
            Ok(())
        })
        .await;
        let mut report = result?;
        removed?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// The restore's work, in `staging`, ending with its rename to `dir`.
    async fn restore_into(
        &self,
        staging: &Path,
        dir: &Path,
        progress: ProgressFn<'_>,
    ) -> Result<RestoreReport, ArchiveError> {
        let empty = |reason: &str| ArchiveError::Empty {
            url: self.url.clone(),
            reason: reason.to_owned(),
        };
        let Some(mark) = self.complete().await? else {
            return Err(empty("no archive run has ended there"));
        };
        if mark.segments == 0 {
            return Err(empty("the last archive run found nothing sealed"));
        }
        let manifests = self.segments(mark.segments).await?;
        let next_position = manifests.last().map_or(0, |m| m.end_position);
        if next_position != mark.end_position || manifests[0].store != mark.store {
            return Err(ArchiveError::Damaged {
                object: self.path(COMPLETE_OBJECT).to_string(),
                reason: format!(
                    "it says the archive ends at position {}, its segments end at {next_position}",
                    mark.end_position
                ),
            });
        }
        let seg_dir = strata_log::segments_dir(staging);
        let mut report = RestoreReport {
            next_position,
            ..RestoreReport::default()
        };
        let mut done = Progress {
            segments_done: 0,
            segments_total: manifests.len() as u64,
            bytes: 0,
        };
        progress(done);
        for m in &manifests {
            let (seg_name, idx_name) = strata_log::sealed_file_names(m.segment);
            for name in [&seg_name, &idx_name] {
                let entry = m.file(name).ok_or_else(|| ArchiveError::Damaged {
                    object: format::manifest_path(&self.prefix, m.segment).to_string(),
                    reason: format!("it does not name {name}"),
                })?;
                self.download_file(entry, &seg_dir.join(name), &mut done, progress)
                    .await?;
                report.bytes += entry.bytes;
            }
            let object = self.segment_object(&seg_name);
            let damaged = |reason: String| ArchiveError::Damaged {
                object: object.to_string(),
                reason,
            };
            let summary = {
                let (path, end) = (seg_dir.join(&seg_name), m.end_position);
                blocking(move || Ok(strata_log::check_sealed_segment(&path, end))).await?
            }
            .map_err(damaged)?;
            let h = summary.header;
            if h.segment_no != m.segment
                || h.first_position != m.first_position
                || format::store_id(h.salt) != m.salt
                || summary.events != m.events
            {
                return Err(damaged(format!(
                    "it holds segment {} from position {} with {} events (salt {}), where its manifest names segment {} from {} with {} (salt {})",
                    h.segment_no, h.first_position, summary.events, format::store_id(h.salt), m.segment, m.first_position, m.events, m.salt
                )));
            }
            report.events += summary.events;
            report.segments += 1;
            done.segments_done += 1;
            progress(done);
        }
        // Segments archived after different scavenges may disagree on a stream's removed
        // versions: the store had one run per stream, so the restored directory does too.
        let (from, n) = (staging.to_path_buf(), manifests.len() as u64);
        let url = self.url.clone();
        let shown = dir.display().to_string();
        report.removed = blocking(move || {
            let removed =
                strata_log::reconcile_copied_segments(&from, next_position).map_err(|reason| {
                    ArchiveError::Damaged {
                        object: url,
                        reason: format!(
                            "its segments' removed versions cannot be reconciled: {}",
                            reason.replace(&from.display().to_string(), &shown)
                        ),
                    }
                })?;
            strata_log::finish_restored_segments(&from, n, next_position)
                .and_then(|()| sync_dir(&from))
                .map_err(ArchiveError::io(
                    "finishing the restored directory".to_owned(),
                ))?;
            Ok(removed)
        })
        .await?;
        report.events -= report.removed;
        // `rename` replaces an empty directory; one that gained entries meanwhile stays.
        let (from, to) = (staging.to_path_buf(), dir.to_path_buf());
        blocking(move || {
            std::fs::rename(&from, &to).map_err(|e| {
                if dir_has_entries(&to).unwrap_or(false) {
                    ArchiveError::NotEmpty { dir: to.clone() }
                } else {
                    ArchiveError::io(format!("moving the restored directory to {}", to.display()))(
                        e,
                    )
                }
            })?;
            let parent = parent_of(&to);
            sync_dir(&parent).map_err(ArchiveError::io(format!("syncing {}", parent.display())))
        })
        .await?;
        Ok(report)
    }

    /// Checks the whole archive (up to where the last whole run reached): the manifests
    /// follow one another; every file is there with the size and SHA-256 its manifest names;
    /// every segment's records check out; and the segments restored into a scratch directory
    /// under `scratch` pass `strata verify` (stream versions, event ids, index files). Needs
    /// room under `scratch` for one copy of the archive, removed afterwards.
    pub async fn verify(&self, scratch: &Path) -> Result<ArchiveVerifyReport, ArchiveError> {
        let scratch = scratch.to_path_buf();
        let dir = blocking(move || {
            std::fs::create_dir_all(&scratch)
                .map_err(ArchiveError::io(format!("creating {}", scratch.display())))?;
            let made = make_staging_dir(&scratch.join("strata-verify-archive"))?;
            Ok(made)
        })
        .await?;
        let copy = dir.join("store");
        let result = async {
            let restored = self.restore(&copy, &|_| {}).await?;
            let checked = copy.clone();
            let store = blocking(move || {
                strata_log::verify(&checked).map_err(|e| ArchiveError::Damaged {
                    object: String::new(),
                    reason: e.to_string(),
                })
            })
            .await
            .map_err(|e| match e {
                ArchiveError::Damaged { reason, .. } => ArchiveError::Damaged {
                    object: self.url.clone(),
                    reason: format!("the restored segments do not verify: {reason}"),
                },
                other => other,
            })?;
            Ok(ArchiveVerifyReport {
                segments: restored.segments,
                events: restored.events,
                bytes: restored.bytes,
                store,
            })
        }
        .await;
        remove_scratch(dir).await;
        result
    }
}

/// Removes a scratch directory on the blocking pool; what cannot be removed stays (it is
/// named as the work's own, `.NAME.restoring-…`).
async fn remove_scratch(dir: PathBuf) {
    let _ = blocking(move || {
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await;
}

/// Whether the file at `path` is no longer the one `file` has open (a scavenge renamed a
/// new one over it).
fn replaced(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(held), Ok(now)) => held.ino() != now.ino() || held.dev() != now.dev(),
        _ => true,
    }
}

/// Whether `dir` exists and holds anything (a path that is not a directory counts as held).
fn dir_has_entries(dir: &Path) -> Result<bool, ArchiveError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(true),
        Err(e) => Err(ArchiveError::io(format!("reading {}", dir.display()))(e)),
    }
}

/// The directory holding `dir` (`.` for a bare name).
fn parent_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes a directory of its own beside `dir`, hidden (`.NAME.restoring-PID-N`), with a
/// `segments/` folder: a restore builds there, then renames it to `dir`.
fn make_staging_dir(dir: &Path) -> Result<PathBuf, ArchiveError> {
    let name = dir
        .file_name()
        .ok_or_else(|| ArchiveError::InvalidTarget {
            dir: dir.to_path_buf(),
            reason: "it has no name".to_owned(),
        })?
        .to_string_lossy()
        .into_owned();
    let parent = parent_of(dir);
    std::fs::create_dir_all(&parent)
        .map_err(ArchiveError::io(format!("creating {}", parent.display())))?;
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let staging = parent.join(format!(".{name}.restoring-{}-{n}", std::process::id()));
        match std::fs::create_dir(&staging) {
            Ok(()) => {
                let seg_dir = strata_log::segments_dir(&staging);
                std::fs::create_dir(&seg_dir)
                    .map_err(ArchiveError::io(format!("creating {}", seg_dir.display())))?;
                return Ok(staging);
            }
            // Left by a restore of an earlier process with the same id: another name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(ArchiveError::io(format!("creating {}", staging.display()))(
                    e,
                ))
            }
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
