//! # strata-client
//!
//! A client of a Strata server's HTTP API, for the `strata` command's `--server` mode and any
//! Rust program that talks to a server without linking it. It depends on `strata-core` and on
//! `strata-wire`, the crate of JSON shapes and paths the server renders with, not on the server.
//!
//! [`Client`] implements [`EventStore`](strata_core::EventStore), so code written against the
//! trait works against a remote server unchanged; reads page through the server's page limit
//! as needed. Live subscriptions go over server-sent events with [`Client::follow`], which
//! reconnects and resumes by itself (the trait's `subscribe` polls, and is there for
//! completeness). Every failure is a [`ClientError`] to match on; a problem document from the
//! server carries its [`ErrorCode`].
//!
//! Building a client does not connect, so this runs anywhere:
//!
//! ```
//! use strata_client::{paths, Client, ClientError};
//! use strata_core::{StreamId, SubscribeFrom, SubscriptionTarget};
//!
//! let client = Client::builder("http://127.0.0.1:2113/").token("strata_example").build()?;
//! assert_eq!(client.base_url(), "http://127.0.0.1:2113");
//!
//! // A subscription to one stream, from its first event.
//! let target = SubscriptionTarget::Stream(StreamId::new("account-1").unwrap());
//! let path = paths::subscription_path(&target, SubscribeFrom::Start);
//! assert_eq!(path, "/subscriptions/streams/account-1?from=start");
//!
//! // A URL that is not HTTP is refused before any request.
//! let err = Client::new("127.0.0.1:2113").unwrap_err();
//! assert!(matches!(err, ClientError::InvalidUrl { .. }));
//! # Ok::<(), ClientError>(())
//! ```
//!
//! Against a running server (`strata serve`): append with optimistic concurrency, read back,
//! then follow the stream as events arrive.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_client::{paths, Client};
//! use strata_core::{
//!     AppendError, EventData, EventStore, ExpectedVersion, ReadStreamOptions, StreamId,
//!     SubscribeFrom, SubscriptionTarget,
//! };
//!
//! let client = Client::new("http://127.0.0.1:2113")?;
//! let account = StreamId::new("account-1")?;
//! let opened = EventData::json("AccountOpened", &serde_json::json!({ "initialBalance": 100 }))?;
//! match client.append(&account, ExpectedVersion::NoStream, vec![opened]).await {
//!     Ok(r) => println!("account-1 is at version {}", r.stream_version),
//!     Err(AppendError::WrongExpectedVersion { actual, .. }) => println!("already open, at {actual}"),
//!     Err(e) => return Err(e.into()),
//! }
//! for e in client.read_stream(&account, ReadStreamOptions::forward()).await? {
//!     println!("{} {}", e.stream_version, e.event_type);
//! }
//! let target = SubscriptionTarget::Stream(account);
//! let mut follow = client.follow(paths::subscription_path(&target, SubscribeFrom::Start), None);
//! let first = follow.next().await?;
//! println!("first event: {}", first.event_type);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod client;
mod error;
pub mod limits;
mod sse;
mod store;

pub use client::{Client, ClientBuilder};
pub use error::ClientError;
pub use sse::{Follow, SseEvent, SseStream};
pub use store::BatchAppend;
pub use strata_wire::{paths, ErrorCode, RebuildReport, RebuildState};
