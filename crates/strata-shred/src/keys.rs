//! Subject keys: where they are kept ([`KeyStorage`]: a directory for the embedded store, an
//! in-memory map for tests and the memory store), and the [`Keyring`] that wraps, unwraps and
//! caches them.
//!
//! A key is created on a subject's first sealed field, durably, before the event that uses it
//! is appended. Forgetting a subject first records the forget as **pending** (with the subject
//! id, so that the `$subjectForgotten` event can still be appended after a crash), then
//! destroys the key in place, durably; the pending record goes once the event is appended.
//! Opening a key store finishes every pending forget.

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use ring::digest;

use crate::limits::{KEY_CACHE_ENTRIES, SUBJECT_MAX_BYTES};
use crate::master::{MasterKey, SubjectRef};
use crate::rotation::{Secrets, StoredSecrets};
use crate::seal::{new_wrapped_key, unwrap_key, SubjectKey, WRAPPED_KEY_BYTES};

/// Why a subject key could not be had or forgotten.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key store is under another master key: nothing it holds would unwrap.
    #[error("the key store at {0} is under another master key; start with the one it was set up with, or last rotated to")]
    WrongMasterKey(String),
    /// A stored key did not unwrap under the master key, or its file is damaged.
    #[error("the key of subject {subject} is damaged: {reason}")]
    Damaged {
        /// The subject's reference (its id is not known here).
        subject: SubjectRef,
        /// What failed.
        reason: String,
    },
    /// An event holds a field sealed for a subject whose key the store never had: the key
    /// store is not the one the events were written with (restored from another backup?).
    #[error("no key is stored for subject {0}, whose data an event holds: is this the key store the events were written with?")]
    Missing(SubjectRef),
    /// The subject id is empty, too long or holds control characters.
    #[error("the subject id is invalid: {0}")]
    InvalidSubject(&'static str),
    /// Reading or writing the key store failed.
    #[error("key store I/O error at {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The backend holding the keys failed (a database, say).
    #[error("the key store failed: {0}")]
    Backend(String),
    /// This process was started without the master key ([`crate::Shredded::keyless`]).
    #[error(
        "this process has no master key: start it with one to register schemas or forget subjects"
    )]
    NoMasterKey,
    /// The backend holding the keys cannot be reached right now (a database connection).
    #[error("the key store is unavailable: {0}")]
    Unavailable(String),
    /// A master key rotation cannot run as asked, or the master key was rotated under this
    /// process (restart it with the new one).
    #[error("master key rotation: {0}")]
    Rotation(String),
}

/// What a key store holds for one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredKey {
    /// The subject's key, wrapped under the master key.
    Wrapped([u8; WRAPPED_KEY_BYTES]),
    /// The subject was forgotten: its key is destroyed.
    Forgotten,
    /// No key was ever stored.
    Absent,
}

/// A forget recorded but whose `$subjectForgotten` event is not known to be appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingForget {
    /// The subject's reference.
    pub subject_ref: SubjectRef,
    /// The subject's id.
    pub subject: String,
}

/// Where subject keys are kept, durably. Every method returns only once what it wrote is
/// durable. Implemented for a directory ([`DirKeys`]) and in memory ([`MemoryKeys`]).
#[async_trait]
pub trait KeyStorage: Send + Sync + 'static {
    /// The master key's check value the store recorded, recording `check` if none is: `true`
    /// when they agree.
    async fn check_master(&self, check: [u8; 16]) -> Result<bool, KeyError>;
    /// What is stored for `subject`.
    async fn load(&self, subject: SubjectRef) -> Result<StoredKey, KeyError>;
    /// Stores `wrapped` for `subject` unless something is stored already; returns what is
    /// stored afterwards (the earlier key when two creations race). `check` is the check value
    /// of the master key the caller opened the store with: a store shared between processes
    /// refuses the key ([`KeyError::Rotation`]) when another master key is in force now.
    async fn create(
        &self,
        subject: SubjectRef,
        wrapped: [u8; WRAPPED_KEY_BYTES],
        check: [u8; 16],
    ) -> Result<StoredKey, KeyError>;
    /// Records the forget of `subject` as pending, then destroys its key (or marks it
    /// forgotten when it has none, so that no key is created for it later). Returns what was
    /// stored before.
    async fn forget(&self, pending: &PendingForget) -> Result<StoredKey, KeyError>;
    /// The pending forgets.
    async fn pending(&self) -> Result<Vec<PendingForget>, KeyError>;
    /// Drops the pending record of `subject`: its event is appended.
    async fn settle(&self, subject: SubjectRef) -> Result<(), KeyError>;
    /// A name for people: the directory, or the database table.
    fn name(&self) -> String;
    /// The store's secrets, once a master key rotation wrote them ([`crate::rotate_master_key`]).
    async fn secrets(&self) -> Result<Option<StoredSecrets>, KeyError>;
    /// Records `new` in one atomic write when the master key in force (the secrets' check
    /// value, or the one recorded before any rotation) is `expected` or `new.check`; `false`
    /// when it is neither.
    async fn set_secrets(&self, expected: [u8; 16], new: &StoredSecrets) -> Result<bool, KeyError>;
    /// The subjects with a record whose reference starts with the byte `prefix`.
    async fn subjects(&self, prefix: u8) -> Result<Vec<SubjectRef>, KeyError>;
    /// Replaces `subject`'s wrapped key `from` by `to` in one atomic write, if it is still
    /// `from`; `false` when it is not (forgotten meanwhile).
    async fn rewrap(
        &self,
        subject: SubjectRef,
        from: [u8; WRAPPED_KEY_BYTES],
        to: [u8; WRAPPED_KEY_BYTES],
    ) -> Result<bool, KeyError>;
}

/// Checks a subject id.
pub(crate) fn check_subject(subject: &str) -> Result<(), KeyError> {
    let bad = |why| Err(KeyError::InvalidSubject(why));
    if subject.is_empty() {
        return bad("it is empty");
    }
    if subject.len() > SUBJECT_MAX_BYTES {
        return bad("it is longer than 255 bytes");
    }
    if subject.chars().any(char::is_control) {
        return bad("it holds control characters");
    }
    Ok(())
}

/// A subject's key as the keyring caches it.
#[derive(Clone)]
enum Cached {
    Active(Arc<SubjectKey>),
    Forgotten,
}

/// What a read finds for a sealed value's subject.
#[derive(Clone)]
pub(crate) enum ReadKey {
    Active(Arc<SubjectKey>),
    Forgotten,
}

/// What [`Keyring::forget`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgetOutcome {
    /// The key was destroyed now.
    Forgotten,
    /// The subject had been forgotten before (forgetting is idempotent).
    AlreadyForgotten,
    /// The subject never had a key: nothing of theirs was sealed. It is marked forgotten, so
    /// that nothing is sealed for them later.
    NeverSeen,
}

/// Subject keys wrapped under the master key, with a bounded cache of unwrapped ones.
pub struct Keyring {
    storage: Arc<dyn KeyStorage>,
    /// The store's keys, derived from the master key or (after a rotation) sealed under it.
    secrets: Secrets,
    /// The check value of the master key this keyring was opened with.
    check: [u8; 16],
    cache: Mutex<HashMap<SubjectRef, Cached>>,
    /// Bumped by every forget and eviction: a key loaded while it moved is used once and not
    /// cached, since the forget may have destroyed it after the load read it.
    generation: std::sync::atomic::AtomicU64,
}

impl Keyring {
    /// A keyring over `storage`, refusing a master key other than the one in force (the one
    /// the store was set up with, or rotated to last).
    pub async fn open(
        storage: Arc<dyn KeyStorage>,
        master: MasterKey,
    ) -> Result<Keyring, KeyError> {
        let check = master.check_value();
        let secrets = match storage.secrets().await? {
            Some(stored) if stored.check == check => {
                Secrets::open(&stored, &master, &storage.name())?
            }
            Some(_) => return Err(KeyError::WrongMasterKey(storage.name())),
            None if storage.check_master(check).await? => Secrets::from_master(&master),
            None => return Err(KeyError::WrongMasterKey(storage.name())),
        };
        Ok(Keyring {
            storage,
            secrets,
            check,
            cache: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The reference of `subject`.
    pub fn subject_ref(&self, subject: &str) -> SubjectRef {
        self.secrets.subject_ref(subject)
    }

    /// Where a sealed snapshot's key starts ([`crate::seal::seal_snapshot`]).
    pub(crate) fn snapshot_chain(&self) -> &[u8; 32] {
        self.secrets.snapshot_chain()
    }

    fn cached(&self, subject: SubjectRef) -> Option<Cached> {
        self.cache.lock().get(&subject).cloned()
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn moved(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Caches what a load found, unless a forget or an eviction came since the load began
    /// (`generation`); a subject cached as forgotten stays so. Returns what to use.
    fn remember_loaded(&self, subject: SubjectRef, entry: Cached, generation: u64) -> Cached {
        let mut cache = self.cache.lock();
        if let Some(Cached::Forgotten) = cache.get(&subject) {
            return Cached::Forgotten;
        }
        if self.generation() == generation {
            if cache.len() >= KEY_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(subject, entry.clone());
        }
        entry
    }

    fn remember_forgotten(&self, subject: SubjectRef) {
        let mut cache = self.cache.lock();
        if cache.len() >= KEY_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(subject, Cached::Forgotten);
        self.moved();
    }

    fn unwrap(&self, subject: SubjectRef, stored: StoredKey) -> Result<Option<Cached>, KeyError> {
        Ok(match stored {
            StoredKey::Wrapped(w) => {
                // During a rotation a key may be wrapped under the old wrapping key still.
                let key = self
                    .secrets
                    .wraps()
                    .find_map(|wrap| unwrap_key(wrap, subject, &w).ok())
                    .ok_or_else(|| KeyError::Damaged {
                        subject,
                        reason: "it does not unwrap under the master key".to_owned(),
                    })?;
                Some(Cached::Active(Arc::new(SubjectKey::from_bytes(&key))))
            }
            StoredKey::Forgotten => Some(Cached::Forgotten),
            StoredKey::Absent => None,
        })
    }

    /// [`Keyring::unwrap`], telling a key re-wrapped by a rotation since this keyring opened
    /// (restart with the new master key) from a damaged one.
    async fn unwrap_loaded(
        &self,
        subject: SubjectRef,
        stored: StoredKey,
    ) -> Result<Option<Cached>, KeyError> {
        match self.unwrap(subject, stored) {
            Err(e @ KeyError::Damaged { .. }) => match self.storage.secrets().await? {
                Some(s) if s.check != self.check => Err(rotated_under_us()),
                _ => Err(e),
            },
            other => other,
        }
    }

    /// Drops `subject`'s key from the cache: another process forgot it.
    pub(crate) fn evict(&self, subject: SubjectRef) {
        let mut cache = self.cache.lock();
        cache.remove(&subject);
        self.moved();
    }

    /// The key to seal `subject`'s fields with, created on first use; `None` when the
    /// subject was forgotten.
    pub(crate) async fn key_for_seal(
        &self,
        subject: &str,
    ) -> Result<(SubjectRef, Option<Arc<SubjectKey>>), KeyError> {
        check_subject(subject)?;
        let r = self.subject_ref(subject);
        let entry = match self.cached(r) {
            Some(c) => c,
            None => {
                let generation = self.generation();
                let mut found = self.unwrap_loaded(r, self.storage.load(r).await?).await?;
                if found.is_none() {
                    let (_, wrapped) = new_wrapped_key(self.secrets.wrap(), r);
                    let stored = self.storage.create(r, wrapped, self.check).await?;
                    found = self.unwrap_loaded(r, stored).await?;
                }
                let entry = found.ok_or_else(|| {
                    KeyError::Backend(format!("the key of subject {r} was not kept"))
                })?;
                self.remember_loaded(r, entry, generation)
            }
        };
        Ok(match entry {
            Cached::Active(k) => (r, Some(k)),
            Cached::Forgotten => (r, None),
        })
    }

    /// The key to open a value sealed for `subject`.
    pub(crate) async fn key_for_read(&self, subject: SubjectRef) -> Result<ReadKey, KeyError> {
        let entry = match self.cached(subject) {
            Some(c) => c,
            None => {
                let generation = self.generation();
                let entry = self
                    .unwrap_loaded(subject, self.storage.load(subject).await?)
                    .await?
                    .ok_or(KeyError::Missing(subject))?;
                self.remember_loaded(subject, entry, generation)
            }
        };
        Ok(match entry {
            Cached::Active(k) => ReadKey::Active(k),
            Cached::Forgotten => ReadKey::Forgotten,
        })
    }

    /// Destroys `subject`'s key durably (recorded as pending until
    /// [`settle`](Self::settle)).
    pub(crate) async fn forget(&self, subject: &str) -> Result<ForgetOutcome, KeyError> {
        check_subject(subject)?;
        let pending = PendingForget {
            subject_ref: self.subject_ref(subject),
            subject: subject.to_owned(),
        };
        let before = self.storage.forget(&pending).await?;
        self.remember_forgotten(pending.subject_ref);
        Ok(match before {
            StoredKey::Wrapped(_) => ForgetOutcome::Forgotten,
            StoredKey::Forgotten => ForgetOutcome::AlreadyForgotten,
            StoredKey::Absent => ForgetOutcome::NeverSeen,
        })
    }

    /// The forgets whose event may not be appended.
    pub(crate) async fn pending(&self) -> Result<Vec<PendingForget>, KeyError> {
        self.storage.pending().await
    }

    /// The forget of `subject` is complete: its event is appended.
    pub(crate) async fn settle(&self, subject: SubjectRef) -> Result<(), KeyError> {
        self.storage.settle(subject).await
    }
}

/// Keys in memory, for tests and the memory store: gone with the process.
#[derive(Default)]
pub struct MemoryKeys {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    check: Option<[u8; 16]>,
    secrets: Option<StoredSecrets>,
    keys: HashMap<SubjectRef, StoredKey>,
    pending: HashMap<SubjectRef, PendingForget>,
}

impl MemoryKeys {
    /// An empty store.
    pub fn new() -> MemoryKeys {
        MemoryKeys::default()
    }
}

#[async_trait]
impl KeyStorage for MemoryKeys {
    async fn check_master(&self, check: [u8; 16]) -> Result<bool, KeyError> {
        Ok(*self.state.lock().check.get_or_insert(check) == check)
    }
    async fn load(&self, subject: SubjectRef) -> Result<StoredKey, KeyError> {
        Ok(self
            .state
            .lock()
            .keys
            .get(&subject)
            .cloned()
            .unwrap_or(StoredKey::Absent))
    }
    async fn create(
        &self,
        subject: SubjectRef,
        wrapped: [u8; WRAPPED_KEY_BYTES],
        check: [u8; 16],
    ) -> Result<StoredKey, KeyError> {
        let mut state = self.state.lock();
        if state.in_force() != Some(check) {
            return Err(rotated_under_us());
        }
        Ok(state
            .keys
            .entry(subject)
            .or_insert(StoredKey::Wrapped(wrapped))
            .clone())
    }
    async fn forget(&self, pending: &PendingForget) -> Result<StoredKey, KeyError> {
        let mut s = self.state.lock();
        s.pending.insert(pending.subject_ref, pending.clone());
        Ok(s.keys
            .insert(pending.subject_ref, StoredKey::Forgotten)
            .unwrap_or(StoredKey::Absent))
    }
    async fn pending(&self) -> Result<Vec<PendingForget>, KeyError> {
        Ok(self.state.lock().pending.values().cloned().collect())
    }
    async fn settle(&self, subject: SubjectRef) -> Result<(), KeyError> {
        self.state.lock().pending.remove(&subject);
        Ok(())
    }
    fn name(&self) -> String {
        "memory".to_owned()
    }
    async fn secrets(&self) -> Result<Option<StoredSecrets>, KeyError> {
        Ok(self.state.lock().secrets.clone())
    }
    async fn set_secrets(&self, expected: [u8; 16], new: &StoredSecrets) -> Result<bool, KeyError> {
        let mut state = self.state.lock();
        let in_force = state.in_force();
        if in_force != Some(expected) && in_force != Some(new.check) {
            return Ok(false);
        }
        state.secrets = Some(new.clone());
        Ok(true)
    }
    async fn subjects(&self, prefix: u8) -> Result<Vec<SubjectRef>, KeyError> {
        Ok(self
            .state
            .lock()
            .keys
            .keys()
            .filter(|r| r.0[0] == prefix)
            .copied()
            .collect())
    }
    async fn rewrap(
        &self,
        subject: SubjectRef,
        from: [u8; WRAPPED_KEY_BYTES],
        to: [u8; WRAPPED_KEY_BYTES],
    ) -> Result<bool, KeyError> {
        let mut state = self.state.lock();
        match state.keys.get_mut(&subject) {
            Some(k) if *k == StoredKey::Wrapped(from) => {
                *k = StoredKey::Wrapped(to);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl MemoryState {
    /// The check value of the master key in force.
    fn in_force(&self) -> Option<[u8; 16]> {
        self.secrets.as_ref().map(|s| s.check).or(self.check)
    }
}

/// A creation by a process opened with a master key that is no longer in force.
fn rotated_under_us() -> KeyError {
    KeyError::Rotation(
        "the master key was rotated since this process started: restart it with the new master key"
            .to_owned(),
    )
}

/// Keys in a directory of the embedded store's data directory (`keys/`), with the log's crash
/// rules: a new file is written, fsynced and renamed into place, then its directory fsynced.
///
/// Layout:
/// - `master.check`: the master key's check value (16 bytes) and its SHA-256 prefix (8);
/// - `secrets.sealed`, once the master key was rotated: the check value of the master key in
///   force and the store's secrets sealed under it ([`crate::rotate_master_key`]);
/// - `subjects/<2 hex>/<32 hex>.key`: one subject's record of [`KEY_FILE_BYTES`] bytes, named
///   by its reference (never its id);
/// - `pending/<32 hex>`: a pending forget, holding the subject id.
///
/// A subject's record: magic `STRKEY01`, a state byte (1 = key, 2 = forgotten), the wrapped
/// key (zeros once forgotten), zeros, and the first 8 bytes of the SHA-256 of everything
/// before them. Forgetting overwrites the record in place with the forgotten state and zeros,
/// then `fdatasync`s it: on a file system that writes in place (ext4, xfs) the wrapped key's
/// bytes are overwritten on the device. `docs/gdpr.md` says what that does not cover (SSD
/// remapping, copy-on-write file systems, backups).
pub struct DirKeys {
    dir: PathBuf,
    /// Serialises creations and forgets in this process (the data directory's lock keeps other
    /// processes out).
    write: Mutex<()>,
}

/// Bytes of a subject's record in a [`DirKeys`] directory.
pub const KEY_FILE_BYTES: usize = 128;
const KEY_MAGIC: &[u8; 8] = b"STRKEY01";
const STATE_KEY: u8 = 1;
const STATE_FORGOTTEN: u8 = 2;

fn checksum(bytes: &[u8]) -> [u8; 8] {
    digest::digest(&digest::SHA256, bytes).as_ref()[..8]
        .try_into()
        .expect("8 bytes of 32")
}

fn encode_record(stored: &StoredKey) -> [u8; KEY_FILE_BYTES] {
    let mut b = [0u8; KEY_FILE_BYTES];
    b[..8].copy_from_slice(KEY_MAGIC);
    match stored {
        StoredKey::Wrapped(w) => {
            b[8] = STATE_KEY;
            b[9..9 + WRAPPED_KEY_BYTES].copy_from_slice(w);
        }
        StoredKey::Forgotten | StoredKey::Absent => b[8] = STATE_FORGOTTEN,
    }
    let sum = checksum(&b[..KEY_FILE_BYTES - 8]);
    b[KEY_FILE_BYTES - 8..].copy_from_slice(&sum);
    b
}

fn decode_record(b: &[u8]) -> Result<StoredKey, String> {
    if b.len() != KEY_FILE_BYTES {
        return Err(format!(
            "its record is {} bytes, not {KEY_FILE_BYTES}",
            b.len()
        ));
    }
    if &b[..8] != KEY_MAGIC || b[KEY_FILE_BYTES - 8..] != checksum(&b[..KEY_FILE_BYTES - 8]) {
        return Err("its record fails its checksum".to_owned());
    }
    match b[8] {
        STATE_KEY => Ok(StoredKey::Wrapped(
            b[9..9 + WRAPPED_KEY_BYTES].try_into().expect("length"),
        )),
        STATE_FORGOTTEN => Ok(StoredKey::Forgotten),
        s => Err(format!("its record has unknown state {s}")),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents (owner only), each made durable by an fsync of the
/// directory that holds it: a key written below a directory whose entry the power took would
/// be lost with it.
fn create_dirs(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    sync_dir(
        dir.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}

/// Writes `bytes` to `path` (readable by the owner only) through a temporary file: written,
/// fsynced, renamed, directory fsynced.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().expect("a file in a directory");
    create_dirs(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

impl DirKeys {
    /// The key store in `dir`, created if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<DirKeys, KeyError> {
        let dir = dir.into();
        for d in [dir.join("subjects"), dir.join("pending")] {
            create_dirs(&d).map_err(|source| KeyError::Io { path: d, source })?;
        }
        // A forget stopped while its pending record was being written left it as a
        // temporary file: it recorded nothing (the key was not touched yet), so it goes.
        let pending = dir.join("pending");
        let io = |source| KeyError::Io {
            path: pending.clone(),
            source,
        };
        let mut removed = false;
        for entry in std::fs::read_dir(&pending).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_file(&path).map_err(io)?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&pending).map_err(io)?;
        }
        Ok(DirKeys {
            dir,
            write: Mutex::new(()),
        })
    }

    fn key_path(&self, subject: SubjectRef) -> PathBuf {
        let hex = subject.to_hex();
        self.dir
            .join("subjects")
            .join(&hex[..2])
            .join(format!("{hex}.key"))
    }

    fn pending_path(&self, subject: SubjectRef) -> PathBuf {
        self.dir.join("pending").join(subject.to_hex())
    }

    fn io(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
        move |source| KeyError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn load_now(&self, subject: SubjectRef) -> Result<StoredKey, KeyError> {
        let path = self.key_path(subject);
        match std::fs::read(&path) {
            Ok(bytes) => decode_record(&bytes).or_else(|reason| {
                // A record torn while a forget overwrote it: the forget is pending, and
                // finishing it is what was asked.
                if self.pending_path(subject).exists() {
                    tracing::warn!(file = %path.display(), "a key record torn by a forget: the forget is finished");
                    Ok(StoredKey::Forgotten)
                } else {
                    Err(KeyError::Damaged { subject, reason })
                }
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(StoredKey::Absent),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    fn create_now(
        &self,
        subject: SubjectRef,
        wrapped: [u8; WRAPPED_KEY_BYTES],
        check: [u8; 16],
    ) -> Result<StoredKey, KeyError> {
        let _w = self.write.lock();
        if self.in_force()? != Some(check) {
            return Err(rotated_under_us());
        }
        let before = self.load_now(subject)?;
        if before != StoredKey::Absent {
            return Ok(before);
        }
        let stored = StoredKey::Wrapped(wrapped);
        let path = self.key_path(subject);
        write_new(&path, &encode_record(&stored)).map_err(Self::io(&path))?;
        Ok(stored)
    }

    fn forget_now(&self, pending: &PendingForget) -> Result<StoredKey, KeyError> {
        let _w = self.write.lock();
        let subject = pending.subject_ref;
        let marker = self.pending_path(subject);
        write_new(&marker, pending.subject.as_bytes()).map_err(Self::io(&marker))?;
        let path = self.key_path(subject);
        // A creation or re-wrap stopped before its rename left the key in a temporary file.
        let tmp = path.with_extension("tmp");
        match std::fs::remove_file(&tmp) {
            Ok(()) => sync_dir(tmp.parent().expect("a directory")).map_err(Self::io(&tmp))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Self::io(&tmp)(e)),
        }
        let before = match self.load_now(subject) {
            Ok(s) => s,
            // Damaged: destroyed all the same.
            Err(KeyError::Damaged { .. }) => StoredKey::Wrapped([0; WRAPPED_KEY_BYTES]),
            Err(e) => return Err(e),
        };
        let record = encode_record(&StoredKey::Forgotten);
        match before {
            StoredKey::Absent => {
                write_new(&path, &record).map_err(Self::io(&path))?;
            }
            _ => {
                // In place, so that the wrapped key's bytes are overwritten, not unlinked.
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(Self::io(&path))?;
                f.write_all_at(&record, 0).map_err(Self::io(&path))?;
                f.set_len(KEY_FILE_BYTES as u64).map_err(Self::io(&path))?;
                f.sync_data().map_err(Self::io(&path))?;
            }
        }
        Ok(before)
    }

    fn pending_now(&self) -> Result<Vec<PendingForget>, KeyError> {
        let dir = self.dir.join("pending");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(Self::io(&dir))? {
            let entry = entry.map_err(Self::io(&dir))?;
            let name = entry.file_name();
            let Some(subject_ref) = name.to_str().and_then(SubjectRef::from_hex) else {
                // A temporary file of a forget that did not finish: it recorded nothing.
                continue;
            };
            let path = entry.path();
            let subject = std::fs::read_to_string(&path).map_err(Self::io(&path))?;
            out.push(PendingForget {
                subject_ref,
                subject,
            });
        }
        Ok(out)
    }

    fn settle_now(&self, subject: SubjectRef) -> Result<(), KeyError> {
        let path = self.pending_path(subject);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir.join("pending")).map_err(Self::io(&path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    fn secrets_path(&self) -> PathBuf {
        // Not `master.*`: the temporary file of each is named by replacing its extension.
        self.dir.join("secrets.sealed")
    }

    /// `secrets.sealed`: the check value (16 bytes), the sealed secrets' length (4, little
    /// endian) and bytes, and the SHA-256 prefix (8) of all that.
    fn secrets_now(&self) -> Result<Option<StoredSecrets>, KeyError> {
        let path = self.secrets_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(&path)(e)),
        };
        let damaged = || KeyError::Io {
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, "damaged"),
        };
        if bytes.len() < 28 || bytes[bytes.len() - 8..] != checksum(&bytes[..bytes.len() - 8]) {
            return Err(damaged());
        }
        let len = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
        if bytes.len() != 28 + len {
            return Err(damaged());
        }
        Ok(Some(StoredSecrets {
            check: bytes[..16].try_into().expect("16 bytes"),
            sealed: bytes[20..20 + len].to_vec(),
        }))
    }

    /// The check value of the master key in force: the secrets', or the one recorded at set-up.
    fn in_force(&self) -> Result<Option<[u8; 16]>, KeyError> {
        if let Some(s) = self.secrets_now()? {
            return Ok(Some(s.check));
        }
        let path = self.dir.join("master.check");
        match std::fs::read(&path) {
            Ok(b) if b.len() == 24 && b[16..] == checksum(&b[..16]) => {
                Ok(Some(b[..16].try_into().expect("16 bytes")))
            }
            Ok(_) => Err(KeyError::Io {
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, "damaged"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    fn set_secrets_now(&self, expected: [u8; 16], new: &StoredSecrets) -> Result<bool, KeyError> {
        let _w = self.write.lock();
        let in_force = self.in_force()?;
        if in_force != Some(expected) && in_force != Some(new.check) {
            return Ok(false);
        }
        let mut record = new.check.to_vec();
        record.extend_from_slice(&(new.sealed.len() as u32).to_le_bytes());
        record.extend_from_slice(&new.sealed);
        let sum = checksum(&record);
        record.extend_from_slice(&sum);
        let path = self.secrets_path();
        write_new(&path, &record).map_err(Self::io(&path))?;
        Ok(true)
    }

    /// The subjects under `subjects/<prefix>/`; temporary files a stopped creation or
    /// re-wrap left there (a key that was never in use, or a copy of one) are removed.
    fn subjects_now(&self, prefix: u8) -> Result<Vec<SubjectRef>, KeyError> {
        let _w = self.write.lock();
        let dir = self.dir.join("subjects").join(format!("{prefix:02x}"));
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&dir)(e)),
        };
        let mut out = Vec::new();
        let mut removed = false;
        for entry in entries {
            let entry = entry.map_err(Self::io(&dir))?;
            let name = entry.file_name();
            let name = name.to_str().unwrap_or_default();
            if let Some(r) = name.strip_suffix(".key").and_then(SubjectRef::from_hex) {
                out.push(r);
            } else if name.ends_with(".tmp") {
                std::fs::remove_file(entry.path()).map_err(Self::io(&entry.path()))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&dir).map_err(Self::io(&dir))?;
        }
        Ok(out)
    }

    fn rewrap_now(
        &self,
        subject: SubjectRef,
        from: [u8; WRAPPED_KEY_BYTES],
        to: [u8; WRAPPED_KEY_BYTES],
    ) -> Result<bool, KeyError> {
        let _w = self.write.lock();
        if self.load_now(subject)? != StoredKey::Wrapped(from) {
            return Ok(false);
        }
        // A new file renamed over the old: a stop leaves one record or the other, whole.
        let path = self.key_path(subject);
        write_new(&path, &encode_record(&StoredKey::Wrapped(to))).map_err(Self::io(&path))?;
        Ok(true)
    }

    fn check_now(&self, check: [u8; 16]) -> Result<bool, KeyError> {
        let path = self.dir.join("master.check");
        let mut record = check.to_vec();
        record.extend_from_slice(&checksum(&check));
        match std::fs::read(&path) {
            Ok(bytes) if bytes == record => Ok(true),
            Ok(bytes) if bytes.len() == 24 && bytes[16..] == checksum(&bytes[..16]) => Ok(false),
            Ok(_) => Err(KeyError::Io {
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, "damaged"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_new(&path, &record).map_err(Self::io(&path))?;
                Ok(true)
            }
            Err(e) => Err(Self::io(&path)(e)),
        }
    }
}

/// Runs `f` on the blocking pool (file reads and fsyncs never run on a runtime's worker).
async fn blocking<T: Send + 'static>(
    keys: &Arc<DirKeys>,
    f: impl FnOnce(&DirKeys) -> Result<T, KeyError> + Send + 'static,
) -> Result<T, KeyError> {
    let keys = keys.clone();
    tokio::task::spawn_blocking(move || f(&keys))
        .await
        .map_err(|e| KeyError::Backend(format!("a key store task failed: {e}")))?
}

/// [`DirKeys`] shared, as the keyring holds it.
#[derive(Clone)]
pub struct SharedDirKeys(Arc<DirKeys>);

impl DirKeys {
    /// This store, ready to be a keyring's storage.
    pub fn shared(self) -> Arc<dyn KeyStorage> {
        Arc::new(SharedDirKeys(Arc::new(self)))
    }
}

#[async_trait]
impl KeyStorage for SharedDirKeys {
    async fn check_master(&self, check: [u8; 16]) -> Result<bool, KeyError> {
        blocking(&self.0, move |k| k.check_now(check)).await
    }
    async fn load(&self, subject: SubjectRef) -> Result<StoredKey, KeyError> {
        blocking(&self.0, move |k| k.load_now(subject)).await
    }
    async fn create(
        &self,
        subject: SubjectRef,
        wrapped: [u8; WRAPPED_KEY_BYTES],
        check: [u8; 16],
    ) -> Result<StoredKey, KeyError> {
        blocking(&self.0, move |k| k.create_now(subject, wrapped, check)).await
    }
    async fn secrets(&self) -> Result<Option<StoredSecrets>, KeyError> {
        blocking(&self.0, |k| k.secrets_now()).await
    }
    async fn set_secrets(&self, expected: [u8; 16], new: &StoredSecrets) -> Result<bool, KeyError> {
        let new = new.clone();
        blocking(&self.0, move |k| k.set_secrets_now(expected, &new)).await
    }
    async fn subjects(&self, prefix: u8) -> Result<Vec<SubjectRef>, KeyError> {
        blocking(&self.0, move |k| k.subjects_now(prefix)).await
    }
    async fn rewrap(
        &self,
        subject: SubjectRef,
        from: [u8; WRAPPED_KEY_BYTES],
        to: [u8; WRAPPED_KEY_BYTES],
    ) -> Result<bool, KeyError> {
        blocking(&self.0, move |k| k.rewrap_now(subject, from, to)).await
    }
    async fn forget(&self, pending: &PendingForget) -> Result<StoredKey, KeyError> {
        let pending = pending.clone();
        blocking(&self.0, move |k| k.forget_now(&pending)).await
    }
    async fn pending(&self) -> Result<Vec<PendingForget>, KeyError> {
        blocking(&self.0, |k| k.pending_now()).await
    }
    async fn settle(&self, subject: SubjectRef) -> Result<(), KeyError> {
        blocking(&self.0, move |k| k.settle_now(subject)).await
    }
    fn name(&self) -> String {
        self.0.dir.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_damage() {
        let w = StoredKey::Wrapped([9; WRAPPED_KEY_BYTES]);
        for s in [w.clone(), StoredKey::Forgotten] {
            assert_eq!(decode_record(&encode_record(&s)), Ok(s));
        }
        let rec = encode_record(&w);
        for i in 0..KEY_FILE_BYTES {
            let mut b = rec;
            b[i] ^= 0x10;
            assert!(decode_record(&b).is_err(), "byte {i}");
        }
        assert!(decode_record(&rec[..100]).is_err());
        // A forgotten record holds no byte of the key.
        let f = encode_record(&StoredKey::Forgotten);
        assert!(f.windows(4).all(|x| x != [9, 9, 9, 9]));
    }

    #[tokio::test]
    async fn a_directory_store_keeps_keys_and_forgets_them_in_place() {
        let dir = tempfile::tempdir().expect("dir");
        let master = || MasterKey::from_bytes([3; 32]);
        let keys = DirKeys::open(dir.path()).expect("open").shared();
        let ring = Keyring::open(keys.clone(), master()).await.expect("ring");
        let (r, key) = ring.key_for_seal("customer-1").await.expect("key");
        assert!(key.is_some());
        let path = dir
            .path()
            .join("subjects")
            .join(&r.to_hex()[..2])
            .join(format!("{}.key", r.to_hex()));
        let before = std::fs::read(&path).expect("record");
        let StoredKey::Wrapped(wrapped) = decode_record(&before).expect("decodes") else {
            panic!("a key")
        };
        // A second keyring over the same directory finds the same key.
        let again = Keyring::open(DirKeys::open(dir.path()).expect("open").shared(), master())
            .await
            .expect("ring");
        assert!(matches!(
            again.key_for_read(r).await,
            Ok(ReadKey::Active(_))
        ));
        assert_eq!(
            ring.forget("customer-1").await.expect("forget"),
            ForgetOutcome::Forgotten
        );
        let after = std::fs::read(&path).expect("record");
        assert_eq!(decode_record(&after), Ok(StoredKey::Forgotten));
        assert!(
            !after.windows(WRAPPED_KEY_BYTES).any(|w| w == wrapped),
            "the wrapped key is overwritten"
        );
        assert_eq!(keys.pending().await.expect("pending").len(), 1);
        assert_eq!(
            ring.forget("customer-1").await.expect("forget"),
            ForgetOutcome::AlreadyForgotten
        );
        // Never seen: marked, so that no key is made for them later.
        assert_eq!(
            ring.forget("customer-2").await.expect("forget"),
            ForgetOutcome::NeverSeen
        );
        assert!(matches!(
            ring.key_for_seal("customer-2").await,
            Ok((_, None))
        ));
        // Another master key is refused.
        assert!(matches!(
            Keyring::open(keys.clone(), MasterKey::from_bytes([4; 32])).await,
            Err(KeyError::WrongMasterKey(_))
        ));
        // Settling drops the pending record.
        for p in keys.pending().await.expect("pending") {
            keys.settle(p.subject_ref).await.expect("settle");
        }
        assert!(keys.pending().await.expect("pending").is_empty());
    }

    #[tokio::test]
    async fn a_damaged_record_is_a_typed_error_unless_a_forget_tore_it() {
        let dir = tempfile::tempdir().expect("dir");
        let keys = DirKeys::open(dir.path()).expect("open").shared();
        let ring = Keyring::open(keys.clone(), MasterKey::from_bytes([3; 32]))
            .await
            .expect("ring");
        let (r, _) = ring.key_for_seal("c-1").await.expect("key");
        let path = dir
            .path()
            .join("subjects")
            .join(&r.to_hex()[..2])
            .join(format!("{}.key", r.to_hex()));
        let mut rec = std::fs::read(&path).expect("record");
        rec[20] ^= 1;
        std::fs::write(&path, &rec).expect("write");
        let fresh = || async {
            Keyring::open(
                DirKeys::open(dir.path()).expect("open").shared(),
                MasterKey::from_bytes([3; 32]),
            )
            .await
            .expect("ring")
        };
        assert!(matches!(
            fresh().await.key_for_read(r).await,
            Err(KeyError::Damaged { .. })
        ));
        std::fs::write(dir.path().join("pending").join(r.to_hex()), "c-1").expect("marker");
        assert!(matches!(
            fresh().await.key_for_read(r).await,
            Ok(ReadKey::Forgotten)
        ));
    }
}
