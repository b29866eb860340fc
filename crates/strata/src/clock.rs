//! Time as a service: [`Clock`], the [`SystemClock`] for production and the [`FixedClock`]
//! for tests.
//!
//! A handler that records when something happened asks its services' clock instead of calling
//! `Utc::now()`, so a test fixes the time and asserts the exact events.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::TimeDelta;
use strata_core::{InvalidInput, Timestamp};

/// Tells the time.
///
/// ```
/// use strata::{Clock, FixedClock, SystemClock};
/// let at = "2024-01-15T10:30:00Z".parse().unwrap();
/// let clock = FixedClock::new(at);
/// assert_eq!(clock.now(), at);
/// assert!(SystemClock.now() > at);
/// ```
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock (`chrono::Utc::now()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now()
    }
}

/// A clock that stands still until it is moved: every [`Clock::now`] returns the time it was
/// set to. Share it (`Arc<FixedClock>`) between a test and the services it builds, and move it
/// with [`FixedClock::set`] or [`FixedClock::advance`].
///
/// ```
/// use chrono::TimeDelta;
/// use strata::{Clock, FixedClock};
/// let clock = FixedClock::new("2024-01-15T10:30:00Z".parse().unwrap());
/// clock.advance(TimeDelta::minutes(5)).unwrap();
/// assert_eq!(clock.now().to_rfc3339(), "2024-01-15T10:35:00+00:00");
/// ```
#[derive(Debug)]
pub struct FixedClock {
    now: Mutex<Timestamp>,
}

impl FixedClock {
    /// A clock standing at `at`.
    pub fn new(at: Timestamp) -> Self {
        FixedClock {
            now: Mutex::new(at),
        }
    }

    /// Moves the clock to `at` (backwards too: a test may need a clock that jumps back).
    pub fn set(&self, at: Timestamp) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }

    /// Moves the clock by `by` (negative: back) and returns the new time. A move past the
    /// range of [`Timestamp`] is refused and leaves the clock where it was.
    pub fn advance(&self, by: TimeDelta) -> Result<Timestamp, InvalidInput> {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        let moved = now.checked_add_signed(by).ok_or_else(|| {
            InvalidInput::new(
                "FixedClock::advance",
                format!("{now} + {by} is outside the range of a timestamp"),
            )
        })?;
        *now = moved;
        Ok(moved)
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_stands_still_until_moved() {
        let at: Timestamp = "2024-01-15T10:30:00Z".parse().expect("a valid timestamp");
        let clock = Arc::new(FixedClock::new(at));
        let shared: Arc<dyn Clock> = clock.clone();
        assert_eq!(shared.now(), at);
        assert_eq!(shared.now(), at, "reading does not move it");

        let later = clock.advance(TimeDelta::seconds(90)).expect("in range");
        assert_eq!(later, at + TimeDelta::seconds(90));
        assert_eq!(shared.now(), later);

        clock.set(at);
        assert_eq!(shared.now(), at, "set moves it back");
    }

    #[test]
    fn a_move_out_of_range_is_refused_and_changes_nothing() {
        let clock = FixedClock::new(Timestamp::MAX_UTC);
        let refused = clock.advance(TimeDelta::seconds(1)).unwrap_err();
        assert_eq!(refused.field, "FixedClock::advance");
        assert_eq!(clock.now(), Timestamp::MAX_UTC);
    }
}
