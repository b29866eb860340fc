//! # strata-wire
//!
//! What a Strata server and its clients must agree on, in one place that both use: the JSON
//! shapes of events ([`EventJson`]), append requests ([`append_body`] writes one,
//! [`AppendBody`] reads it) and their answers ([`Appended`]), pages ([`StreamPage`],
//! [`AllPage`], [`ListPage`]), a projection's rebuild ([`RebuildReport`]), a scavenge ([`ScavengeStatus`]), archiving ([`ArchiveStatus`]), a forget ([`ForgetAnswer`]), the error codes of problem documents ([`ErrorCode`]), the
//! names of server-sent events ([`sse`]), the percent-encoding of query strings
//! ([`query::encode`]) and the paths of the API's resources ([`paths`]), which the server also
//! writes into its `next` links.
//!
//! `strata-server` renders and parses with these; `strata-client` builds its requests and reads
//! the answers with them. The crate has no I/O and no HTTP stack: its dependencies are
//! `strata-core`, serde, serde_json, base64 and chrono. The HTTP API itself is described in
//! `docs/http-api.md`.
//!
//! ```
//! use strata_core::{EventData, ExpectedVersion, ReadStreamOptions};
//! use strata_wire::{append_body, paths, AppendBody};
//!
//! // A client appends `Deposited` to `account-1`, which must not exist yet...
//! let event = EventData::json("Deposited", &serde_json::json!({ "amount": 100 })).unwrap();
//! let path = paths::stream_path("account-1");
//! let body = append_body(ExpectedVersion::NoStream, &[event.clone()]);
//! assert_eq!(path, "/streams/account-1");
//!
//! // ...and the server reads the same events out of the body.
//! let (expected, events) = AppendBody::parse(&body).unwrap().into_events().unwrap();
//! assert_eq!(expected, ExpectedVersion::NoStream);
//! assert_eq!(events, vec![event]);
//!
//! // Then the client reads the stream back, twenty events a page.
//! let read = paths::read_stream_path("account-1", &ReadStreamOptions::forward().limit(20));
//! assert_eq!(read, "/streams/account-1?direction=forward&limit=20");
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod append;
mod archive;
mod event;
mod page;
pub mod paths;
mod problem;
mod projection;
pub mod query;
mod scavenge;
pub mod sse;
mod subject;

pub use append::{
    append_body, batch_append_body, expected_to_json, parse_body, AppendBody, Appended,
    BatchAppendBody, BatchAppendIn, BatchAppended, BatchResult, BodyError, EventIn, WireExpected,
};
pub use archive::{ArchiveState, ArchiveStatus};
pub use event::{parse_event, EventError, EventJson};
pub use page::{AllPage, Head, ListPage, MetadataAnswer, PositionAt, StreamPage};
pub use problem::{ErrorCode, PROBLEM_JSON};
pub use projection::{RebuildReport, RebuildState};
pub use scavenge::{ScavengeState, ScavengeStatus};
pub use subject::{ForgetAnswer, ForgetOutcome};

/// Standard base64; decoding also takes unpadded input and non-zero trailing bits.
pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// For `#[serde(default, deserialize_with = "present")]`: a field that may be absent (then
/// `None`), whose `null` is not absence but goes to `T` (which takes it as a value, or refuses
/// it).
pub(crate) fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}
