//! Services for command handlers: the outside facts a decision needs (the time, an exchange
//! rate, whether a name is taken), held by the [`crate::Repository`] and passed to each
//! [`HandleWithServices::handle_with`], so they need not travel inside commands.
//!
//! ```
//! use std::sync::Arc;
//! use serde::{Deserialize, Serialize};
//! use strata::{AggregateState, Clock, DomainEvent, FixedClock, HandleError, HandleWithServices,
//!     Repository, Timestamp};
//!
//! #[derive(Debug, Default, Clone, Serialize, Deserialize)]
//! struct Ticket { opened_at: Option<Timestamp> }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! enum TicketEvent { Opened { at: Timestamp } }
//! impl DomainEvent for TicketEvent {}
//!
//! #[derive(Debug, PartialEq, thiserror::Error)]
//! #[error("the ticket is already open")]
//! struct AlreadyOpen;
//!
//! impl AggregateState for Ticket {
//!     type Event = TicketEvent;
//!     type Command = ();
//!     type Error = AlreadyOpen;
//!     const CATEGORY: &'static str = "ticket";
//!     fn apply(&mut self, TicketEvent::Opened { at }: &TicketEvent) { self.opened_at = Some(*at) }
//! }
//!
//! // What the handlers need from outside; here only the time.
//! struct TicketServices { clock: Arc<dyn Clock> }
//!
//! impl HandleWithServices for Ticket {
//!     type Services = TicketServices;
//!     type ServiceError = std::convert::Infallible;
//!     async fn handle_with(&self, _open: (), services: &TicketServices)
//!         -> Result<Vec<TicketEvent>, HandleError<AlreadyOpen, Self::ServiceError>>
//!     {
//!         if self.opened_at.is_some() {
//!             return Err(AlreadyOpen.into());
//!         }
//!         Ok(vec![TicketEvent::Opened { at: services.clock.now() }])
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let at: Timestamp = "2024-01-15T10:30:00Z".parse().unwrap();
//! let clock = Arc::new(FixedClock::new(at));
//! let tickets = Repository::<Ticket, _>::with_services(
//!     strata_testkit::MemoryStore::new(),
//!     TicketServices { clock: clock.clone() },
//! );
//! let done = tickets.execute("42", ()).await.unwrap();
//! assert_eq!(done.events, [TicketEvent::Opened { at }]);
//! # });
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;

use crate::aggregate::{Aggregate, AggregateState};

/// Decides with services: the events a command causes in the current state, given what the
/// aggregate's services answer, or why not.
///
/// The [`crate::Repository`] holds the services ([`crate::Repository::with_services`]) and
/// passes them to every call. After a concurrency conflict it catches the state up and calls
/// `handle_with` again, so the services are asked again too and the new decision rests on
/// fresh answers. A handler must therefore only *ask*: no writes, no messages sent — those
/// belong after the events are stored (a projection, a process manager).
///
/// A refusal is [`HandleError::Rejected`] (the repository returns
/// [`crate::ExecuteError::Rejected`]); a service that could not answer is
/// [`HandleError::Service`] ([`crate::ExecuteError::Service`], with the service's error as
/// its source). Nothing is written in either case.
///
/// Every [`Aggregate`] implements this trait with no services (`()`) and no service error
/// ([`Infallible`]), by calling its pure [`Aggregate::handle`]: a repository of such an
/// aggregate is built with [`crate::Repository::new`], as before.
///
/// Implementations may write `async fn handle_with`; the future must be `Send` (the
/// repository's own futures are).
pub trait HandleWithServices: AggregateState {
    /// What the handlers consult: a struct of clocks, clients and read-model lookups, usually
    /// behind trait objects so that tests can pass stubs.
    type Services: Send + Sync + 'static;
    /// Why a service could not answer.
    type ServiceError: std::error::Error + Send + Sync + 'static;

    /// Decides, asking `services` what the state and the command do not say.
    // The whole type spelled out, so that an implementor sees what to return.
    #[allow(clippy::type_complexity)]
    fn handle_with(
        &self,
        command: Self::Command,
        services: &Self::Services,
    ) -> impl Future<Output = Result<Vec<Self::Event>, HandleError<Self::Error, Self::ServiceError>>>
           + Send;
}

impl<A: Aggregate> HandleWithServices for A {
    type Services = ();
    type ServiceError = Infallible;

    #[allow(clippy::type_complexity)]
    fn handle_with(
        &self,
        command: Self::Command,
        _services: &(),
    ) -> impl Future<Output = Result<Vec<Self::Event>, HandleError<Self::Error, Self::ServiceError>>>
           + Send {
        std::future::ready(Aggregate::handle(self, command).map_err(HandleError::Rejected))
    }
}

/// Why [`HandleWithServices::handle_with`] caused no events: the aggregate refused, or a
/// service it consulted could not answer.
///
/// A refusal converts with `?` or `.into()`; a service's error with
/// `.map_err(HandleError::Service)?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleError<E, S> {
    /// A business rule said no.
    Rejected(E),
    /// A service could not answer (unreachable, timed out, failed). Not a decision: the same
    /// command may succeed once the service answers.
    Service(S),
}

impl<E, S> From<E> for HandleError<E, S> {
    fn from(refusal: E) -> Self {
        HandleError::Rejected(refusal)
    }
}

impl<E: fmt::Display, S: fmt::Display> fmt::Display for HandleError<E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandleError::Rejected(e) => write!(f, "command rejected: {e}"),
            HandleError::Service(e) => write!(f, "a service could not answer: {e}"),
        }
    }
}

impl<E, S> std::error::Error for HandleError<E, S>
where
    E: std::error::Error + 'static,
    S: std::error::Error + 'static,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandleError::Rejected(e) => Some(e),
            HandleError::Service(e) => Some(e),
        }
    }
}
