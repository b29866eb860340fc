//! How domain events become stored events and back.
//!
//! The default codec maps a serde enum in its default (externally tagged) representation to
//! Strata's event model: the **variant name is the stored event type** and the variant's
//! content is the JSON payload. Names are chosen by the application, never derived from Rust
//! type paths: rename a variant freely in Rust and keep its stored name with
//! `#[serde(rename = "...")]`.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use strata::DomainEvent;
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! enum AccountEvent {
//!     AccountOpened { initial_balance: u64 },
//!     #[serde(rename = "MoneyDeposited")]
//!     Deposited { amount: u64 },
//!     AccountClosed,
//! }
//! impl DomainEvent for AccountEvent {}
//!
//! let encoded = AccountEvent::Deposited { amount: 200 }.encode().unwrap();
//! assert_eq!(encoded.event_type, "MoneyDeposited");
//! assert_eq!(encoded.data, serde_json::json!({"amount": 200}));
//!
//! let back = AccountEvent::decode_json("MoneyDeposited", br#"{"amount":200}"#).unwrap();
//! assert_eq!(back, AccountEvent::Deposited { amount: 200 });
//! // Unit variants are stored with an empty object as their payload.
//! assert_eq!(AccountEvent::AccountClosed.encode().unwrap().data, serde_json::json!({}));
//! assert_eq!(AccountEvent::event_types(), ["AccountOpened", "MoneyDeposited", "AccountClosed"]);
//! ```

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::ser::{self, Impossible};
use serde::{Deserializer, Serialize};
use serde_json::Value;

use crate::upcast::Upcasters;

/// An event ready to store: its stable type name and its JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    /// The stored event type.
    pub event_type: &'static str,
    /// The payload at the event type's newest schema version.
    pub data: Value,
}

/// Why an event could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The default codec needs a serde enum in the externally tagged representation; the
    /// value serialized as something else. Override [`DomainEvent::encode`] and the decoders,
    /// or use a plain `enum` without `#[serde(tag = ...)]` / `#[serde(untagged)]`.
    #[error("the default event codec needs an externally tagged serde enum; got {0}")]
    NotAnEnum(String),
    /// Serialization failed.
    #[error("could not serialize event {event_type}: {reason}")]
    Serialize {
        /// The event type, when known.
        event_type: String,
        /// The serializer's message.
        reason: String,
    },
}

/// The events of one aggregate (or any family of events a projection reads).
///
/// Every method has a default that works for a serde enum in serde's default representation,
/// so `impl DomainEvent for MyEvent {}` is usually all there is to write, plus
/// [`DomainEvent::upcasters`] once a payload's schema has changed. Override the codec methods
/// together to store events in another shape.
pub trait DomainEvent: Sized + Send + Sync + 'static {
    /// Splits the event into its stored type name and its JSON payload.
    fn encode(&self) -> Result<EncodedEvent, EncodeError>
    where
        Self: Serialize,
    {
        encode_enum(self)
    }

    /// Rebuilds an event from its type name and a JSON payload at the newest schema version.
    fn decode_value(event_type: &str, data: Value) -> Result<Self, serde_json::Error>
    where
        Self: DeserializeOwned,
    {
        decode_enum_value(event_type, data)
    }

    /// Rebuilds an event from its type name and JSON bytes at the newest schema version,
    /// without an intermediate `serde_json::Value` (the fast path of every load).
    fn decode_json(event_type: &str, data: &[u8]) -> Result<Self, serde_json::Error>
    where
        Self: DeserializeOwned,
    {
        decode_enum_slice(event_type, data)
    }

    /// Every event type name this family can decode; empty when unknown. Used to tell an
    /// unknown event type apart from a malformed payload.
    fn event_types() -> Vec<&'static str>
    where
        Self: DeserializeOwned,
    {
        enum_variants::<Self>()
    }

    /// The upcasters that bring old payloads of these events to their newest schema.
    /// Called once when a [`crate::Repository`] or [`crate::EventCodec`] is built.
    fn upcasters() -> Upcasters {
        Upcasters::new()
    }
}

/// Encodes an externally tagged serde enum: the variant name becomes the event type, the
/// variant's content the payload (`{}` for a unit variant).
pub fn encode_enum<T: Serialize + ?Sized>(event: &T) -> Result<EncodedEvent, EncodeError> {
    let event_type = match variant_name(event) {
        Ok(name) => name,
        Err(NameError(what)) => return Err(EncodeError::NotAnEnum(what)),
    };
    let value = serde_json::to_value(event).map_err(|e| EncodeError::Serialize {
        event_type: event_type.to_owned(),
        reason: e.to_string(),
    })?;
    let data = match value {
        // A unit variant serializes as its name alone.
        Value::String(_) => Value::Object(serde_json::Map::new()),
        Value::Object(mut map) if map.len() == 1 => match map.remove(event_type) {
            Some(data) => data,
            None => {
                return Err(EncodeError::NotAnEnum(
                    "an object whose single key is not the variant name".to_owned(),
                ))
            }
        },
        other => {
            return Err(EncodeError::NotAnEnum(format!(
                "a JSON {} instead of a one-key object",
                json_kind(&other)
            )))
        }
    };
    Ok(EncodedEvent { event_type, data })
}

/// Decodes an externally tagged serde enum from its variant name and payload value.
pub fn decode_enum_value<T: DeserializeOwned>(
    event_type: &str,
    data: Value,
) -> Result<T, serde_json::Error> {
    T::deserialize(Tagged {
        variant: event_type,
        content: data,
    })
}

/// Decodes an externally tagged serde enum from its variant name and payload bytes.
pub fn decode_enum_slice<T: DeserializeOwned>(
    event_type: &str,
    data: &[u8],
) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(data);
    let value = T::deserialize(Tagged {
        variant: event_type,
        content: &mut de,
    })?;
    de.end()?;
    Ok(value)
}

/// The variant names of a serde enum, in declaration order (after `rename`s). Empty when `T`
/// is not an enum.
pub fn enum_variants<T: DeserializeOwned>() -> Vec<&'static str> {
    let mut found = Vec::new();
    let _ = T::deserialize(VariantsProbe { found: &mut found });
    found
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding: a deserializer that presents (variant name, content) as an externally tagged enum.

struct Tagged<'a, D> {
    variant: &'a str,
    content: D,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Tagged<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de, D: Deserializer<'de>> de::EnumAccess<'de> for Tagged<'_, D> {
    type Error = D::Error;
    type Variant = Content<D>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Self::Error> {
        let name: de::value::StrDeserializer<'_, D::Error> = self.variant.into_deserializer();
        let value = seed.deserialize(name)?;
        Ok((value, Content(self.content)))
    }
}

struct Content<D>(D);

impl<'de, D: Deserializer<'de>> de::VariantAccess<'de> for Content<D> {
    type Error = D::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        // Unit variants are stored with `{}`; accept (and ignore) whatever payload is there.
        de::IgnoredAny::deserialize(self.0).map(|_| ())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        seed.deserialize(self.0)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_struct("", fields, visitor)
    }
}

use serde::Deserialize as _;

// ---------------------------------------------------------------------------------------------
// Introspection: the variant names of an enum, from the `deserialize_enum` call.

struct VariantsProbe<'a> {
    found: &'a mut Vec<&'static str>,
}

#[derive(Debug)]
struct ProbeDone;

impl fmt::Display for ProbeDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe")
    }
}
impl std::error::Error for ProbeDone {}
impl de::Error for ProbeDone {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        ProbeDone
    }
}

impl<'de> Deserializer<'de> for VariantsProbe<'_> {
    type Error = ProbeDone;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, ProbeDone> {
        Err(ProbeDone)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, ProbeDone> {
        self.found.extend_from_slice(variants);
        Err(ProbeDone)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding: a serializer that only records the variant name.

/// Records the variant name of an enum value. Struct and tuple variants cannot return a value
/// from `serialize_*_variant` (they return a compound serializer), so the name goes into the
/// slot and serialization stops there with an error that the caller ignores.
struct VariantName<'a>(&'a mut Option<&'static str>);

#[derive(Debug)]
struct NameError(String);

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NameError {}
impl ser::Error for NameError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        NameError(msg.to_string())
    }
}

fn variant_name<T: Serialize + ?Sized>(value: &T) -> Result<&'static str, NameError> {
    let mut slot = None;
    let result = value.serialize(VariantName(&mut slot));
    match slot {
        Some(name) => Ok(name),
        None => Err(result
            .err()
            .unwrap_or_else(|| NameError("no variant".to_owned()))),
    }
}

macro_rules! not_an_enum {
    ($($method:ident($($arg:ty),*) => $what:literal;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<Self::Ok, NameError> {
            Err(NameError($what.to_owned()))
        })*
    };
}

impl ser::Serializer for VariantName<'_> {
    type Ok = ();
    type Error = NameError;
    type SerializeSeq = Impossible<(), NameError>;
    type SerializeTuple = Impossible<(), NameError>;
    type SerializeTupleStruct = Impossible<(), NameError>;
    type SerializeTupleVariant = Impossible<(), NameError>;
    type SerializeMap = Impossible<(), NameError>;
    type SerializeStruct = Impossible<(), NameError>;
    type SerializeStructVariant = Impossible<(), NameError>;

    not_an_enum! {
        serialize_bool(bool) => "a boolean";
        serialize_i8(i8) => "a number";
        serialize_i16(i16) => "a number";
        serialize_i32(i32) => "a number";
        serialize_i64(i64) => "a number";
        serialize_u8(u8) => "a number";
        serialize_u16(u16) => "a number";
        serialize_u32(u32) => "a number";
        serialize_u64(u64) => "a number";
        serialize_f32(f32) => "a number";
        serialize_f64(f64) => "a number";
        serialize_char(char) => "a string";
        serialize_str(&str) => "a string";
        serialize_bytes(&[u8]) => "bytes";
        serialize_none() => "an option";
        serialize_unit() => "a unit";
        serialize_unit_struct(&'static str) => "a unit struct";
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), NameError> {
        Err(NameError("an option".to_owned()))
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), NameError> {
        *self.0 = Some(variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), NameError> {
        // A newtype around an enum is transparent to the codec.
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _value: &T,
    ) -> Result<(), NameError> {
        *self.0 = Some(variant);
        Ok(())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NameError> {
        Err(NameError("a sequence".to_owned()))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NameError> {
        Err(NameError("a tuple".to_owned()))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NameError> {
        Err(NameError("a tuple struct".to_owned()))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, NameError> {
        *self.0 = Some(variant);
        Err(NameError("stop".to_owned()))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NameError> {
        Err(NameError(
            "a map (is the enum `#[serde(tag = ...)]` or `untagged`?)".to_owned(),
        ))
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, NameError> {
        Err(NameError(
            "a struct (is the enum `#[serde(tag = ...)]` or `untagged`?)".to_owned(),
        ))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, NameError> {
        *self.0 = Some(variant);
        Err(NameError("stop".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Shapes {
        Unit,
        Newtype(Inner),
        Tuple(u32, String),
        Struct {
            a: u32,
            #[serde(default)]
            b: Option<String>,
        },
        #[serde(rename = "stable-name.v1")]
        Renamed {
            x: bool,
        },
        Primitive(u64),
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Inner {
        n: i32,
    }

    impl DomainEvent for Shapes {}

    #[test]
    fn every_variant_shape_round_trips() {
        let cases = [
            (Shapes::Unit, "Unit", json!({})),
            (
                Shapes::Newtype(Inner { n: -3 }),
                "Newtype",
                json!({"n": -3}),
            ),
            (Shapes::Tuple(1, "t".into()), "Tuple", json!([1, "t"])),
            (
                Shapes::Struct { a: 1, b: None },
                "Struct",
                json!({"a": 1, "b": null}),
            ),
            (
                Shapes::Renamed { x: true },
                "stable-name.v1",
                json!({"x": true}),
            ),
            (Shapes::Primitive(9), "Primitive", json!(9)),
        ];
        for (event, name, data) in cases {
            let encoded = event.encode().unwrap();
            assert_eq!(encoded.event_type, name);
            assert_eq!(encoded.data, data);
            let bytes = serde_json::to_vec(&data).unwrap();
            assert_eq!(Shapes::decode_json(name, &bytes).unwrap(), event);
            assert_eq!(Shapes::decode_value(name, data).unwrap(), event);
        }
        // Payload fields added later with defaults are tolerated; unit payloads are ignored.
        assert_eq!(
            Shapes::decode_json("Struct", br#"{"a":2}"#).unwrap(),
            Shapes::Struct { a: 2, b: None }
        );
        assert_eq!(Shapes::decode_json("Unit", b"null").unwrap(), Shapes::Unit);
        assert_eq!(
            Shapes::event_types(),
            [
                "Unit",
                "Newtype",
                "Tuple",
                "Struct",
                "stable-name.v1",
                "Primitive"
            ]
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let err = Shapes::decode_json("Nope", b"{}").unwrap_err();
        assert!(err.to_string().starts_with("unknown variant"), "{err}");
        assert!(Shapes::decode_json("Struct", b"{\"a\":1} trailing").is_err());
        assert!(Shapes::decode_json("Struct", b"{\"a\":\"x\"}").is_err());
        assert!(matches!(encode_enum(&5u32), Err(EncodeError::NotAnEnum(_))));
        assert!(enum_variants::<Inner>().is_empty());
        // A newtype struct around an enum is transparent.
        #[derive(Serialize)]
        struct Wrapper(Shapes);
        assert_eq!(
            encode_enum(&Wrapper(Shapes::Unit)).unwrap().event_type,
            "Unit"
        );
        // Internally tagged enums are not supported by the default codec: a clear error.
        #[derive(Serialize)]
        #[serde(tag = "type")]
        enum Tagged {
            A { x: u32 },
        }
        assert!(matches!(
            encode_enum(&Tagged::A { x: 1 }),
            Err(EncodeError::NotAnEnum(_))
        ));
    }
}
