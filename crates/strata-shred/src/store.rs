//! [`Shredded`]: an event store whose events' personal fields are sealed on the way in and
//! opened on the way out, over any backend.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use serde_json::Value;
use strata_core::lifecycle;
use strata_core::scavenge::{ProgressFn, ScavengeError, ScavengeReport};
use strata_core::{
    AllPage, AppendError, AppendResult, BackendError, CategorySummary, Corruption,
    CorruptionLocation, EventData, EventStore, ExpectedVersion, InvalidInput, ListOptions, Page,
    Position, ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent, Snapshot,
    SnapshotAndEvents, SnapshotError, SnapshotStore, StreamId, StreamInfo, StreamMetadata,
    StreamMetadataRecord, StreamSummary, SubscribeFrom, Subscription, SubscriptionTarget,
    Timestamp, CONTENT_TYPE_JSON,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::keys::{ForgetOutcome, KeyError, Keyring, ReadKey};
use crate::limits::{SCHEMAS_MAX, SNAPSHOT_SUBJECTS_MAX, SYNC_INTERVAL_MS};
use crate::master::SubjectRef;
use crate::personal::PersonalData;
use crate::scan::{self, Step, Taken};
use crate::schema::{holds_sealed_key, EncryptionSchema};
use crate::seal::{self, SealError};
use strata_core::limits::JSON_NESTING_MAX_DEPTH;

/// The stream that holds the encryption schemas, one `$encryptionSchema` event per
/// registration (the latest of an event type is in force).
pub const SCHEMAS_STREAM: &str = lifecycle::ENCRYPTION_SCHEMA_STREAM;
/// The event type of a schema's registration.
pub const SCHEMA_EVENT: &str = lifecycle::EVENT_TYPE_ENCRYPTION_SCHEMA;
/// The stream of `$subjectForgotten` events, one per forgotten subject.
pub const FORGOTTEN_STREAM: &str = lifecycle::SUBJECT_FORGOTTEN_STREAM;
/// The event type that tells projections a subject was forgotten: data
/// `{"subject": "<id>", "subjectRef": "<32 hex>"}`.
pub const FORGOTTEN_EVENT: &str = lifecycle::EVENT_TYPE_SUBJECT_FORGOTTEN;
/// The metadata key of a read event whose sealed fields belonged to a forgotten subject: the
/// JSON pointers of the fields that read as `null`.
pub const FORGOTTEN_METADATA_KEY: &str = "$forgotten";

/// Why a schema could not be registered or a subject forgotten.
#[derive(Debug, thiserror::Error)]
pub enum ShredError {
    /// The schema is malformed.
    #[error(transparent)]
    InvalidSchema(#[from] InvalidInput),
    /// More event types than [`SCHEMAS_MAX`] would have a schema.
    #[error("{0} event types already have a schema, the most a store keeps")]
    TooManySchemas(usize),
    /// The key store failed, or refused the subject id.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Appending the schema or the `$subjectForgotten` event failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// Reading the schemas failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// What [`Shredded::forget`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetReport {
    /// Whether the key was destroyed now, before, or never existed.
    pub outcome: ForgetOutcome,
    /// The subject's reference, as its sealed values and its `$subjectForgotten` event name it.
    pub subject_ref: String,
    /// Where the `$subjectForgotten` event is.
    pub position: Position,
}

/// The schemas in force, by event type, and the version of the schema stream they were read at.
#[derive(Default)]
struct Schemas {
    by_type: HashMap<String, Arc<EncryptionSchema>>,
    /// Event types whose schema in force this process cannot read (a newer version of
    /// Strata registered it): their events are refused rather than written in clear.
    unknown: std::collections::HashSet<String>,
    /// Whether the schema stream holds a schema whose event type is there but not a string:
    /// then every event type without a schema this process reads is refused.
    unknown_types: bool,
    version: Option<u64>,
}

/// An event store whose events' personal fields are sealed with a key per data subject, over
/// any backend. Appends seal the fields an event type's [`EncryptionSchema`] names; reads
/// open them, and give a forgotten subject's fields as `null`, their pointers listed under the
/// metadata key [`FORGOTTEN_METADATA_KEY`]. Everything else is the inner store's.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use strata_core::{EventData, EventStore, ExpectedVersion, ReadStreamOptions, StreamId};
/// use strata_shred::{EncryptionSchema, Keyring, MasterKey, MemoryKeys, Shredded, SubjectSource};
///
/// let inner = Arc::new(strata_testkit::MemoryStore::new());
/// let keys = Keyring::open(Arc::new(MemoryKeys::new()), MasterKey::from_bytes([7; 32])).await?;
/// let store = Shredded::open(inner.clone(), keys).await?;
/// store.register(EncryptionSchema {
///     event_type: "CustomerRegistered".into(),
///     subject: SubjectSource::Pointer("/customerId".into()),
///     fields: vec!["/email".into()],
/// }).await?;
///
/// let stream = StreamId::new("customer-1")?;
/// let event = EventData::json("CustomerRegistered",
///     &serde_json::json!({"customerId": "c-1", "email": "ada@example.com"}))?;
/// store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
///
/// // The inner store holds only ciphertext; the wrapper reads the email back.
/// let stored = inner.read_stream(&stream, ReadStreamOptions::forward()).await?;
/// assert!(!String::from_utf8_lossy(&stored[0].data).contains("ada@"));
/// let read = store.read_stream(&stream, ReadStreamOptions::forward()).await?;
/// assert_eq!(read[0].data_json().unwrap()["email"], "ada@example.com");
///
/// // Forgotten: the event still reads, without the email.
/// store.forget("c-1").await?;
/// let read = store.read_stream(&stream, ReadStreamOptions::forward()).await?;
/// assert_eq!(read[0].data_json().unwrap()["email"], serde_json::Value::Null);
/// assert_eq!(read[0].metadata.get("$forgotten"), Some(&serde_json::json!(["/email"])));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Shredded {
    inner: Arc<dyn EventStore>,
    /// Where snapshots go, sealed ([`Shredded::with_snapshots`]).
    snapshots: Option<Arc<dyn SnapshotStore>>,
    /// Streams whose snapshots are refused for good, at most [`REFUSED_STREAMS_MAX`].
    refused: Arc<parking_lot::Mutex<std::collections::HashSet<StreamId>>>,
    /// `None` in a process without the master key ([`Shredded::keyless`]).
    keyring: Option<Arc<Keyring>>,
    schemas: Arc<RwLock<Schemas>>,
    sync: Arc<tokio::sync::Mutex<Sync>>,
    /// When the last look ended, for a check without waiting on `sync`.
    looked: Arc<parking_lot::Mutex<Option<tokio::time::Instant>>>,
}

/// What this process has read of the forgotten stream.
struct Sync {
    /// The next version of [`FORGOTTEN_STREAM`] to read.
    next_forgotten: u64,
}

fn schemas_stream() -> StreamId {
    StreamId::new(SCHEMAS_STREAM).expect("a valid stream id")
}

fn forgotten_stream() -> StreamId {
    StreamId::new(FORGOTTEN_STREAM).expect("a valid stream id")
}

/// The `$subjectForgotten` event's id: derived from the subject's reference, so that appending
/// it again (a retried forget, a crash before its record was settled) is an idempotent retry.
fn forgotten_event_id(subject: SubjectRef) -> Uuid {
    let mut b = *subject.as_bytes();
    b[6] = (b[6] & 0x0f) | 0x80; // version 8: custom
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    Uuid::from_bytes(b)
}

fn key_read_error(e: KeyError, position: Position) -> ReadError {
    match e {
        KeyError::Damaged { .. } | KeyError::Missing(_) => ReadError::Corruption(Corruption::new(
            CorruptionLocation::Other("the key store".to_owned()),
            Some(position),
            e.to_string(),
        )),
        KeyError::Unavailable(_) => {
            ReadError::Unavailable(BackendError::with_source(e.to_string(), e))
        }
        other => ReadError::Storage(BackendError::with_source(other.to_string(), other)),
    }
}

fn key_append_error(e: KeyError, at: &str) -> AppendError {
    match e {
        KeyError::InvalidSubject(why) => AppendError::InvalidInput(InvalidInput::new(
            at,
            format!("names a subject id that is not valid: {why}"),
        )),
        KeyError::Unavailable(_) => {
            AppendError::Unavailable(BackendError::with_source(e.to_string(), e))
        }
        other => AppendError::Storage(BackendError::with_source(other.to_string(), other)),
    }
}

impl Shredded {
    /// Wraps `inner`: reads the schemas in force, and finishes the forgets a crash left
    /// pending (their `$subjectForgotten` events appended).
    pub async fn open(
        inner: Arc<dyn EventStore>,
        keyring: Keyring,
    ) -> Result<Shredded, ShredError> {
        Shredded::start(inner, Some(Arc::new(keyring))).await
    }

    /// Wraps `inner` in a process that has no master key: events of a type with a schema are
    /// refused ([`AppendError::InvalidInput`] naming the event type: this process cannot
    /// seal them), whenever the
    /// schema was registered, by this process or another; everything else passes, and sealed
    /// values read as they are stored. What a process opens a store with when it was given no
    /// master key, so that a schema registered after it started is kept all the same.
    pub async fn keyless(inner: Arc<dyn EventStore>) -> Result<Shredded, ShredError> {
        Shredded::start(inner, None).await
    }

    async fn start(
        inner: Arc<dyn EventStore>,
        keyring: Option<Arc<Keyring>>,
    ) -> Result<Shredded, ShredError> {
        let store = Shredded {
            inner,
            snapshots: None,
            refused: Arc::default(),
            keyring,
            schemas: Arc::new(RwLock::new(Schemas::default())),
            sync: Arc::new(tokio::sync::Mutex::new(Sync { next_forgotten: 0 })),
            looked: Arc::new(parking_lot::Mutex::new(None)),
        };
        store.refresh_schemas().await?;
        let pending = match &store.keyring {
            Some(keyring) => keyring.pending().await?,
            None => Vec::new(),
        };
        for pending in pending {
            tracing::warn!(subject = %pending.subject_ref, "finishing a forget that a stop interrupted");
            let keyring = store.keyring()?;
            // The stop may have come before the key was destroyed, or while its record was
            // being overwritten: destroy it (again) first.
            keyring.forget(&pending.subject).await?;
            store
                .append_forgotten(&pending.subject, pending.subject_ref)
                .await?;
            keyring.settle(pending.subject_ref).await?;
        }
        // The cache is empty: forgets made before now have nothing to evict.
        let forgotten = store.inner.stream_info(&forgotten_stream()).await?;
        store.sync.lock().await.next_forgotten = forgotten.current_version.map_or(0, |v| v + 1);
        Ok(store)
    }

    /// Keeps aggregate snapshots in `snapshots` (the backend's own, as a rule), sealed under
    /// a key derived from the master key and the keys of every subject whose sealed values
    /// the stream holds up to the snapshot, so that forgetting any of them leaves it
    /// unreadable (a load then replays the events). Without it the store keeps no snapshots:
    /// loads find none, and saves are refused.
    pub fn with_snapshots(mut self, snapshots: Arc<dyn SnapshotStore>) -> Shredded {
        self.snapshots = Some(snapshots);
        self
    }

    /// The keyring, or [`KeyError::NoMasterKey`] in a process without one.
    fn keyring(&self) -> Result<&Arc<Keyring>, KeyError> {
        self.keyring.as_ref().ok_or(KeyError::NoMasterKey)
    }

    /// The store inside, which holds sealed values as they are stored.
    pub fn inner(&self) -> &Arc<dyn EventStore> {
        &self.inner
    }

    /// Every [`SYNC_INTERVAL_MS`] at most: reads the schemas and the forgets other processes
    /// wrote since the last look, and drops the forgotten subjects' keys from the cache.
    async fn sync(&self) -> Result<(), ReadError> {
        let interval = std::time::Duration::from_millis(SYNC_INTERVAL_MS);
        let fresh = || self.looked.lock().is_some_and(|t| t.elapsed() < interval);
        if fresh() {
            return Ok(());
        }
        let mut sync = self.sync.lock().await;
        if fresh() {
            return Ok(());
        }
        self.refresh_schemas().await.map_err(|e| match e {
            ShredError::Read(e) => e,
            other => ReadError::Storage(BackendError::with_source(other.to_string(), other)),
        })?;
        // A process without keys has nothing to evict.
        while self.keyring.is_some() {
            let mut options = ReadStreamOptions::forward();
            options.from_version = Some(sync.next_forgotten);
            let events = match self.inner.read_stream(&forgotten_stream(), options).await {
                Ok(e) => e,
                Err(ReadError::StreamNotFound(_)) => break,
                Err(e) => return Err(e),
            };
            let Some(last) = events.last() else { break };
            sync.next_forgotten = last.stream_version + 1;
            for e in &events {
                let subject = e
                    .data_json()
                    .and_then(|d| d["subjectRef"].as_str().and_then(SubjectRef::from_hex));
                if let (Some(r), Some(keyring)) = (subject, &self.keyring) {
                    keyring.evict(r);
                }
            }
        }
        *self.looked.lock() = Some(tokio::time::Instant::now());
        Ok(())
    }

    /// Reads the schema stream again: schemas another process registered take effect here.
    pub async fn refresh_schemas(&self) -> Result<(), ShredError> {
        let from = self.schemas.read().version.map_or(0, |v| v + 1);
        let mut options = ReadStreamOptions::forward();
        options.from_version = Some(from);
        let mut next = from;
        loop {
            options.from_version = Some(next);
            let events = match self
                .inner
                .read_stream(&schemas_stream(), options.clone())
                .await
            {
                Ok(e) => e,
                Err(ReadError::StreamNotFound(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let Some(last) = events.last() else {
                return Ok(());
            };
            next = last.stream_version + 1;
            let mut schemas = self.schemas.write();
            for e in &events {
                // A refresh that raced another may hold a page the other applied already.
                if e.event_type != SCHEMA_EVENT
                    || schemas.version.is_some_and(|v| e.stream_version <= v)
                {
                    continue;
                }
                let schema = serde_json::from_slice::<EncryptionSchema>(&e.data)
                    .map_err(|err| err.to_string())
                    .and_then(|s| s.validate().map(|()| s).map_err(|err| err.to_string()));
                match schema {
                    Ok(schema) => {
                        schemas.unknown.remove(&schema.event_type);
                        schemas
                            .by_type
                            .insert(schema.event_type.clone(), Arc::new(schema));
                    }
                    Err(reason) => {
                        // Its event type's events are refused from now on: the schema may
                        // name fields this process would write in clear. One whose event
                        // type is there but not a string (a later format naming several?)
                        // refuses every type without a readable schema; one without any is
                        // not a schema (garbage a process without the wrapper wrote), and is
                        // skipped.
                        let event_type = e
                            .data_json()
                            .and_then(|d| d.get("eventType").cloned())
                            .map(|t| t.as_str().map(str::to_owned));
                        tracing::error!(
                            position = e.position.0,
                            %reason,
                            "an encryption schema in {SCHEMAS_STREAM} cannot be read by this \
                             process"
                        );
                        match event_type {
                            Some(Some(t)) => {
                                schemas.by_type.remove(&t);
                                schemas.unknown.insert(t);
                            }
                            Some(None) => schemas.unknown_types = true,
                            None => {}
                        }
                    }
                }
            }
            if schemas.version.is_none_or(|v| v < last.stream_version) {
                schemas.version = Some(last.stream_version);
            }
        }
    }

    /// Registers `schema` (replacing its event type's): events of its type appended from now on
    /// have the fields it names sealed. Stored in the store's [`SCHEMAS_STREAM`], versioned;
    /// a registration that races another is read again and retried.
    pub async fn register(&self, schema: EncryptionSchema) -> Result<AppendResult, ShredError> {
        self.keyring()?;
        schema.validate()?;
        let (result, _) = self.register_all(|_| Ok(vec![schema.clone()])).await?;
        Ok(result.expect("one schema written"))
    }

    /// Writes the schemas `decide` picks from the schemas in force, in one append at the
    /// schema stream's version they were read at; when another registration came first, reads
    /// them again and decides again. Returns the append (none when `decide` picked none) and
    /// how many it wrote.
    async fn register_all(
        &self,
        decide: impl Fn(&Schemas) -> Result<Vec<EncryptionSchema>, ShredError>,
    ) -> Result<(Option<AppendResult>, usize), ShredError> {
        loop {
            let (expected, new) = {
                let s = self.schemas.read();
                let new = decide(&s)?;
                let added = new
                    .iter()
                    .filter(|n| !s.by_type.contains_key(&n.event_type))
                    .count();
                if s.by_type.len() + added > SCHEMAS_MAX {
                    return Err(ShredError::TooManySchemas(s.by_type.len()));
                }
                let expected = s
                    .version
                    .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                (expected, new)
            };
            if new.is_empty() {
                return Ok((None, 0));
            }
            let events = new
                .iter()
                .map(|schema| EventData::json(SCHEMA_EVENT, schema))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| InvalidInput::new("schema", e.to_string()))?;
            match self.inner.append(&schemas_stream(), expected, events).await {
                Ok(result) => {
                    self.refresh_schemas().await?;
                    return Ok((Some(result), new.len()));
                }
                Err(e) if e.is_wrong_expected_version() => self.refresh_schemas().await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The event types whose schema in force this process cannot read (a newer version of
    /// Strata registered it), sorted: their events are refused here. `"*"` stands for a schema
    /// whose event type it cannot read either: every type without a readable schema is.
    pub fn unreadable_schemas(&self) -> Vec<String> {
        let s = self.schemas.read();
        let mut all: Vec<String> = s.unknown.iter().cloned().collect();
        if s.unknown_types {
            all.push("*".to_owned());
        }
        all.sort();
        all
    }

    /// The schemas in force, by event type.
    pub fn schemas(&self) -> Vec<EncryptionSchema> {
        let mut all: Vec<EncryptionSchema> = self
            .schemas
            .read()
            .by_type
            .values()
            .map(|s| (**s).clone())
            .collect();
        all.sort_by(|a, b| a.event_type.cmp(&b.event_type));
        all
    }

    /// Forgets `subject`: destroys its key durably, then appends its `$subjectForgotten` event
    /// to [`FORGOTTEN_STREAM`] so that projections can drop what they copied. Idempotent: a
    /// second forget succeeds and says so. After it, the subject's sealed fields read as
    /// `null`, and no event with a field sealed for them is accepted.
    pub async fn forget(&self, subject: &str) -> Result<ForgetReport, ShredError> {
        let keyring = self.keyring()?;
        let outcome = keyring.forget(subject).await?;
        let subject_ref = keyring.subject_ref(subject);
        let result = self.append_forgotten(subject, subject_ref).await?;
        keyring.settle(subject_ref).await?;
        Ok(ForgetReport {
            outcome,
            subject_ref: subject_ref.to_hex(),
            position: result.positions[0],
        })
    }

    async fn append_forgotten(
        &self,
        subject: &str,
        subject_ref: SubjectRef,
    ) -> Result<AppendResult, AppendError> {
        let event = EventData::json(
            FORGOTTEN_EVENT,
            &serde_json::json!({"subject": subject, "subjectRef": subject_ref.to_hex()}),
        )
        .map_err(|e| InvalidInput::new("subject", e.to_string()))?
        .with_id(forgotten_event_id(subject_ref));
        self.inner
            .append(&forgotten_stream(), ExpectedVersion::Any, vec![event])
            .await
    }

    /// Registers the schemas of a family of domain events ([`PersonalData`]), all or none, in
    /// one append: each must name one of the family's event types, once. A schema already in
    /// force as it is is not written again, and one that only adds fields to the one in force
    /// replaces it; one that would stop sealing a field the schema in force seals, change where
    /// the subject is, or replace a schema this process cannot read (a newer Strata wrote it),
    /// is refused, naming the event type: replace it deliberately with [`Shredded::register`].
    /// The schemas in force are read again first, and checked again if another registration
    /// comes first. Returns how many were registered now.
    pub async fn register_personal_data<E: PersonalData>(&self) -> Result<usize, ShredError> {
        self.keyring()?;
        let types = E::event_types();
        let wanted = E::personal_data();
        for (i, schema) in wanted.iter().enumerate() {
            let at = |reason: String| {
                InvalidInput::new(format!("{}.eventType", schema.event_type), reason)
            };
            schema.validate().map_err(|e| {
                InvalidInput::new(format!("{}.{}", schema.event_type, e.field), e.reason)
            })?;
            if !types.contains(&schema.event_type.as_str()) {
                return Err(at(format!(
                    "is not an event type of {} (its event types: {})",
                    std::any::type_name::<E>(),
                    types.join(", ")
                ))
                .into());
            }
            if wanted[..i]
                .iter()
                .any(|w| w.event_type == schema.event_type)
            {
                return Err(at("has two schemas: name each event type once".to_owned()).into());
            }
        }
        self.refresh_schemas().await?;
        let (_, registered) = self
            .register_all(|in_force| {
                let mut new = Vec::new();
                for schema in &wanted {
                    let at = |reason: String| {
                        InvalidInput::new(format!("{}.eventType", schema.event_type), reason)
                    };
                    if in_force.unknown.contains(&schema.event_type) {
                        return Err(at(
                            "has a schema in force that this process cannot read (a newer \
                             version of Strata registered it): it is not replaced"
                                .to_owned(),
                        )
                        .into());
                    }
                    match in_force.by_type.get(&schema.event_type) {
                        Some(current) if **current == *schema => {}
                        Some(current)
                            if current.subject != schema.subject
                                || current.fields.iter().any(|f| !schema.fields.contains(f)) =>
                        {
                            return Err(at(format!(
                                "has a schema in force that this one would weaken (subject {}, \
                                 fields {}): register the new one with Shredded::register to \
                                 replace it deliberately",
                                current.subject,
                                current.fields.join(", ")
                            ))
                            .into());
                        }
                        _ => new.push(schema.clone()),
                    }
                }
                Ok(new)
            })
            .await?;
        Ok(registered)
    }

    fn schema_of(&self, event_type: &str) -> Option<Arc<EncryptionSchema>> {
        self.schemas.read().by_type.get(event_type).cloned()
    }

    /// Seals the personal fields of `event`, the `index`th of its append.
    async fn seal_event(
        &self,
        stream: &StreamId,
        index: usize,
        event: &mut EventData,
    ) -> Result<(), AppendError> {
        let at = format!("events[{index}]");
        if event.metadata.get(FORGOTTEN_METADATA_KEY).is_some() {
            return Err(InvalidInput::new(
                format!("{at}.metadata.{FORGOTTEN_METADATA_KEY}"),
                "is kept by Strata: it marks the fields of a forgotten subject when read",
            )
            .into());
        }
        let Some(schema) = self.schema_of(&event.event_type) else {
            let refused = {
                let s = self.schemas.read();
                s.unknown_types || s.unknown.contains(&event.event_type)
            };
            if refused {
                return Err(InvalidInput::new(
                    format!("{at}.event_type"),
                    "has, or may have, an encryption schema this process cannot read (a newer \
                     version of Strata registered it): append it through an upgraded process",
                )
                .into());
            }
            return refuse_sealed_key(event, &at);
        };
        let Some(keyring) = &self.keyring else {
            return Err(InvalidInput::new(
                format!("{at}.event_type"),
                "has personal fields to seal (an encryption schema names them), and this \
                 process has no master key: append it through one started with the store's \
                 master key (--master-key-file, --master-key-env or --master-key-command)",
            )
            .into());
        };
        if event.content_type != CONTENT_TYPE_JSON {
            return Err(InvalidInput::new(
                format!("{at}.content_type"),
                format!(
                    "must be application/json: the event type {} has personal fields to seal",
                    event.event_type
                ),
            )
            .into());
        }
        // Checked as the store checks it (JSON, sizes) before anything is read from it.
        strata_core::validate_event(index, event)?;
        refuse_sealed_key(event, &at)?;
        // The subject's id and the personal fields, where they lie in the data.
        let subject_at = schema.subject_pointer();
        let wanted = |p: &str| subject_at == Some(p) || schema.fields.iter().any(|f| f == p);
        let spans = scan::scan(&event.data, |p, _| {
            if wanted(p) {
                Step::Take
            } else if subject_at.is_some_and(|s| scan::inside(p, s))
                || schema.fields.iter().any(|f| scan::inside(p, f))
            {
                Step::Descend
            } else {
                Step::Skip
            }
        })
        .ok_or_else(|| InvalidInput::new(format!("{at}.data"), "could not be scanned as JSON"))?;
        for (i, t) in spans.iter().enumerate() {
            // A member named twice: readers take the last, so the subject or a field would be
            // decided on one and read from another.
            if spans[..i].iter().any(|u| u.pointer == t.pointer) {
                return Err(InvalidInput::new(
                    format!("{at}.data{}", t.pointer),
                    "appears twice (a member named twice on its way): an event with personal \
                     fields names each member once",
                )
                .into());
            }
            // Sealed, a value becomes an object: one level deeper than the store takes.
            if t.depth >= JSON_NESTING_MAX_DEPTH && schema.fields.contains(&t.pointer) {
                return Err(InvalidInput::new(
                    format!("{at}.data{}", t.pointer),
                    format!(
                        "is nested too deep to seal: a personal field lies inside at most {} \
                         arrays and objects",
                        JSON_NESTING_MAX_DEPTH - 1
                    ),
                )
                .into());
            }
        }
        let span_of = |p: &str| {
            spans
                .iter()
                .find(|t| t.pointer == p)
                .map(|t| t.span.clone())
        };
        let subject_value = match subject_at.and_then(span_of) {
            Some(r) => serde_json::from_slice::<Value>(&event.data[r]).ok(),
            None => None,
        };
        let subject = schema.subject_of(subject_value.as_ref(), &event.metadata, stream, &at)?;
        let (subject_ref, key) = keyring
            .key_for_seal(&subject)
            .await
            .map_err(|e| key_append_error(e, &at))?;
        let Some(key) = key else {
            return Err(InvalidInput::new(
                at,
                "holds personal data of a subject who was forgotten: nothing of theirs is stored again",
            )
            .into());
        };
        if let Some(missing) = schema.fields.iter().find(|f| span_of(f).is_none()) {
            return Err(InvalidInput::new(
                format!("{at}.data{missing}"),
                format!(
                    "is missing: the encryption schema of {} names it as a personal field",
                    event.event_type
                ),
            )
            .into());
        }
        let event_id = *event.event_id.get_or_insert_with(Uuid::new_v4);
        let subject_hex = subject_ref.to_hex();
        let data = &event.data;
        let mut out = Vec::with_capacity(data.len() + 160 * schema.fields.len());
        let mut copied = 0;
        for Taken { pointer, span, .. } in &spans {
            if subject_at == Some(pointer.as_str()) && !schema.fields.contains(pointer) {
                continue;
            }
            out.extend_from_slice(&data[copied..span.start]);
            out.extend_from_slice(SEALED_OPEN);
            let plaintext = &data[span.clone()];
            seal::seal_into(
                &mut out,
                &key,
                event_id,
                pointer,
                (subject_ref, &subject_hex),
                plaintext,
            );
            out.extend_from_slice(b"\"}");
            copied = span.end;
        }
        out.extend_from_slice(&data[copied..]);
        event.data = out;
        Ok(())
    }

    /// Opens the sealed values of `event`, in place (a value is shorter than its sealed
    /// text, so the data is rewritten in its own buffer). `last` is the key of the last
    /// subject looked up (the events of a page are mostly one subject's), `body` a buffer for
    /// the sealed bytes.
    async fn open_event(
        &self,
        event: &mut RecordedEvent,
        last: &mut Option<(SubjectRef, ReadKey)>,
        body: &mut Vec<u8>,
    ) -> Result<(), ReadError> {
        let Some(keyring) = &self.keyring else {
            // No key: sealed values read as they are stored.
            return Ok(());
        };
        if !event.is_json() || SEALED_FINDER.find(&event.data).is_none() {
            return Ok(());
        }
        let position = event.position;
        let corrupt = |reason: String| {
            ReadError::Corruption(Corruption::new(
                CorruptionLocation::Other(format!("the event at position {}", position.get())),
                Some(position),
                reason,
            ))
        };
        let spans = scan::scan_bytes(&event.data, |rest| {
            if scan::sealed_text(rest).is_some() {
                Step::Take
            } else {
                Step::Descend
            }
        })
        .ok_or_else(|| corrupt("its data does not scan as JSON".to_owned()))?;
        if spans.is_empty() {
            return Ok(());
        }
        let mut forgotten = Vec::new();
        let mut data = std::mem::take(&mut event.data);
        // Bytes kept so far, and where the next unread byte is.
        let (mut kept, mut copied) = (0, 0);
        for Taken { pointer, span, .. } in spans {
            let text = scan::sealed_text(&data[span.clone()]).expect("taken as sealed");
            let subject = seal::parse_into(text, body).map_err(|e| corrupt(e.to_string()))?;
            let key = match &*last {
                Some((r, key)) if *r == subject => key.clone(),
                _ => {
                    let key = keyring
                        .key_for_read(subject)
                        .await
                        .map_err(|e| key_read_error(e, position))?;
                    *last = Some((subject, key.clone()));
                    key
                }
            };
            data.copy_within(copied..span.start, kept);
            kept += span.start - copied;
            let value: &[u8] = match &key {
                ReadKey::Active(key) => seal::open_in(key, event.event_id, &pointer, subject, body)
                    .map_err(|e: SealError| corrupt(format!("the field at {pointer}: {e}")))?,
                ReadKey::Forgotten => {
                    forgotten.push(Value::String(pointer));
                    b"null"
                }
            };
            // Never longer than its sealed text: a nonce, a tag and base64 make that longer.
            data[kept..kept + value.len()].copy_from_slice(value);
            kept += value.len();
            copied = span.end;
        }
        let end = data.len();
        data.copy_within(copied..end, kept);
        data.truncate(kept + end - copied);
        event.data = data;
        if !forgotten.is_empty() {
            let metadata = std::mem::take(&mut event.metadata);
            event.metadata = metadata.with(FORGOTTEN_METADATA_KEY, Value::Array(forgotten));
        }
        Ok(())
    }

    async fn open_all(&self, events: &mut [RecordedEvent]) -> Result<(), ReadError> {
        if events.is_empty() {
            return Ok(());
        }
        self.sync().await?;
        // The last subject's key and a buffer for the sealed bytes, across the page.
        let (mut last, mut body) = (None, Vec::new());
        for e in events {
            self.open_event(e, &mut last, &mut body).await?;
        }
        Ok(())
    }
}

/// A failed look for other processes' schemas and forgets, as an append's error.
fn sync_append_error(e: ReadError) -> AppendError {
    match e {
        ReadError::Unavailable(b) => AppendError::Unavailable(b),
        ReadError::Corruption(c) => AppendError::Corruption(c),
        ReadError::Denied(d) => AppendError::Denied(d),
        other => AppendError::Storage(BackendError::with_source(
            format!("reading the encryption schemas and forgets failed: {other}"),
            other,
        )),
    }
}

/// How Strata writes a sealed value's object, up to its text.
const SEALED_OPEN: &[u8] = b"{\"$sealed\":\"";

/// What a sealed value's key looks like in stored JSON.
const SEALED_NEEDLE: &[u8] = b"\"$sealed\"";

/// Looks for [`SEALED_NEEDLE`]: built once, used on every event read.
static SEALED_FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(SEALED_NEEDLE));

/// Looks for a `\\u` escape, which may spell a letter of `$sealed`, on every append.
static UNICODE_ESCAPE_FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\\u"));

/// Looks for the end of a key that may decode to `$sealed` (escaped or not), on every append.
static SEALED_KEY_END_FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"sealed\""));

/// Refuses data that holds the key `$sealed`, however it is written: only Strata writes one.
/// The data is parsed only when it may hold one (the key's last letters, or an escape).
fn refuse_sealed_key(event: &EventData, at: &str) -> Result<(), AppendError> {
    if event.content_type != CONTENT_TYPE_JSON
        || (SEALED_KEY_END_FINDER.find(&event.data).is_none()
            && UNICODE_ESCAPE_FINDER.find(&event.data).is_none())
    {
        return Ok(());
    }
    // The scan sees every member, a repeated one too (a parse into a map keeps the last),
    // with its name decoded.
    let mut holds = false;
    let scanned = scan::scan(&event.data, |p, _| {
        holds |= p.ends_with(SEALED_MEMBER);
        Step::Descend
    });
    let holds = match scanned {
        Some(_) => holds,
        // Not JSON the scan takes: the store refuses what is not JSON; a parse decides.
        None => serde_json::from_slice::<Value>(&event.data).is_ok_and(|d| holds_sealed_key(&d)),
    };
    if holds {
        return Err(sealed_key_refused(at));
    }
    Ok(())
}

/// A member named `$sealed`, as the end of a pointer.
const SEALED_MEMBER: &str = "/$sealed";

fn sealed_key_refused(at: &str) -> AppendError {
    InvalidInput::new(
        format!("{at}.data"),
        "holds the key \"$sealed\", which Strata keeps for its sealed values",
    )
    .into()
}

#[async_trait]
impl EventStore for Shredded {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mut events: Vec<EventData>,
    ) -> Result<AppendResult, AppendError> {
        if lifecycle::is_shredding_stream(stream) {
            return Err(InvalidInput::new(
                "stream_id",
                "is kept by Strata for crypto-shredding: register schemas and forget subjects through their own calls",
            )
            .into());
        }
        self.sync().await.map_err(sync_append_error)?;
        for (i, e) in events.iter_mut().enumerate() {
            self.seal_event(stream, i, e).await?;
        }
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let mut events = self.inner.read_stream(stream, options).await?;
        self.open_all(&mut events).await?;
        Ok(events)
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<AllPage, ReadError> {
        let mut page = self.inner.read_all(options).await?;
        self.open_all(&mut page.events).await?;
        Ok(page)
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo, ReadError> {
        self.inner.stream_info(stream).await
    }

    async fn list_streams(&self, options: ListOptions) -> Result<Page<StreamSummary>, ReadError> {
        self.inner.list_streams(options).await
    }

    async fn list_categories(
        &self,
        options: ListOptions,
    ) -> Result<Page<CategorySummary>, ReadError> {
        self.inner.list_categories(options).await
    }

    async fn position_at(&self, at: Timestamp) -> Result<Option<Position>, ReadError> {
        self.inner.position_at(at).await
    }

    async fn head(&self) -> Result<Option<Position>, ReadError> {
        self.inner.head().await
    }

    async fn head_now(&self) -> Result<Option<Position>, ReadError> {
        self.inner.head_now().await
    }

    async fn backend_metrics(&self) -> Result<String, ReadError> {
        self.inner.backend_metrics().await
    }

    fn check_writable(&self) -> Result<(), AppendError> {
        self.inner.check_writable()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }

    async fn stream_metadata(&self, stream: &StreamId) -> Result<StreamMetadataRecord, ReadError> {
        self.inner.stream_metadata(stream).await
    }

    async fn set_stream_metadata(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<AppendResult, AppendError> {
        self.inner
            .set_stream_metadata(stream, expected, metadata)
            .await
    }

    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, AppendError> {
        self.inner.delete_stream(stream, expected).await
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, AppendError> {
        self.inner.tombstone_stream(stream, expected).await
    }

    async fn truncate_stream(
        &self,
        stream: &StreamId,
        before: u64,
    ) -> Result<AppendResult, AppendError> {
        self.inner.truncate_stream(stream, before).await
    }

    async fn scavenge(&self, progress: ProgressFn<'_>) -> Result<ScavengeReport, ScavengeError> {
        self.inner.scavenge(progress).await
    }

    async fn subscribe(
        &self,
        target: SubscriptionTarget,
        from: SubscribeFrom,
    ) -> Result<Subscription, ReadError> {
        Subscription::start(Arc::new(self.clone()), target, from).await
    }
}

/// A snapshot's place, bound into its sealed form: its stream and versions.
fn snapshot_place(s: &Snapshot) -> Vec<u8> {
    format!(
        "{}\0{}\0{}",
        s.stream_id.as_str(),
        s.stream_version,
        s.schema_version
    )
    .into_bytes()
}

fn snapshot_read_error(e: ReadError) -> SnapshotError {
    match e {
        ReadError::Unavailable(b) => SnapshotError::Unavailable(b),
        ReadError::InvalidInput(i) => SnapshotError::InvalidInput(i),
        ReadError::Limit(l) => SnapshotError::Limit(l),
        other => SnapshotError::Storage(BackendError::with_source(other.to_string(), other)),
    }
}

fn snapshot_key_error(e: KeyError) -> SnapshotError {
    match e {
        KeyError::Unavailable(_) => {
            SnapshotError::Unavailable(BackendError::with_source(e.to_string(), e))
        }
        other => SnapshotError::Storage(BackendError::with_source(other.to_string(), other)),
    }
}

/// Adds the subjects of the values sealed in `data` to `subjects`; `None` when the data does
/// not scan (its subjects are then unknown).
fn sealed_subjects(data: &[u8], subjects: &mut BTreeSet<SubjectRef>) -> Option<()> {
    if SEALED_FINDER.find(data).is_none() {
        return Some(());
    }
    scan::scan_bytes(data, |rest| match scan::sealed_text(rest) {
        Some(text) => {
            if let Some(r) = text.get(3..35).and_then(SubjectRef::from_hex) {
                subjects.insert(r);
            }
            Step::Skip
        }
        None => Step::Descend,
    })
    .map(|_| ())
}

/// A snapshot not kept, and why.
fn snapshot_refused(stream: &StreamId, why: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::InvalidInput(InvalidInput::new(
        "snapshot",
        format!("of {stream} is not kept: {why}; the aggregate loads by replay"),
    ))
}

/// Streams whose snapshots were refused for good (a forgotten subject's data, events that can
/// no longer be read), so that their next saves are refused without reading the stream again.
/// Cleared whole when full: a refusal is then found again by reading.
const REFUSED_STREAMS_MAX: usize = 4096;

impl Shredded {
    fn snapshot_store(&self) -> Result<&Arc<dyn SnapshotStore>, SnapshotError> {
        self.snapshots.as_ref().ok_or_else(|| {
            SnapshotError::InvalidInput(InvalidInput::new(
                "snapshot",
                "cannot be kept: this store was opened without a snapshot store \
                 (Shredded::with_snapshots)",
            ))
        })
    }

    /// The keys of `subjects`; `Err(r)` when `r` was forgotten.
    async fn snapshot_keys(
        keyring: &Keyring,
        subjects: &[SubjectRef],
    ) -> Result<Result<Vec<(SubjectRef, Arc<crate::seal::SubjectKey>)>, SubjectRef>, SnapshotError>
    {
        let mut keys = Vec::with_capacity(subjects.len());
        for r in subjects {
            match keyring.key_for_read(*r).await.map_err(snapshot_key_error)? {
                ReadKey::Active(k) => keys.push((*r, k)),
                ReadKey::Forgotten => return Ok(Err(*r)),
            }
        }
        Ok(Ok(keys))
    }

    /// The subjects whose sealed values the events of `snapshot`'s stream up to its version
    /// hold: those its previous snapshot names when it is sealed and opens (so that its list
    /// is authentic), and those of every event after it, read without a gap. A gap (events
    /// truncated, expired or deleted, which the state may still hold) refuses the snapshot, as
    /// does a subject forgotten.
    async fn snapshot_subjects(
        &self,
        keyring: &Keyring,
        snapshots: &dyn SnapshotStore,
        snapshot: &Snapshot,
    ) -> Result<BTreeSet<SubjectRef>, SnapshotError> {
        let stream = &snapshot.stream_id;
        let mut subjects = BTreeSet::new();
        let mut from = 0;
        let previous = snapshots
            .load_snapshot(
                stream,
                snapshot.schema_version,
                Some(snapshot.stream_version),
            )
            .await?;
        if let Some(previous) = previous {
            // A snapshot in clear, or one that does not open, vouches for nothing.
            if let Some(Ok(parsed)) = seal::parse_snapshot(&previous.data) {
                match Self::snapshot_keys(keyring, &parsed.subjects).await? {
                    Err(r) => {
                        return Err(snapshot_refused(
                            stream,
                            format_args!("it holds the data of a forgotten subject ({r})"),
                        ))
                    }
                    Ok(keys) => {
                        let keys: Vec<_> = keys.iter().map(|(r, k)| (*r, &**k)).collect();
                        let place = snapshot_place(&previous);
                        let chain = keyring.snapshot_chain();
                        if seal::open_snapshot(chain, &parsed, &keys, &place).is_ok() {
                            subjects.extend(parsed.subjects.iter().copied());
                            from = previous.stream_version + 1;
                        }
                    }
                }
            }
        }
        let gap = |at: u64| {
            snapshot_refused(
                stream,
                format_args!(
                    "the stream's event at version {at} can no longer be read (truncated, \
                     expired or deleted), so the subjects whose data the state holds are unknown"
                ),
            )
        };
        while from <= snapshot.stream_version {
            let mut options = ReadStreamOptions::forward();
            options.from_version = Some(from);
            let events = match self.inner.read_stream(stream, options).await {
                Ok(e) => e,
                Err(ReadError::StreamNotFound(_)) => Vec::new(),
                Err(e) => return Err(snapshot_read_error(e)),
            };
            if events.is_empty() {
                return Err(gap(from));
            }
            for e in &events {
                if e.stream_version > snapshot.stream_version {
                    break;
                }
                if e.stream_version != from {
                    return Err(gap(from));
                }
                sealed_subjects(&e.data, &mut subjects).ok_or_else(|| {
                    snapshot_refused(
                        stream,
                        format_args!("its event at version {from} does not scan as JSON"),
                    )
                })?;
                from += 1;
            }
            if events
                .last()
                .is_some_and(|l| l.stream_version >= snapshot.stream_version)
            {
                break;
            }
        }
        Ok(subjects)
    }

    /// Opens a stored snapshot: `None` when it cannot be (a subject of it forgotten, this
    /// process without the master key, or one in clear holding sealed values, which a process
    /// without the key saved), so that the aggregate loads by replay.
    async fn open_snapshot(&self, stored: Snapshot) -> Result<Option<Snapshot>, SnapshotError> {
        let Some(keyring) = &self.keyring else {
            return Ok(seal::parse_snapshot(&stored.data)
                .is_none()
                .then_some(stored));
        };
        let parsed = match seal::parse_snapshot(&stored.data) {
            None if SEALED_FINDER.find(&stored.data).is_some() => return Ok(None),
            None => return Ok(Some(stored)),
            Some(p) => p,
        };
        let damaged = |e: SealError| {
            SnapshotError::Storage(BackendError::new(format!(
                "the snapshot of {} at version {}: {e}",
                stored.stream_id, stored.stream_version
            )))
        };
        let parsed = parsed.map_err(damaged)?;
        let Ok(keys) = Self::snapshot_keys(keyring, &parsed.subjects).await? else {
            return Ok(None);
        };
        let keys: Vec<_> = keys.iter().map(|(r, k)| (*r, &**k)).collect();
        let data = seal::open_snapshot(
            keyring.snapshot_chain(),
            &parsed,
            &keys,
            &snapshot_place(&stored),
        )
        .map_err(damaged)?;
        Ok(Some(Snapshot { data, ..stored }))
    }

    fn refused(&self, stream: &StreamId) -> bool {
        self.refused.lock().contains(stream)
    }

    fn refuse(&self, stream: &StreamId) {
        let mut refused = self.refused.lock();
        if refused.len() >= REFUSED_STREAMS_MAX {
            refused.clear();
        }
        refused.insert(stream.clone());
    }
}

#[async_trait]
impl SnapshotStore for Shredded {
    /// Seals `snapshot` under the master key and the keys of every subject its stream's
    /// events hold sealed values of ([`Shredded::with_snapshots`]). Refused when one of them
    /// was forgotten (the state may have been built before the forget), or when events of the
    /// stream up to its version can no longer be read.
    async fn save_snapshot(&self, mut snapshot: Snapshot) -> Result<(), SnapshotError> {
        let snapshots = self.snapshot_store()?;
        if snapshot.data.starts_with(seal::SNAPSHOT_MAGIC) {
            return Err(SnapshotError::InvalidInput(InvalidInput::new(
                "snapshot.data",
                "starts as Strata's sealed snapshots do (a NUL byte and \"strata-shred\")",
            )));
        }
        let Some(keyring) = &self.keyring else {
            // Built from events read as stored: sealed values, no personal data in clear. A
            // process with the key neither trusts nor loads it.
            return snapshots.save_snapshot(snapshot).await;
        };
        if self.refused(&snapshot.stream_id) {
            return Err(snapshot_refused(
                &snapshot.stream_id,
                "an earlier snapshot of it was refused for good",
            ));
        }
        self.sync().await.map_err(snapshot_read_error)?;
        let subjects = match self
            .snapshot_subjects(keyring, snapshots.as_ref(), &snapshot)
            .await
        {
            Ok(s) => s,
            Err(e @ SnapshotError::InvalidInput(_)) => {
                self.refuse(&snapshot.stream_id);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if subjects.len() > SNAPSHOT_SUBJECTS_MAX {
            return Err(strata_core::LimitError::new(
                "data subjects in a snapshot",
                SNAPSHOT_SUBJECTS_MAX,
                subjects.len(),
            )
            .into());
        }
        let subjects: Vec<SubjectRef> = subjects.into_iter().collect();
        let keys = match Self::snapshot_keys(keyring, &subjects).await? {
            Ok(keys) => keys,
            Err(r) => {
                self.refuse(&snapshot.stream_id);
                return Err(snapshot_refused(
                    &snapshot.stream_id,
                    format_args!("it holds the data of a forgotten subject ({r})"),
                ));
            }
        };
        let keys: Vec<_> = keys.iter().map(|(r, k)| (*r, &**k)).collect();
        snapshot.data = seal::seal_snapshot(
            keyring.snapshot_chain(),
            &keys,
            &snapshot_place(&snapshot),
            &snapshot.data,
        );
        snapshots.save_snapshot(snapshot).await
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, SnapshotError> {
        let Some(snapshots) = &self.snapshots else {
            return Ok(None);
        };
        let Some(stored) = snapshots
            .load_snapshot(stream, schema_version, max_version)
            .await?
        else {
            return Ok(None);
        };
        self.sync().await.map_err(snapshot_read_error)?;
        self.open_snapshot(stored).await
    }

    async fn delete_snapshots(&self, stream: &StreamId) -> Result<u64, SnapshotError> {
        match &self.snapshots {
            Some(s) => s.delete_snapshots(stream).await,
            None => Ok(0),
        }
    }

    async fn load_snapshot_and_events(
        &self,
        stream: &StreamId,
        schema_version: u32,
        limit: usize,
    ) -> Result<SnapshotAndEvents, SnapshotError> {
        SnapshotAndEvents::check_limit(limit)?;
        let Some(snapshots) = &self.snapshots else {
            return Ok(SnapshotAndEvents {
                snapshot: None,
                events: None,
            });
        };
        let mut got = snapshots
            .load_snapshot_and_events(stream, schema_version, limit)
            .await?;
        self.sync().await.map_err(snapshot_read_error)?;
        if let Some(stored) = got.snapshot.take() {
            got.snapshot = self.open_snapshot(stored).await?;
            if got.snapshot.is_none() {
                // The events read were those after a snapshot that cannot be opened: the
                // caller reads them from the start.
                got.events = None;
            }
        }
        if let Some(events) = &mut got.events {
            self.open_all(events).await.map_err(snapshot_read_error)?;
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sealed_object_is_written_with_its_key() {
        assert_eq!(
            super::SEALED_OPEN,
            format!("{{\"{}\":\"", crate::seal::SEALED_KEY).as_bytes()
        );
        assert!(crate::scan::sealed_text(
            &[
                super::SEALED_OPEN,
                b"v1.0123456789abcdef0123456789abcdef.y\"}",
            ]
            .concat()
        )
        .is_some());
    }
}
