//! A user profile whose event schema evolved — the mission's versioning example.
//!
//! Version 1 of this application recorded `UserCreated { name }`. Version 2 splits the name:
//! `UserCreated { firstName, lastName }`. Old events are never rewritten (the store is
//! append-only); instead the upcaster below turns a v1 payload into a v2 payload whenever
//! one is read, so the code only ever sees the newest shape.
//!
//! Names and emails are personal data, sealed under a key per user (the user's stream is the
//! subject: [`PersonalData`]). They are opened before the upcaster runs; once a user is
//! forgotten they read as `null`, which the upcaster passes on and the events read as empty.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use strata::{Aggregate, DomainEvent, Upcasters};
use strata_shred::{EncryptionSchema, PersonalData, SubjectSource};

/// The state rebuilt from the events.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub exists: bool,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
}

/// What happened to a user, at the newest schema of each event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    /// Schema version 2. (Version 1 was `{ "name": "John Doe" }`.)
    #[serde(rename_all = "camelCase")]
    UserCreated {
        #[serde(deserialize_with = "strata_shred::forgotten_as_default")]
        first_name: String,
        #[serde(deserialize_with = "strata_shred::forgotten_as_default")]
        last_name: String,
    },
    #[serde(rename_all = "camelCase")]
    UserRenamed {
        #[serde(deserialize_with = "strata_shred::forgotten_as_default")]
        first_name: String,
        #[serde(deserialize_with = "strata_shred::forgotten_as_default")]
        last_name: String,
    },
    EmailChanged {
        #[serde(deserialize_with = "strata_shred::forgotten_as_default")]
        email: String,
    },
}

/// The personal fields of each event type at its newest schema, sealed under the user's key
/// (the user's stream names the subject).
impl PersonalData for UserEvent {
    fn personal_data() -> Vec<EncryptionSchema> {
        let names = |event_type| {
            EncryptionSchema::new(event_type, SubjectSource::Stream {})
                .field("/firstName")
                .field("/lastName")
        };
        vec![
            names("UserCreated"),
            names("UserRenamed"),
            EncryptionSchema::new("EmailChanged", SubjectSource::Stream {}).field("/email"),
        ]
    }
}

/// The schema version 1 of the application registered for `UserCreated`: its one name field.
pub fn user_created_v1_personal_data() -> EncryptionSchema {
    EncryptionSchema::new("UserCreated", SubjectSource::Stream {}).field("/name")
}

impl DomainEvent for UserEvent {
    fn upcasters() -> Upcasters {
        upcasters()
    }
}

/// The upcasters of the user events: `UserCreated` v1 → v2.
pub fn upcasters() -> Upcasters {
    Upcasters::new().register("UserCreated", 1, user_created_v1_to_v2)
}

/// The mission's upcaster: `{ "name": "John Doe" }` → `{ "firstName": "John", "lastName":
/// "Doe" }`. The first word is the first name; the rest (possibly empty) is the last name. A
/// forgotten user's name (`null`) stays forgotten: both parts `null`.
pub fn user_created_v1_to_v2(v1: Value) -> Result<Value, String> {
    if v1.get("name") == Some(&Value::Null) {
        return Ok(json!({ "firstName": null, "lastName": null }));
    }
    let name = v1
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("UserCreated v1 needs a string `name`; got {v1}"))?;
    let mut parts = name.split_whitespace();
    let first = parts.next().unwrap_or("");
    let last = parts.collect::<Vec<_>>().join(" ");
    Ok(json!({ "firstName": first, "lastName": last }))
}

/// What can be asked.
#[derive(Debug, Clone)]
pub enum UserCommand {
    Create {
        first_name: String,
        last_name: String,
    },
    Rename {
        first_name: String,
        last_name: String,
    },
    ChangeEmail {
        email: String,
    },
}

/// Why a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the user already exists")]
    AlreadyExists,
    #[error("the user does not exist")]
    NotFound,
    #[error("a first name is required")]
    NoFirstName,
    #[error("{0:?} is not an email address")]
    InvalidEmail(String),
}

impl Aggregate for User {
    type Event = UserEvent;
    type Command = UserCommand;
    type Error = UserError;
    const CATEGORY: &'static str = "user";

    fn handle(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        match command {
            UserCommand::Create {
                first_name,
                last_name,
            } => {
                if self.exists {
                    return Err(UserError::AlreadyExists);
                }
                if first_name.trim().is_empty() {
                    return Err(UserError::NoFirstName);
                }
                Ok(vec![UserEvent::UserCreated {
                    first_name,
                    last_name,
                }])
            }
            _ if !self.exists => Err(UserError::NotFound),
            UserCommand::Rename {
                first_name,
                last_name,
            } => {
                if first_name.trim().is_empty() {
                    return Err(UserError::NoFirstName);
                }
                if first_name == self.first_name && last_name == self.last_name {
                    return Ok(vec![]);
                }
                Ok(vec![UserEvent::UserRenamed {
                    first_name,
                    last_name,
                }])
            }
            UserCommand::ChangeEmail { email } => {
                let valid = email
                    .split_once('@')
                    .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'));
                if !valid {
                    return Err(UserError::InvalidEmail(email));
                }
                Ok(vec![UserEvent::EmailChanged { email }])
            }
        }
    }

    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::UserCreated {
                first_name,
                last_name,
            }
            | UserEvent::UserRenamed {
                first_name,
                last_name,
            } => {
                self.exists = true;
                self.first_name = first_name.clone();
                self.last_name = last_name.clone();
            }
            // A forgotten email reads as empty: no email.
            UserEvent::EmailChanged { email } => {
                self.email = Some(email.clone()).filter(|e| !e.is_empty())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use strata::testing::AggregateTest;
    use strata::{
        DecodeErrorKind, EventData, EventStore, ExpectedVersion, LoadError, Metadata,
        ReadStreamOptions, Repository, StreamId, UpcastError,
    };

    use super::*;

    #[test]
    fn the_missions_upcaster() {
        assert_eq!(
            user_created_v1_to_v2(json!({"name": "John Doe"})).unwrap(),
            json!({"firstName": "John", "lastName": "Doe"})
        );
        assert_eq!(
            user_created_v1_to_v2(json!({"name": "Ada"})).unwrap(),
            json!({"firstName": "Ada", "lastName": ""})
        );
        assert_eq!(
            user_created_v1_to_v2(json!({"name": "  Mary  Ann Smith "})).unwrap(),
            json!({"firstName": "Mary", "lastName": "Ann Smith"})
        );
        assert!(user_created_v1_to_v2(json!({"fullName": "x"})).is_err());
        assert_eq!(
            user_created_v1_to_v2(json!({"name": null})).unwrap(),
            json!({"firstName": null, "lastName": null}),
            "a forgotten name stays forgotten"
        );
        assert_eq!(upcasters().current_version("UserCreated"), 2);
        assert_eq!(upcasters().current_version("EmailChanged"), 1);
    }

    #[test]
    fn a_user_given_as_v1_events_behaves_like_a_v2_user() {
        let user = AggregateTest::<User>::new()
            .and_stored("UserCreated", 1, json!({"name": "John Doe"}))
            .when(UserCommand::Rename {
                first_name: "John".into(),
                last_name: "Smith".into(),
            })
            .then_expect_events([UserEvent::UserRenamed {
                first_name: "John".into(),
                last_name: "Smith".into(),
            }]);
        assert_eq!(user.last_name, "Smith");
        AggregateTest::<User>::new()
            .and_stored("UserCreated", 1, json!({"name": "John Doe"}))
            .when(UserCommand::Rename {
                first_name: "John".into(),
                last_name: "Doe".into(),
            })
            .then_expect_no_events();
    }

    #[test]
    fn rules() {
        AggregateTest::<User>::new()
            .when(UserCommand::ChangeEmail {
                email: "a@b.c".into(),
            })
            .then_expect_error(UserError::NotFound);
        AggregateTest::<User>::given([UserEvent::UserCreated {
            first_name: "A".into(),
            last_name: "".into(),
        }])
        .when(UserCommand::ChangeEmail {
            email: "nope".into(),
        })
        .then_expect_error(UserError::InvalidEmail("nope".into()));
        AggregateTest::<User>::new()
            .when(UserCommand::Create {
                first_name: " ".into(),
                last_name: "X".into(),
            })
            .then_expect_error(UserError::NoFirstName);
    }

    #[tokio::test]
    async fn a_store_seeded_with_v1_events_loads_through_the_upcaster() {
        let dir = strata_examples::ScratchDir::new("users").unwrap();
        let store = strata_log::LogStore::open(dir.path()).unwrap();
        let stream = StreamId::new("user-1").unwrap();
        // What version 1 of the application wrote: no schema version in the metadata.
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![
                    EventData::json("UserCreated", &json!({"name": "John Doe"})).unwrap(),
                    EventData::json("EmailChanged", &json!({"email": "john@example.com"})).unwrap(),
                ],
            )
            .await
            .unwrap();
        let users = Repository::<User, _>::new(store.clone());
        let john = users.load("1").await.unwrap();
        assert_eq!(
            (john.first_name.as_str(), john.last_name.as_str()),
            ("John", "Doe")
        );
        assert_eq!(john.email.as_deref(), Some("john@example.com"));

        // New events are written at the newest schema, with the version in the metadata.
        users
            .execute(
                "2",
                UserCommand::Create {
                    first_name: "Ada".into(),
                    last_name: "Lovelace".into(),
                },
            )
            .await
            .unwrap();
        let raw = store
            .read_stream(
                &StreamId::new("user-2").unwrap(),
                ReadStreamOptions::forward(),
            )
            .await
            .unwrap();
        assert_eq!(raw[0].metadata.get("schemaVersion"), Some(&json!(2)));
        assert_eq!(
            raw[0].data_json(),
            Some(json!({"firstName": "Ada", "lastName": "Lovelace"}))
        );
        assert_eq!(
            users.load("2").await.unwrap().last_name,
            "Lovelace",
            "a v2 event is not upcast again"
        );

        // The raw-read helper gives projections the newest shape too.
        let old = store
            .read_stream(&stream, ReadStreamOptions::forward())
            .await
            .unwrap();
        let up = upcasters().upcast_recorded(&old[0]).unwrap();
        assert_eq!(
            up.data_json(),
            Some(json!({"firstName": "John", "lastName": "Doe"}))
        );

        // An event from a newer version of the application is a typed error, not a panic.
        store
            .append(
                &StreamId::new("user-9").unwrap(),
                ExpectedVersion::NoStream,
                vec![EventData::json("UserCreated", &json!({"given": "X"}))
                    .unwrap()
                    .with_metadata(Metadata::new().with("schemaVersion", json!(3)))],
            )
            .await
            .unwrap();
        let err = users.load("9").await.unwrap_err();
        let LoadError::Decode(d) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (d.stream.as_str(), d.version, d.event_type.as_str()),
            ("user-9", 0, "UserCreated")
        );
        assert_eq!(
            d.kind,
            DecodeErrorKind::Upcast(UpcastError::TooNew {
                stored: 3,
                latest: 2
            })
        );
    }

    /// Names sealed by version 1 of the application are opened before the upcaster runs; once
    /// the user is forgotten, the upcaster passes the `null` on, the user loads with empty
    /// names, and no byte of the data directory holds the name.
    #[tokio::test]
    async fn a_forgotten_user_goes_through_the_upcaster_as_null() {
        let dir = strata_examples::ScratchDir::new("users-forget").unwrap();
        let (_, sealed) = crate::open(dir.path()).await.unwrap();
        crate::seed_v1(&sealed).await.unwrap();
        // Today's schemas weaken v1's (`/name` is no longer sealed): refused unless replaced
        // deliberately.
        assert!(sealed.register_personal_data::<UserEvent>().await.is_err());
        crate::register_v2(&sealed).await.unwrap();
        assert_eq!(
            sealed.register_personal_data::<UserEvent>().await.unwrap(),
            0
        );
        let holding = || {
            let mut files = strata_testkit::harness::files_holding(dir.path(), b"Brewster");
            files.extend(strata_testkit::harness::files_holding(dir.path(), b"john@"));
            files
        };
        assert_eq!(holding(), Vec::<std::path::PathBuf>::new(), "sealed");
        let users = || Repository::<User, _>::new(sealed.clone());
        let grace = users().load("3").await.unwrap();
        assert_eq!(
            (grace.first_name.as_str(), grace.last_name.as_str()),
            ("Grace", "Brewster Hopper")
        );

        sealed.forget("user-3").await.unwrap();
        let grace = users().load("3").await.unwrap();
        assert!(grace.exists, "the events still happened");
        assert_eq!(
            (grace.first_name.as_str(), grace.last_name.as_str()),
            ("", "")
        );
        let stream = StreamId::new("user-3").unwrap();
        let stored = sealed
            .read_stream(&stream, ReadStreamOptions::forward())
            .await
            .unwrap();
        assert_eq!(
            upcasters().upcast_recorded(&stored[0]).unwrap().data_json(),
            Some(json!({"firstName": null, "lastName": null}))
        );
        assert_eq!(holding(), Vec::<std::path::PathBuf>::new());
        // Another user is untouched; then forgotten, their email too.
        let john = users().load("1").await.unwrap();
        assert_eq!(
            (john.last_name.as_str(), john.email.as_deref()),
            ("Doe", Some("john@example.com"))
        );
        sealed.forget("user-1").await.unwrap();
        let john = users().load("1").await.unwrap();
        assert_eq!((john.first_name.as_str(), john.email.clone()), ("", None));
    }
}
