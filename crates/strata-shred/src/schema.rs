//! Encryption schemas: which fields of an event type are personal, and whose they are.
//!
//! A schema names, for one event type, the JSON pointers of its personal fields and where the
//! subject's id is: a JSON pointer into the event's data (a string or an integer there), or a
//! metadata key. It is checked when registered, and every event of its type is checked against
//! it when appended: a pointer that does not match is a typed error and nothing is written.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use strata_core::InvalidInput;

use crate::limits::{POINTER_MAX_BYTES, SCHEMA_FIELDS_MAX};
use crate::seal::SEALED_KEY;

/// Where an event's subject id is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum SubjectSource {
    /// A JSON pointer into the event's data, such as `/customerId`.
    Pointer(String),
    /// A key of the event's metadata, such as `subject`.
    MetadataKey(String),
    /// The id of the stream the event is appended to: an aggregate per person (`user-42`).
    /// Written `{"stream": {}}`.
    Stream {},
}

impl std::fmt::Display for SubjectSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubjectSource::Pointer(p) => write!(f, "at {p}"),
            SubjectSource::MetadataKey(k) => write!(f, "in metadata {k}"),
            SubjectSource::Stream {} => f.write_str("the stream"),
        }
    }
}

/// The personal fields of one event type.
///
/// ```
/// use strata_shred::{EncryptionSchema, SubjectSource};
/// let schema = EncryptionSchema {
///     event_type: "CustomerRegistered".into(),
///     subject: SubjectSource::Pointer("/customerId".into()),
///     fields: vec!["/name".into(), "/email".into()],
/// };
/// assert!(schema.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionSchema {
    /// The event type it applies to.
    pub event_type: String,
    /// Where the subject's id is.
    pub subject: SubjectSource,
    /// JSON pointers of the personal fields, sealed under the subject's key.
    pub fields: Vec<String>,
}

/// Checks a JSON pointer's syntax (RFC 6901, not the whole document).
fn check_pointer(field: &str, p: &str) -> Result<(), InvalidInput> {
    if !p.starts_with('/') {
        return Err(InvalidInput::new(
            field,
            "must be a JSON pointer to a member, starting with '/'",
        ));
    }
    if p.len() > POINTER_MAX_BYTES {
        return Err(InvalidInput::new(field, "is longer than 255 bytes"));
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(InvalidInput::new(
                field,
                "has a '~' that is not '~0' or '~1'",
            ));
        }
        if c.is_control() {
            return Err(InvalidInput::new(field, "holds control characters"));
        }
    }
    Ok(())
}

/// Whether pointer `a` is `b` or lies inside it.
fn within(a: &str, b: &str) -> bool {
    a == b || (a.starts_with(b) && a.as_bytes()[b.len()] == b'/')
}

impl EncryptionSchema {
    /// Checks the schema: an event type, 1 to 32 distinct pointers, none inside another, none
    /// holding the subject's pointer (the subject id must stay readable to find its key).
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if self.event_type.is_empty() || self.event_type.chars().any(char::is_control) {
            return Err(InvalidInput::new(
                "eventType",
                "must be a non-empty event type without control characters",
            ));
        }
        if self.fields.is_empty() || self.fields.len() > SCHEMA_FIELDS_MAX {
            return Err(InvalidInput::new(
                "fields",
                "must name 1 to 32 personal fields",
            ));
        }
        match &self.subject {
            SubjectSource::Pointer(p) => check_pointer("subject.pointer", p)?,
            SubjectSource::MetadataKey(k) if k.is_empty() || k.len() > POINTER_MAX_BYTES => {
                return Err(InvalidInput::new(
                    "subject.metadataKey",
                    "must be 1 to 255 bytes",
                ))
            }
            SubjectSource::MetadataKey(_) | SubjectSource::Stream {} => {}
        }
        for (i, f) in self.fields.iter().enumerate() {
            let name = format!("fields[{i}]");
            check_pointer(&name, f)?;
            if let SubjectSource::Pointer(s) = &self.subject {
                if within(s, f) {
                    return Err(InvalidInput::new(
                        name,
                        "holds the subject's id, which must stay readable to find its key",
                    ));
                }
            }
            for (j, g) in self.fields.iter().enumerate() {
                if i != j && within(f, g) {
                    return Err(InvalidInput::new(
                        name,
                        format!("lies within fields[{j}] ({g}) or repeats it"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The subject id of an event of this type: `at_pointer` is the value the subject's
    /// pointer found in the data (when it is a pointer), `metadata` the event's metadata,
    /// `stream` the stream it is appended to. `at` names the event in errors (`events[3]`).
    pub(crate) fn subject_of(
        &self,
        at_pointer: Option<&Value>,
        metadata: &strata_core::Metadata,
        stream: &strata_core::StreamId,
        at: &str,
    ) -> Result<String, InvalidInput> {
        let (value, wher) = match &self.subject {
            SubjectSource::Pointer(p) => (at_pointer, format!("{at}.data{p}")),
            SubjectSource::MetadataKey(k) => (metadata.get(k), format!("{at}.metadata.{k}")),
            SubjectSource::Stream {} => return Ok(stream.as_str().to_owned()),
        };
        match value {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            Some(_) => Err(InvalidInput::new(
                wher,
                format!(
                    "must be the subject's id (a string or an integer), as the encryption schema of {} says",
                    self.event_type
                ),
            )),
            None => Err(InvalidInput::new(
                wher,
                format!(
                    "is missing: the encryption schema of {} finds the subject's id there",
                    self.event_type
                ),
            )),
        }
    }

    /// The pointer of the subject's id in the data, when the schema names one.
    pub(crate) fn subject_pointer(&self) -> Option<&str> {
        match &self.subject {
            SubjectSource::Pointer(p) => Some(p),
            SubjectSource::MetadataKey(_) | SubjectSource::Stream {} => None,
        }
    }
}

/// Whether `value` holds an object with the sealed-value key anywhere: such data is refused on
/// the way in, so that nothing but Strata's own sealed values looks sealed.
pub(crate) fn holds_sealed_key(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.contains_key(SEALED_KEY) || map.values().any(holds_sealed_key),
        Value::Array(items) => items.iter().any(holds_sealed_key),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(subject: &str, fields: &[&str]) -> EncryptionSchema {
        EncryptionSchema {
            event_type: "T".into(),
            subject: SubjectSource::Pointer(subject.into()),
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn schemas_are_checked() {
        assert!(schema("/id", &["/name", "/email"]).validate().is_ok());
        assert!(schema("/id", &["/a~1b", "/c~0"]).validate().is_ok());
        for (s, why) in [
            (schema("/id", &[]), "fields"),
            (schema("/id", &["name"]), "fields[0]"),
            (schema("/id", &["/a~2"]), "fields[0]"),
            (schema("/id", &["/id"]), "fields[0]"),
            (schema("/who/id", &["/who"]), "fields[0]"),
            (schema("/id", &["/a", "/a/b"]), "fields[1]"),
            (schema("/id", &["/a", "/a"]), "fields[0]"),
            (schema("id", &["/a"]), "subject.pointer"),
        ] {
            assert_eq!(
                s.validate().map_err(|e| e.field),
                Err(why.to_owned()),
                "{s:?}"
            );
        }
        // Siblings with a common prefix are not nested.
        assert!(schema("/id", &["/a", "/ab"]).validate().is_ok());
        assert!(schema("/idx", &["/id"]).validate().is_ok());
    }

    #[test]
    fn schemas_have_a_stable_json_shape() {
        let s = schema("/customerId", &["/email"]);
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"eventType": "T", "subject": {"pointer": "/customerId"}, "fields": ["/email"]})
        );
        assert!(serde_json::from_value::<EncryptionSchema>(
            serde_json::json!({"eventType": "T", "subject": {"metadataKey": "s"}, "fields": ["/e"], "x": 1})
        )
        .is_err());
    }

    #[test]
    fn subjects_are_found_or_named_in_the_error() {
        let s = schema("/customerId", &["/email"]);
        let md = strata_core::Metadata::new();
        let stream = strata_core::StreamId::new("customer-7").expect("stream");
        let data = serde_json::json!({"customerId": 42, "email": "x"});
        let found = data.pointer("/customerId");
        assert_eq!(
            s.subject_of(found, &md, &stream, "events[0]")
                .expect("found"),
            "42"
        );
        let e = s
            .subject_of(None, &md, &stream, "events[2]")
            .expect_err("missing");
        assert_eq!(e.field, "events[2].data/customerId");
        let by_meta = EncryptionSchema {
            subject: SubjectSource::MetadataKey("subject".into()),
            ..s.clone()
        };
        let md = md.with("subject", serde_json::json!("c-1"));
        assert_eq!(
            by_meta
                .subject_of(found, &md, &stream, "events[0]")
                .expect("found"),
            "c-1"
        );
        let by_stream = EncryptionSchema {
            subject: SubjectSource::Stream {},
            ..s
        };
        assert_eq!(
            by_stream
                .subject_of(found, &md, &stream, "events[0]")
                .expect("found"),
            "customer-7"
        );
        assert_eq!(
            serde_json::to_value(&by_stream.subject).expect("json"),
            serde_json::json!({"stream": {}})
        );
    }
}
