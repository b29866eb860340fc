//! # strata
//!
//! The crate applications depend on: event-sourced aggregates on any Strata backend.
//!
//! - [`Aggregate`]: an application's consistency boundary — its events, commands, a pure
//!   `handle` that decides and an `apply` that evolves state.
//! - [`HandleWithServices`]: for an aggregate whose decisions need outside facts — the time
//!   ([`Clock`]), an exchange rate, whether a name is taken — an async handler that asks the
//!   services the repository holds ([`Repository::with_services`]); such an aggregate
//!   implements [`AggregateState`] (everything but the pure `handle`) instead of `Aggregate`.
//! - [`DomainEvent`]: how events are stored. A serde enum's variant names are the stored event
//!   types (stable strings chosen by the application), its content the JSON payload.
//! - [`Repository`]: loads an aggregate (newest snapshot, then the events after it), executes
//!   commands with optimistic concurrency and bounded retries, carries command metadata
//!   (correlation, causation, user, custom fields) onto events, writes snapshots every N
//!   events, and loads past states by version or by time.
//! - [`Upcasters`]: old event payloads are upgraded, step by step, to the newest schema on
//!   every read; the schema version lives in the event metadata under `"schemaVersion"`.
//! - [`testing::AggregateTest`]: given / when / then tests without a store.
//!
//! Everything from `strata-core` (the event model, the [`EventStore`] and [`SnapshotStore`]
//! traits, errors) is re-exported, so one dependency is enough. `docs/toolkit.md` walks
//! through it all.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use strata::{Aggregate, DomainEvent};
//! use strata::testing::AggregateTest;
//!
//! #[derive(Debug, Default, Clone, Serialize, Deserialize)]
//! struct Account { open: bool, balance: u64 }
//!
//! // The variant names are the stored event types. (`rename_all` on the enum itself would
//! // rename the variants, so put it on each variant to rename its fields.)
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! enum AccountEvent {
//!     #[serde(rename_all = "camelCase")]
//!     AccountOpened { initial_balance: u64 },
//!     MoneyDeposited { amount: u64 },
//!     MoneyWithdrawn { amount: u64 },
//! }
//! impl DomainEvent for AccountEvent {}
//!
//! #[derive(Debug, Clone)]
//! enum AccountCommand { Open { initial_balance: u64 }, Deposit(u64), Withdraw(u64) }
//!
//! #[derive(Debug, PartialEq, thiserror::Error)]
//! enum AccountError {
//!     #[error("the account is already open")] AlreadyOpen,
//!     #[error("the account is not open")] NotOpen,
//!     #[error("insufficient funds: balance {balance}, asked {asked}")]
//!     InsufficientFunds { balance: u64, asked: u64 },
//! }
//!
//! impl Aggregate for Account {
//!     type Event = AccountEvent;
//!     type Command = AccountCommand;
//!     type Error = AccountError;
//!     const CATEGORY: &'static str = "account";
//!
//!     fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
//!         use AccountCommand::*;
//!         match command {
//!             Open { .. } if self.open => Err(AccountError::AlreadyOpen),
//!             Open { initial_balance } => Ok(vec![AccountEvent::AccountOpened { initial_balance }]),
//!             _ if !self.open => Err(AccountError::NotOpen),
//!             Deposit(amount) => Ok(vec![AccountEvent::MoneyDeposited { amount }]),
//!             Withdraw(asked) if asked > self.balance => {
//!                 Err(AccountError::InsufficientFunds { balance: self.balance, asked })
//!             }
//!             Withdraw(amount) => Ok(vec![AccountEvent::MoneyWithdrawn { amount }]),
//!         }
//!     }
//!
//!     fn apply(&mut self, event: &AccountEvent) {
//!         match event {
//!             AccountEvent::AccountOpened { initial_balance } => {
//!                 self.open = true;
//!                 self.balance = *initial_balance;
//!             }
//!             AccountEvent::MoneyDeposited { amount } => self.balance += amount,
//!             AccountEvent::MoneyWithdrawn { amount } => self.balance -= amount,
//!         }
//!     }
//! }
//!
//! // The mission's account: opened with 100, +200, -150.
//! let account = AggregateTest::<Account>::given([
//!     AccountEvent::AccountOpened { initial_balance: 100 },
//!     AccountEvent::MoneyDeposited { amount: 200 },
//! ])
//! .when(AccountCommand::Withdraw(150))
//! .then_expect_events([AccountEvent::MoneyWithdrawn { amount: 150 }]);
//! assert_eq!(account.balance, 150);
//!
//! // The same account on the embedded store: commands in, events stored, state replayed.
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use strata::{CommandEnvelope, ExecuteError, Repository};
//! let dir = tempfile::tempdir().unwrap();
//! let store = strata_log::LogStore::open(dir.path()).unwrap();
//! let accounts = Repository::<Account, _>::new(store);
//!
//! let opened = accounts
//!     .execute("123", CommandEnvelope::new(AccountCommand::Open { initial_balance: 100 })
//!         .user_id("teller-7"))
//!     .await
//!     .unwrap();
//! assert_eq!(opened.version, Some(0));
//! accounts.execute("123", AccountCommand::Deposit(200)).await.unwrap();
//! let done = accounts.execute("123", AccountCommand::Withdraw(150)).await.unwrap();
//! assert_eq!((done.balance, done.version), (150, Some(2)));
//!
//! let refused = accounts.execute("123", AccountCommand::Withdraw(1_000)).await.unwrap_err();
//! assert!(matches!(refused, ExecuteError::Rejected(AccountError::InsufficientFunds { .. })));
//!
//! let history = accounts.read_events("123", 0, 10).await.unwrap();
//! assert_eq!(history[0].event_type, "AccountOpened");
//! assert_eq!(history[0].metadata.user_id(), Some("teller-7"));
//! assert_eq!(accounts.load_at_version("123", 1).await.unwrap().balance, 300);
//! # });
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod aggregate;
mod cache;
mod clock;
mod codec;
mod command;
mod error;
pub mod limits;
pub mod projection;
mod repository;
mod services;
pub mod testing;
mod upcast;

pub use strata_core::*;

pub use aggregate::{Aggregate, AggregateState};
pub use clock::{Clock, FixedClock, SystemClock};
pub use codec::{
    decode_enum_slice, decode_enum_value, encode_enum, enum_variants, DomainEvent, EncodeError,
    EncodedEvent,
};
pub use command::{CommandContext, CommandEnvelope};
pub use error::{ExecuteError, LoadError, TakeSnapshotError};
pub use repository::{Executed, Loaded, Repository};
pub use services::{HandleError, HandleWithServices};
/// `docs/toolkit.md`, whose complete examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/toolkit.md")]
pub struct ToolkitGuide;

pub use upcast::{
    schema_version_of, with_schema_version, DecodeError, DecodeErrorKind, EventCodec,
    EventEnvelope, UpcastError, Upcasters, SCHEMA_VERSION_KEY,
};
