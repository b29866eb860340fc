//! Crypto-shredding for Strata: personal fields of events sealed with a key per data subject,
//! and forgotten by destroying that key.
//!
//! - [`MasterKey`]: wraps every subject key; read from a file, a variable or a command, never
//!   stored beside the data.
//! - [`Keyring`] over a [`KeyStorage`]: subject keys, created on first use, kept durably
//!   ([`DirKeys`] in the embedded store's data directory, `PgKeys` in a PostgreSQL store's
//!   schema, [`MemoryKeys`] for tests).
//! - [`EncryptionSchema`]: which fields of an event type are personal, and whose.
//! - [`Shredded`]: an [`EventStore`](strata_core::EventStore) and
//!   [`SnapshotStore`](strata_core::SnapshotStore) over any backend that seals on append and
//!   on snapshot, opens on read, and [`forgets`](Shredded::forget) a subject in one call.
//! - [`PersonalData`]: a Rust application's domain events name their personal fields.
//! - [`rotate_master_key`]: a new master key, the subject keys re-wrapped.
//!
//! `docs/gdpr.md` explains the model, the threat model and a worked erasure.

mod keys;
pub mod limits;
mod master;
mod personal;
#[cfg(feature = "postgres")]
mod postgres;
mod rotation;
mod scan;
mod schema;
mod seal;
mod store;

pub use keys::{
    DirKeys, ForgetOutcome, KeyError, KeyStorage, Keyring, MemoryKeys, PendingForget, StoredKey,
    KEY_FILE_BYTES,
};
pub use master::{MasterKey, MasterKeyError, SubjectRef};
pub use personal::{forgotten_as_default, PersonalData};
#[cfg(feature = "postgres")]
pub use postgres::PgKeys;
pub use rotation::{rotate_master_key, RotationReport, StoredSecrets};
pub use schema::{EncryptionSchema, SubjectSource};
pub use seal::{SealError, SEALED_KEY, WRAPPED_KEY_BYTES};
pub use store::{
    ForgetReport, ShredError, Shredded, FORGOTTEN_EVENT, FORGOTTEN_METADATA_KEY, FORGOTTEN_STREAM,
    SCHEMAS_STREAM, SCHEMA_EVENT,
};
