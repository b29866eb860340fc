//! The toolkit's side of crypto-shredding: a Rust application names the personal fields of its
//! domain events beside their type, and registers them in one call at start.

use serde::de::DeserializeOwned;
use strata::DomainEvent;

use crate::schema::{EncryptionSchema, SubjectSource};

/// A family of domain events (the events of an aggregate) that holds personal data: the
/// encryption schema of each event type with personal fields.
///
/// Register them with [`Shredded::register_personal_data`](crate::Shredded::register_personal_data)
/// when the application starts: each event type named must be one of the family's (a typo is
/// an error, not a field left in clear), and a schema already in force is not written again.
/// From then on, a repository over the [`Shredded`](crate::Shredded) store seals those fields
/// on every command and opens them on every load, before the upcasters run. A forgotten
/// subject's fields read as `null`: give them a type that takes it (`Option<String>`).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use strata::DomainEvent;
/// use strata_shred::{EncryptionSchema, PersonalData, SubjectSource};
///
/// #[derive(Serialize, Deserialize)]
/// #[serde(rename_all_fields = "camelCase")]
/// enum CustomerEvent {
///     Registered { customer_id: String, name: Option<String>, email: Option<String> },
///     Deactivated {},
/// }
/// impl DomainEvent for CustomerEvent {}
/// impl PersonalData for CustomerEvent {
///     fn personal_data() -> Vec<EncryptionSchema> {
///         vec![EncryptionSchema::new("Registered", SubjectSource::Pointer("/customerId".into()))
///             .field("/name")
///             .field("/email")]
///     }
/// }
/// assert_eq!(CustomerEvent::personal_data()[0].fields, ["/name", "/email"]);
/// ```
pub trait PersonalData: DomainEvent + DeserializeOwned {
    /// The schema of each event type of the family that holds personal data.
    fn personal_data() -> Vec<EncryptionSchema>;
}

impl EncryptionSchema {
    /// A schema for `event_type` whose subject is found at `subject`, with no field yet: add
    /// them with [`EncryptionSchema::field`].
    pub fn new(event_type: impl Into<String>, subject: SubjectSource) -> EncryptionSchema {
        EncryptionSchema {
            event_type: event_type.into(),
            subject,
            fields: Vec::new(),
        }
    }

    /// Adds the JSON pointer of a personal field (`/email`).
    pub fn field(mut self, pointer: impl Into<String>) -> EncryptionSchema {
        self.fields.push(pointer.into());
        self
    }
}

/// For `#[serde(deserialize_with = "strata_shred::forgotten_as_default")]` on a personal field
/// that should read as its type's default (an empty name) once its subject is forgotten,
/// rather than as `None`: a forgotten field reads as `null`, and `null` gives the default.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct UserCreated {
///     #[serde(deserialize_with = "strata_shred::forgotten_as_default")]
///     name: String,
/// }
/// let forgotten: UserCreated = serde_json::from_str(r#"{"name": null}"#).unwrap();
/// assert_eq!(forgotten.name, "");
/// let known: UserCreated = serde_json::from_str(r#"{"name": "Ada"}"#).unwrap();
/// assert_eq!(known.name, "Ada");
/// ```
pub fn forgotten_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    Ok(<Option<T> as serde::Deserialize>::deserialize(deserializer)?.unwrap_or_default())
}
