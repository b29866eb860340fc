//! Commands with their context: who asked, in answer to what, and the command's own id.

use serde_json::{Map, Value};
use strata_core::{Metadata, Uuid};

/// Where a command comes from. Its fields flow into the metadata of every event the command
/// causes:
///
/// | event metadata key | value |
/// |---|---|
/// | `correlationId` | [`CommandContext::correlation_id`], or the command id when none is set (the command starts a new conversation) |
/// | `causationId` | the command id: these events were caused by this command |
/// | `userId` | [`CommandContext::user_id`], when set |
/// | any other key | [`CommandContext::custom`] (cannot override the keys above) |
///
/// The command id also makes retries safe: event ids are derived from it (UUIDv5 of the
/// command id and the event's index), so executing the same command id twice cannot record
/// its events twice — the second execution fails with
/// [`crate::ExecuteError::DuplicateCommand`]. Give a fresh id to every distinct command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandContext {
    /// The command's id; the causation id of its events.
    pub command_id: Uuid,
    /// The conversation this command belongs to (a request id, a saga id, ...).
    pub correlation_id: Option<String>,
    /// Who issued the command.
    pub user_id: Option<String>,
    /// Application-defined metadata copied to every event.
    pub custom: Map<String, Value>,
}

impl Default for CommandContext {
    fn default() -> Self {
        Self::new()
    }
}

impl CommandContext {
    /// A context with a fresh command id (UUIDv7) and nothing else.
    pub fn new() -> Self {
        CommandContext {
            command_id: Uuid::now_v7(),
            correlation_id: None,
            user_id: None,
            custom: Map::new(),
        }
    }

    /// Sets the command id (to make a client's retry of the same command idempotent).
    pub fn command_id(mut self, id: Uuid) -> Self {
        self.command_id = id;
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the user id.
    pub fn user_id(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }

    /// Adds an application-defined metadata field.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.custom.insert(key.into(), value.into());
        self
    }

    /// A context for a command issued in reaction to an event (by a process manager, say):
    /// it keeps the event's correlation id and user id, gets a fresh command id, and records
    /// the triggering event's id under the custom key `triggeredBy`.
    pub fn caused_by(metadata: &Metadata, causation: Uuid) -> Self {
        let mut ctx = CommandContext::new();
        ctx.correlation_id = metadata.correlation_id().map(str::to_owned);
        ctx.user_id = metadata.user_id().map(str::to_owned);
        ctx.custom.insert(
            "triggeredBy".to_owned(),
            Value::String(causation.to_string()),
        );
        ctx
    }

    /// The metadata of the events this command causes.
    pub fn event_metadata(&self) -> Metadata {
        let mut map = self.custom.clone();
        let command_id = self.command_id.to_string();
        let correlation = self
            .correlation_id
            .clone()
            .unwrap_or_else(|| command_id.clone());
        map.insert(
            strata_core::CORRELATION_ID_KEY.to_owned(),
            Value::String(correlation),
        );
        map.insert(
            strata_core::CAUSATION_ID_KEY.to_owned(),
            Value::String(command_id),
        );
        match &self.user_id {
            Some(user) => {
                map.insert(
                    strata_core::USER_ID_KEY.to_owned(),
                    Value::String(user.clone()),
                );
            }
            None => {
                map.remove(strata_core::USER_ID_KEY);
            }
        }
        Metadata::from_map(map)
    }

    /// The id of the `index`-th event this command causes, the same on every attempt: derived
    /// from the command id and the index by a UUIDv5 hash.
    ///
    /// When the command id is a UUIDv7 (the default), the event id is one too, with the
    /// command's timestamp and the hash in its random bits: ids then grow with time like the
    /// ids the store assigns, so a database index on them takes each new one near the last
    /// instead of at a random place. Any other command id gives the UUIDv5 itself.
    ///
    /// ```
    /// let context = strata::CommandContext::new();
    /// assert_eq!(context.event_id(0), context.event_id(0));
    /// assert_ne!(context.event_id(0), context.event_id(1));
    /// assert_eq!(context.event_id(0).get_version_num(), 7);
    /// ```
    pub fn event_id(&self, index: usize) -> Uuid {
        let hashed = Uuid::new_v5(&self.command_id, &(index as u64).to_le_bytes());
        if self.command_id.get_version_num() != 7 {
            return hashed;
        }
        let mut bytes = *hashed.as_bytes();
        // A UUIDv7 is 48 bits of Unix milliseconds, the version, then random bits.
        bytes[..6].copy_from_slice(&self.command_id.as_bytes()[..6]);
        uuid::Builder::from_bytes(bytes)
            .with_version(uuid::Version::SortRand)
            .with_variant(uuid::Variant::RFC4122)
            .into_uuid()
    }
}

/// A command and its context. Anything that converts into it can be executed, so a bare
/// command works too (with a fresh [`CommandContext`]).
///
/// ```
/// use strata::CommandEnvelope;
/// #[derive(Debug, Clone)]
/// struct Deposit { amount: u64 }
/// let envelope = CommandEnvelope::new(Deposit { amount: 200 })
///     .correlation_id("req-789")
///     .user_id("user-456")
///     .with("channel", "mobile");
/// let meta = envelope.context.event_metadata();
/// assert_eq!(meta.correlation_id(), Some("req-789"));
/// assert_eq!(meta.causation_id(), Some(envelope.context.command_id.to_string().as_str()));
/// assert_eq!(meta.get("channel").and_then(|v| v.as_str()), Some("mobile"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CommandEnvelope<C> {
    /// The command.
    pub command: C,
    /// Its context.
    pub context: CommandContext,
}

impl<C> CommandEnvelope<C> {
    /// Wraps `command` with a fresh context.
    pub fn new(command: C) -> Self {
        CommandEnvelope {
            command,
            context: CommandContext::new(),
        }
    }

    /// Wraps `command` with `context`.
    pub fn with_context(command: C, context: CommandContext) -> Self {
        CommandEnvelope { command, context }
    }

    /// Sets the command id.
    pub fn command_id(mut self, id: Uuid) -> Self {
        self.context = self.context.command_id(id);
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.context = self.context.correlation_id(id);
        self
    }

    /// Sets the user id.
    pub fn user_id(mut self, id: impl Into<String>) -> Self {
        self.context = self.context.user_id(id);
        self
    }

    /// Adds an application-defined metadata field.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.context = self.context.with(key, value);
        self
    }
}

impl<C> From<C> for CommandEnvelope<C> {
    fn from(command: C) -> Self {
        CommandEnvelope::new(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_distinct_and_follow_the_command_id_kind() {
        let v7 = CommandContext::new();
        assert_eq!(v7.event_id(3), v7.event_id(3));
        assert_ne!(v7.event_id(0), v7.event_id(1));
        assert_eq!(v7.event_id(0).get_version_num(), 7);
        assert_eq!(
            v7.event_id(0).get_variant(),
            uuid::Variant::RFC4122,
            "a well-formed UUID"
        );
        // Time-ordered: a later command's events sort after an earlier one's.
        let earlier = CommandContext::new()
            .command_id(Uuid::from_u128(0x0100_0000_0000_7000_8000_0000_0000_0000));
        let later = CommandContext::new()
            .command_id(Uuid::from_u128(0x0200_0000_0000_7000_8000_0000_0000_0000));
        assert!(earlier.event_id(9) < later.event_id(0));
        // A command id of another kind gives the plain hash.
        let v4 = CommandContext::new()
            .command_id(Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef));
        let id = Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef);
        assert_eq!(v4.event_id(2), Uuid::new_v5(&id, &2u64.to_le_bytes()));
    }
}
