//! The outside facts the handlers consult, each behind a small trait so that a test passes a
//! stub: exchange rates (I/O in real life, so async) and an email directory answering "is
//! this address taken?" from a read model.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use strata::{
    async_trait, AggregateState, DecodeError, EventCodec, EventStore, Filter, Position,
    ReadAllOptions, ReadError,
};

use crate::domain::{User, UserEvent};

/// The currencies the example knows. All have two decimal places, so amounts are integers in
/// cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Currency {
    #[serde(rename = "EUR")]
    Eur,
    #[serde(rename = "USD")]
    Usd,
    #[serde(rename = "GBP")]
    Gbp,
    #[serde(rename = "CHF")]
    Chf,
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Currency::Eur => "EUR",
            Currency::Usd => "USD",
            Currency::Gbp => "GBP",
            Currency::Chf => "CHF",
        })
    }
}

/// An exchange rate: how many units of the target currency one unit of the source buys, in
/// millionths (1.085 is `Rate { per_million: 1_085_000 }`). Integers, so a conversion is
/// exact and the same on every machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rate {
    pub per_million: u64,
}

impl Rate {
    /// `cents` of the source currency in cents of the target, rounded half up; `None` when the
    /// result does not fit.
    pub fn convert(self, cents: i64) -> Option<i64> {
        let scaled = i128::from(cents) * i128::from(self.per_million) + 500_000;
        i64::try_from(scaled.div_euclid(1_000_000)).ok()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}",
            self.per_million / 1_000_000,
            self.per_million % 1_000_000
        )
    }
}

/// The rate service could not answer (down, timed out). Not a refusal: the deposit may go
/// through once it answers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("exchange rates unavailable: {reason}")]
pub struct RatesUnavailable {
    pub reason: String,
}

/// Quotes exchange rates. In production an HTTP client of a rates provider; here a table.
#[async_trait]
pub trait ExchangeRates: Send + Sync {
    /// The rate from `from` to `to` now; `None` when it is not quoted.
    async fn rate(&self, from: Currency, to: Currency) -> Result<Option<Rate>, RatesUnavailable>;
}

/// A rate table in memory, which can be switched off to show what an outage does.
#[derive(Debug, Default)]
pub struct RateTable {
    rates: Mutex<HashMap<(Currency, Currency), Rate>>,
    down: AtomicBool,
}

impl RateTable {
    /// Quotes `rate` from `from` to `to` from now on.
    pub fn quote(&self, from: Currency, to: Currency, rate: Rate) -> &Self {
        self.rates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((from, to), rate);
        self
    }

    /// Makes every lookup fail (`true`) or answer again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

#[async_trait]
impl ExchangeRates for RateTable {
    async fn rate(&self, from: Currency, to: Currency) -> Result<Option<Rate>, RatesUnavailable> {
        if self.down.load(Ordering::SeqCst) {
            return Err(RatesUnavailable {
                reason: "the rate table is switched off".into(),
            });
        }
        Ok(self
            .rates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(from, to))
            .copied())
    }
}

/// The email directory could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryUnavailable {
    /// The store could not be read.
    #[error("email directory unavailable: {0}")]
    Read(#[from] ReadError),
    /// A stored user event cannot be decoded; the index stops before it rather than answer
    /// without it.
    #[error("email directory unavailable: {0}")]
    Decode(#[from] DecodeError),
}

/// Answers whether an email address is taken.
#[async_trait]
pub trait EmailDirectory: Send + Sync {
    /// The user that has `email` (already normalized), if any.
    async fn owner_of(&self, email: &str) -> Result<Option<String>, DirectoryUnavailable>;
}

/// A read model of who has which email, built from the `user` events in the store and caught
/// up before every answer. It is as fresh as the store at the moment of the question — and no
/// fresher: a registration appended after the question is not in the answer (see the caveat in
/// `domain.rs`).
pub struct EmailIndex<S> {
    store: S,
    state: tokio::sync::Mutex<IndexState>,
}

#[derive(Default)]
struct IndexState {
    /// The position after the last event read.
    next: Position,
    owners: HashMap<String, String>,
}

/// Events read per catch-up page: bounds the memory of one read.
const INDEX_PAGE_EVENTS: usize = 512;

impl<S: EventStore> EmailIndex<S> {
    /// An empty index over `store`; the first question reads the store from the start.
    pub fn new(store: S) -> Self {
        EmailIndex {
            store,
            state: tokio::sync::Mutex::new(IndexState::default()),
        }
    }

    async fn catch_up(&self, state: &mut IndexState) -> Result<(), DirectoryUnavailable> {
        let codec = EventCodec::<UserEvent>::new();
        let users = <User as AggregateState>::CATEGORY;
        loop {
            let page = self
                .store
                .read_all(
                    ReadAllOptions::forward()
                        .from(state.next)
                        .limit(INDEX_PAGE_EVENTS)
                        .filter(Filter::default().categories([users])),
                )
                .await?;
            for recorded in &page.events {
                let event = codec.decode(recorded)?;
                let stream = recorded.stream_id.as_str();
                let user = stream.strip_prefix(users).unwrap_or(stream);
                let user = user.trim_start_matches('-').to_owned();
                match event {
                    UserEvent::UserRegistered { email, .. } => {
                        state.owners.insert(email, user);
                    }
                    UserEvent::EmailChanged { from, to, .. } => {
                        state.owners.remove(&from);
                        state.owners.insert(to, user);
                    }
                }
                state.next = Position(recorded.position.0 + 1);
            }
            match page.next {
                Some(next) if !page.is_end => state.next = state.next.max(next),
                _ => return Ok(()),
            }
        }
    }
}

#[async_trait]
impl<S: EventStore> EmailDirectory for EmailIndex<S> {
    async fn owner_of(&self, email: &str) -> Result<Option<String>, DirectoryUnavailable> {
        let mut state = self.state.lock().await;
        self.catch_up(&mut state).await?;
        Ok(state.owners.get(email).cloned())
    }
}
