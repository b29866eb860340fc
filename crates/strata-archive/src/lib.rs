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
mod target;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use sha2::Digest;
use strata_log::{LogStore, SealedFilesError, SealedSegment};

pub use format::{ArchiveRoot, FileEntry, SegmentManifest, ARCHIVE_FORMAT, ROOT_OBJECT};

/// Bytes of a segment file read, hashed and sent at a time.
pub const UPLOAD_CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// Chunks of one upload in flight at once: an upload buffers at most
/// `UPLOAD_CHUNK_BYTES * UPLOAD_CONCURRENCY` bytes.
pub const UPLOAD_CONCURRENCY: usize = 4;

/// Why an archive operation failed.
#[derive(Debug, thiserror::Error)]
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
    /// An archived object is missing, or does not hold what its manifest says.
    #[error("archived object {object} is damaged: {reason}")]
    Damaged {
        /// The object's path in the archive.
        object: String,
        /// What does not match.
        reason: String,
    },
    /// The archive holds no segment to restore.
    #[error("the archive at {url} holds no segment")]
    Empty {
        /// The archive's address.
        url: String,
    },
    /// A restore goes into a new or empty directory only.
    #[error("{dir} is not empty: a restore goes into a new or empty directory")]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// A scavenge of the store is running; archive after it.
    #[error("a scavenge or another archive of this store is running")]
    Busy,
    /// The store could not answer.
    #[error("the store failed: {0}")]
    Store(String),
    /// A local file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl ArchiveError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArchiveError {
        let context = context.into();
        move |source| ArchiveError::Io { context, source }
    }
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
    /// Their events.
    pub events: u64,
    /// Their bytes.
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
    /// Their events.
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
        let (objects, prefix) = target::open(url, options)?;
        Ok(Archive {
            objects,
            prefix,
            url: url.to_owned(),
        })
    }

    /// The address the archive was opened at.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, name: &str) -> ObjectPath {
        self.prefix.child(name)
    }

    fn unavailable(&self) -> impl Fn(object_store::Error) -> ArchiveError + '_ {
        move |e| ArchiveError::Unavailable {
            url: self.url.clone(),
            reason: e.to_string(),
        }
    }

    /// The archive's root object, `None` while it holds nothing.
    pub async fn root(&self) -> Result<Option<ArchiveRoot>, ArchiveError> {
        let path = self.path(ROOT_OBJECT);
        match self.objects.get(&path).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(self.unavailable())?;
                ArchiveRoot::decode(&bytes)
                    .map(Some)
                    .map_err(|reason| ArchiveError::Damaged {
                        object: path.to_string(),
                        reason,
                    })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.unavailable()(e)),
        }
    }

    /// The manifests of the archived segments, in segment order, checked to follow one
    /// another from segment 0 (each starting where the one before ends) and to name one
    /// store.
    pub async fn segments(&self) -> Result<Vec<SegmentManifest>, ArchiveError> {
        use futures::TryStreamExt;
        let dir = self.prefix.child(format::SEGMENTS_DIR);
        let listed: Vec<_> = self
            .objects
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(self.unavailable())?;
        let mut names: Vec<(u64, ObjectPath)> = listed
            .into_iter()
            .filter_map(|meta| {
                let no = format::parse_manifest_name(meta.location.filename()?)?;
                Some((no, meta.location))
            })
            .collect();
        names.sort_by_key(|(no, _)| *no);
        let mut out: Vec<SegmentManifest> = Vec::with_capacity(names.len());
        for (no, path) in names {
            let bytes = self
                .objects
                .get(&path)
                .await
                .map_err(self.unavailable())?
                .bytes()
                .await
                .map_err(self.unavailable())?;
            let damaged = |reason: String| ArchiveError::Damaged {
                object: path.to_string(),
                reason,
            };
            let m = SegmentManifest::decode(&bytes).map_err(damaged)?;
            if m.segment != no {
                return Err(damaged(format!("it describes segment {}", m.segment)));
            }
            let expected_no = out.len() as u64;
            if no != expected_no {
                return Err(ArchiveError::Damaged {
                    object: format::manifest_path(&self.prefix, expected_no).to_string(),
                    reason: "missing: the archive's segments must follow one another from 0"
                        .to_owned(),
                });
            }
            if let Some(before) = out.last() {
                if m.store != before.store {
                    return Err(damaged(format!(
                        "it names store {}, the segments before it store {}",
                        m.store, before.store
                    )));
                }
                if m.first_position != before.end_position {
                    return Err(damaged(format!(
                        "it starts at position {}, the segment before ends at {}",
                        m.first_position, before.end_position
                    )));
                }
            } else if m.first_position != 0 {
                return Err(damaged("segment 0 does not start at position 0".to_owned()));
            }
            out.push(m);
        }
        Ok(out)
    }

    /// Copies `store`'s sealed segments that the archive does not hold yet, oldest first:
    /// for each, the segment file, its index file, then its manifest (a segment is archived
    /// once its manifest is there). A segment the archive holds is never written again: the
    /// archive keeps what a segment held when it was first archived, also after a scavenge
    /// rewrites it in the store. Scavenges wait until the copy ends
    /// ([`ArchiveError::Busy`] while one runs). Segments still open are not copied: see
    /// [`LogStore::seal_open_segment`].
    pub async fn archive_store(
        &self,
        store: &LogStore,
        progress: ProgressFn<'_>,
    ) -> Result<ArchiveReport, ArchiveError> {
        let started = std::time::Instant::now();
        let sealed = store.sealed_files().await.map_err(|e| match e {
            SealedFilesError::Busy => ArchiveError::Busy,
            SealedFilesError::Store(e) => ArchiveError::Store(e.to_string()),
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
                let root = ArchiveRoot::new(store_id.clone());
                self.objects
                    .put(&self.path(ROOT_OBJECT), root.encode().into())
                    .await
                    .map_err(self.unavailable())?;
            }
        }
        let held = self.segments().await?;
        report.already_archived = held.len() as u64;
        report.archived_below = held.last().map_or(0, |m| m.end_position);
        let todo = &sealed.segments[held.len().min(sealed.segments.len())..];
        let mut done = Progress {
            segments_done: 0,
            segments_total: todo.len() as u64,
            bytes: 0,
        };
        progress(done);
        for seg in todo {
            let manifest = self
                .archive_segment(seg, &store_id, &mut done, progress)
                .await?;
            report.segments += 1;
            report.events += manifest.events;
            report.bytes += manifest.files.iter().map(|f| f.bytes).sum::<u64>();
            report.archived_below = manifest.end_position;
            done.segments_done += 1;
            progress(done);
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
    ) -> Result<SegmentManifest, ArchiveError> {
        let summary = {
            let (path, end) = (seg.segment_path.clone(), seg.end_position);
            tokio::task::spawn_blocking(move || strata_log::check_sealed_segment(&path, end))
                .await
                .map_err(|e| ArchiveError::Store(e.to_string()))?
                .map_err(|reason| {
                    ArchiveError::Store(format!(
                        "segment {} does not check out, so it is not archived: {reason}",
                        seg.segment_no
                    ))
                })?
        };
        if summary.header.salt != seg.salt {
            return Err(ArchiveError::Store(format!(
                "segment {} changed while it was being archived",
                seg.segment_no
            )));
        }
        let (seg_name, idx_name) = strata_log::sealed_file_names(seg.segment_no);
        let dir = self.prefix.child(format::SEGMENTS_DIR);
        let seg_file = self
            .upload_file(
                &seg.segment_path,
                &dir.child(seg_name.as_str()),
                &seg_name,
                done,
                progress,
            )
            .await?;
        let idx_file = self
            .upload_file(
                &seg.index_path,
                &dir.child(idx_name.as_str()),
                &idx_name,
                done,
                progress,
            )
            .await?;
        let manifest = SegmentManifest {
            format: ARCHIVE_FORMAT,
            store: store_id.to_owned(),
            segment: seg.segment_no,
            salt: format::store_id(seg.salt),
            scavenged: seg.scavenged,
            first_position: seg.first_position,
            end_position: seg.end_position,
            events: summary.events,
            first_recorded_at_us: summary.recorded_us.map(|r| r.0),
            last_recorded_at_us: summary.recorded_us.map(|r| r.1),
            files: vec![seg_file, idx_file],
        };
        self.objects
            .put(
                &format::manifest_path(&self.prefix, seg.segment_no),
                manifest.encode().into(),
            )
            .await
            .map_err(self.unavailable())?;
        Ok(manifest)
    }

    /// Uploads a local file in chunks, hashing it on the way.
    async fn upload_file(
        &self,
        local: &Path,
        to: &ObjectPath,
        name: &str,
        done: &mut Progress,
        progress: ProgressFn<'_>,
    ) -> Result<FileEntry, ArchiveError> {
        let file = std::fs::File::open(local)
            .map_err(ArchiveError::io(format!("opening {}", local.display())))?;
        let file = Arc::new(file);
        let upload = self
            .objects
            .put_multipart(to)
            .await
            .map_err(self.unavailable())?;
        let mut writer =
            object_store::WriteMultipart::new_with_chunk_size(upload, UPLOAD_CHUNK_BYTES);
        let mut hasher = sha2::Sha256::new();
        let mut offset = 0u64;
        loop {
            let (chunk, h) = {
                let (file, mut h) = (file.clone(), hasher);
                tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0u8; UPLOAD_CHUNK_BYTES];
                    let mut n = 0;
                    while n < buf.len() {
                        let got = file.read_at(&mut buf[n..], offset + n as u64)?;
                        if got == 0 {
                            break;
                        }
                        n += got;
                    }
                    buf.truncate(n);
                    h.update(&buf);
                    Ok::<_, std::io::Error>((buf, h))
                })
                .await
                .map_err(|e| ArchiveError::Store(e.to_string()))?
                .map_err(ArchiveError::io(format!("reading {}", local.display())))?
            };
            hasher = h;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            if let Err(e) = writer.wait_for_capacity(UPLOAD_CONCURRENCY).await {
                let _ = writer.abort().await;
                return Err(self.unavailable()(e));
            }
            writer.put(bytes::Bytes::from(chunk));
            offset += n as u64;
            done.bytes += n as u64;
            progress(*done);
        }
        writer.finish().await.map_err(self.unavailable())?;
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
        let object = self
            .prefix
            .child(format::SEGMENTS_DIR)
            .child(entry.name.as_str());
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
            .map_err(ArchiveError::io(format!("creating {}", local.display())))?;
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
                tokio::task::spawn_blocking(move || {
                    hasher.update(&piece);
                    hasher
                })
                .await
                .map_err(|e| ArchiveError::Store(e.to_string()))?
            };
            file.write_all(&piece)
                .await
                .map_err(ArchiveError::io(format!("writing {}", local.display())))?;
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
            .map_err(ArchiveError::io(format!("syncing {}", local.display())))?;
        Ok(())
    }

    /// Makes `dir` (new, or an empty directory) a data directory holding every archived
    /// segment: each file downloaded and checked against its manifest's size and SHA-256,
    /// each segment's records checked, then an empty segment to append to after the last.
    /// The directory is built beside `dir` (`.NAME.restoring`) and renamed into place only
    /// once whole, so a restore that fails or is killed leaves `dir` as it was.
    pub async fn restore(
        &self,
        dir: &Path,
        progress: ProgressFn<'_>,
    ) -> Result<RestoreReport, ArchiveError> {
        let started = std::time::Instant::now();
        if dir_has_entries(dir)? {
            return Err(ArchiveError::NotEmpty {
                dir: dir.to_path_buf(),
            });
        }
        let manifests = self.segments().await?;
        let Some(last) = manifests.last() else {
            return Err(ArchiveError::Empty {
                url: self.url.clone(),
            });
        };
        let next_position = last.end_position;
        let staging = staging_dir(dir)?;
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .map_err(ArchiveError::io(format!("removing {}", staging.display())))?;
        }
        let seg_dir = strata_log::segments_dir(&staging);
        std::fs::create_dir_all(&seg_dir)
            .map_err(ArchiveError::io(format!("creating {}", seg_dir.display())))?;
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
            let summary = {
                let (path, end) = (seg_dir.join(&seg_name), m.end_position);
                tokio::task::spawn_blocking(move || strata_log::check_sealed_segment(&path, end))
                    .await
                    .map_err(|e| ArchiveError::Store(e.to_string()))?
            };
            let object = self
                .prefix
                .child(format::SEGMENTS_DIR)
                .child(seg_name.as_str());
            let damaged = |reason: String| ArchiveError::Damaged {
                object: object.to_string(),
                reason,
            };
            let summary = summary.map_err(damaged)?;
            let h = summary.header;
            if h.segment_no != m.segment
                || h.first_position != m.first_position
                || format::store_id(h.salt) != m.salt
                || summary.events != m.events
            {
                return Err(damaged(format!(
                    "it holds segment {} from position {} with {} events, where its manifest names segment {} from {} with {}",
                    h.segment_no, h.first_position, summary.events, m.segment, m.first_position, m.events
                )));
            }
            report.events += summary.events;
            report.segments += 1;
            done.segments_done += 1;
            progress(done);
        }
        // Segments archived after different scavenges may disagree on a stream's removed
        // versions: the store had one run per stream, so the restored directory does too.
        report.removed = {
            let dir = staging.clone();
            tokio::task::spawn_blocking(move || {
                strata_log::reconcile_copied_segments(&dir, next_position)
            })
            .await
            .map_err(|e| ArchiveError::Store(e.to_string()))?
            .map_err(|reason| ArchiveError::Damaged {
                object: self.url.clone(),
                reason: format!("its segments' removed versions cannot be reconciled: {reason}"),
            })?
        };
        {
            let (dir, n) = (staging.clone(), manifests.len() as u64);
            tokio::task::spawn_blocking(move || {
                strata_log::finish_restored_segments(&dir, n, next_position)?;
                sync_dir(&dir)?;
                Ok::<_, std::io::Error>(())
            })
            .await
            .map_err(|e| ArchiveError::Store(e.to_string()))?
            .map_err(ArchiveError::io(format!("finishing {}", staging.display())))?;
        }
        // `rename` replaces an empty directory; one that gained entries meanwhile stays.
        std::fs::rename(&staging, dir).map_err(|e| {
            if dir_has_entries(dir).unwrap_or(false) {
                ArchiveError::NotEmpty {
                    dir: dir.to_path_buf(),
                }
            } else {
                ArchiveError::io(format!("moving {} to {}", staging.display(), dir.display()))(e)
            }
        })?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent).map_err(ArchiveError::io(format!("syncing {}", parent.display())))?;
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Checks the whole archive: the manifests follow one another; every file is there with
    /// the size and SHA-256 its manifest names; every segment's records check out; and the
    /// segments restored into a scratch directory under `scratch` pass `strata verify`
    /// (stream versions, event ids, index files). Needs room under `scratch` for one copy
    /// of the archive, removed afterwards.
    pub async fn verify(&self, scratch: &Path) -> Result<ArchiveVerifyReport, ArchiveError> {
        let dir = scratch.join(format!("strata-verify-archive-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(ArchiveError::io(format!("removing {}", dir.display())))?;
        }
        let result = async {
            let restored = self.restore(&dir, &|_| {}).await?;
            let checked = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || strata_log::verify(&dir))
                    .await
                    .map_err(|e| ArchiveError::Store(e.to_string()))?
            };
            let store = checked.map_err(|e| ArchiveError::Damaged {
                object: self.url.clone(),
                reason: format!("the restored segments do not verify: {e}"),
            })?;
            Ok(ArchiveVerifyReport {
                segments: restored.segments,
                events: restored.events,
                bytes: restored.bytes,
                store,
            })
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        if let Ok(staging) = staging_dir(&dir) {
            let _ = std::fs::remove_dir_all(staging);
        }
        result
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

/// Where a restore into `dir` builds the directory: beside it, hidden.
fn staging_dir(dir: &Path) -> Result<PathBuf, ArchiveError> {
    let name = dir
        .file_name()
        .ok_or_else(|| ArchiveError::InvalidAddress {
            url: dir.display().to_string(),
            reason: "a restore needs a directory with a name".to_owned(),
        })?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .map_err(ArchiveError::io(format!("creating {}", parent.display())))?;
    Ok(parent.join(format!(".{}.restoring", name.to_string_lossy())))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
