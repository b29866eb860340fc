//! A user profile whose events evolved from schema v1 to v2, on Strata's embedded store.
//!
//! Run it with `cargo run --release -p strata-examples --example users` (optionally followed by a directory to
//! keep the data in; by default a temporary directory is used).
//!
//! The store is first seeded with events exactly as version 1 of the application wrote them
//! (`UserCreated { name }`). The current code only knows `UserCreated { firstName, lastName }`;
//! the upcaster in `domain.rs` bridges the two on every read. Names and emails are personal
//! data, sealed under a key per user; the example ends by forgetting one user. Set
//! `USERS_MASTER_KEY` (64 hex digits, `strata keygen`) to reopen a directory of your own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod domain;

use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use domain::{User, UserCommand, UserEvent};
use serde_json::json;
use strata::{
    CommandEnvelope, EventData, EventStore, ExecuteError, ExpectedVersion, Metadata,
    ReadAllOptions, ReadStreamOptions, Repository, StreamId, SCHEMA_VERSION_KEY,
};
use strata_log::LogStore;
use strata_shred::{DirKeys, Keyring, MasterKey, PersonalData, Shredded};

/// The embedded store in `dir`, and the same store sealing personal data (keys in
/// `dir/keys`, wrapped by the master key from `USERS_MASTER_KEY` or one made for the run).
pub async fn open(dir: &Path) -> Result<(LogStore, Shredded), Box<dyn Error>> {
    let master = match std::env::var_os("USERS_MASTER_KEY") {
        Some(_) => MasterKey::from_env("USERS_MASTER_KEY")?,
        None => MasterKey::from_hex(&MasterKey::generate_hex(), "a key made for this run")?,
    };
    let store = LogStore::open(dir)?;
    let keys = Keyring::open(DirKeys::open(dir.join("keys"))?.shared(), master).await?;
    let sealed = Shredded::open(Arc::new(store.clone()), keys)
        .await?
        .with_snapshots(Arc::new(store.clone()));
    Ok((store, sealed))
}

/// Registers today's schemas. `UserCreated`'s personal fields changed with its shape (`/name`
/// became `/firstName` and `/lastName`), which `register_personal_data` refuses to do on its
/// own (it never stops sealing a field): the new schema replaces the old one deliberately.
pub async fn register_v2(sealed: &Shredded) -> Result<(), Box<dyn Error>> {
    let in_force = sealed.schemas();
    for schema in UserEvent::personal_data() {
        if !in_force.contains(&schema) {
            sealed.register(schema).await?;
        }
    }
    Ok(())
}

/// Seeds `user-1` to `user-3` as version 1 of the application wrote them: its schemas
/// (`UserCreated`'s one name field sealed), then its events, each at its newest schema then.
pub async fn seed_v1(sealed: &Shredded) -> Result<Vec<(String, EventData)>, Box<dyn Error>> {
    sealed
        .register(domain::user_created_v1_personal_data())
        .await?;
    for schema in UserEvent::personal_data() {
        if schema.event_type == "EmailChanged" {
            sealed.register(schema).await?;
        }
    }
    let v1 = [
        ("user-1", "UserCreated", json!({"name": "John Doe"})),
        (
            "user-1",
            "EmailChanged",
            json!({"email": "john@example.com"}),
        ),
        ("user-2", "UserCreated", json!({"name": "Ada"})),
        (
            "user-3",
            "UserCreated",
            json!({"name": "Grace Brewster Hopper"}),
        ),
    ];
    let mut seeded = Vec::new();
    for (stream, event_type, data) in v1 {
        let event = EventData::json(event_type, &data)?;
        sealed
            .append(
                &StreamId::new(stream)?,
                ExpectedVersion::Any,
                vec![event.clone()],
            )
            .await?;
        seeded.push((stream.to_owned(), event));
    }
    Ok(seeded)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let temp = strata_examples::ScratchDir::new("users")?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    println!("Strata users example: an event schema that evolved, read through an upcaster");
    println!("Data directory: {}\n", dir.display());
    let (store, sealed) = open(&dir).await?;

    println!("1. Version 1 of the application recorded users like this (seeded directly):");
    // A directory of an earlier run (given with USERS_MASTER_KEY) is seeded already.
    let seeded = sealed.stream_info(&StreamId::new("user-1")?).await?.exists;
    let seeds = if seeded {
        Vec::new()
    } else {
        seed_v1(&sealed).await?
    };
    if seeded {
        println!("   (seeded by an earlier run)");
    }
    for (stream, event) in seeds {
        println!(
            "   {stream}: {} {}   (no schemaVersion: version 1)",
            event.event_type,
            String::from_utf8_lossy(&event.data)
        );
    }
    println!("   Names and emails were sealed under each user's key (the user's stream).");
    println!();

    println!("2. Today's code registers its own personal fields (v2's names), then loads them;");
    println!("   each value is opened, then the upcaster turns each v1 UserCreated into v2:");
    register_v2(&sealed).await?;
    let users = Repository::<User, _>::new(sealed.clone());
    for id in ["1", "2", "3"] {
        let user = users.load(id).await?;
        println!(
            "   user-{id}: first name {:?}, last name {:?}, email {}",
            user.first_name,
            user.last_name,
            user.email.as_deref().unwrap_or("-")
        );
    }
    println!();

    println!(
        "3. New events are written at their type's newest schema (UserCreated is at v2 now; \
         the version goes in the metadata):"
    );
    run(
        &users,
        "4",
        UserCommand::Create {
            first_name: "Barbara".into(),
            last_name: "Liskov".into(),
        },
    )
    .await?;
    run(
        &users,
        "2",
        UserCommand::Rename {
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
        },
    )
    .await?;
    run(
        &users,
        "2",
        UserCommand::ChangeEmail {
            email: "not-an-address".into(),
        },
    )
    .await?;
    run(
        &users,
        "1",
        UserCommand::Create {
            first_name: "John".into(),
            last_name: "Again".into(),
        },
    )
    .await?;
    println!();

    println!(
        "4. The log as stored: old events were never rewritten; v1 and v2 live side by side \
         (personal fields sealed)."
    );
    let all = store.read_all(ReadAllOptions::forward().limit(100)).await?;
    for e in &all.events {
        let version = e
            .metadata
            .get(SCHEMA_VERSION_KEY)
            .map_or_else(|| "1 (absent)".to_owned(), |v| v.to_string());
        println!(
            "   position {} | {:<7} {:<13} schema v{:<11} {}",
            e.position,
            e.stream_id,
            e.event_type,
            version,
            String::from_utf8_lossy(&e.data)
        );
    }
    println!();

    println!("5. A projection reading raw events asks the upcasters too, and sees only v2:");
    let upcasters = domain::upcasters();
    let opened = sealed
        .read_all(ReadAllOptions::forward().limit(100))
        .await?;
    for e in opened
        .events
        .iter()
        .filter(|e| e.event_type == "UserCreated")
    {
        match upcasters.upcast_recorded(e) {
            Ok(newest) => println!(
                "   {:<7} UserCreated {}",
                newest.stream_id,
                String::from_utf8_lossy(&newest.data)
            ),
            // An earlier run's v3 event (section 6).
            Err(err) => println!("   {:<7} UserCreated: {err}", e.stream_id),
        }
    }
    println!();

    println!("6. An event this code cannot read (written by a future v3) is a clear error:");
    // Version 3 keeps v2's fields (sealed as today) and adds middle names.
    sealed
        .append(
            &StreamId::new("user-5")?,
            ExpectedVersion::Any,
            vec![EventData::json(
                "UserCreated",
                &json!({"firstName": "Edsger", "lastName": "Dijkstra", "middleNames": ["Wybe"]}),
            )?
            .with_metadata(Metadata::new().with(SCHEMA_VERSION_KEY, json!(3)))],
        )
        .await?;
    match users.load("5").await {
        Ok(user) => println!("   unexpectedly loaded {:?}", user.state),
        Err(e) => println!("   loading user-5 failed: {e}"),
    }

    println!("\n7. Forgetting user-1 (GDPR): their key is destroyed; the events stay.");
    sealed.forget("user-1").await?;
    let fresh = Repository::<User, _>::new(sealed.clone());
    let john = fresh.load("1").await?;
    println!(
        "   user-1 now: first name {:?}, last name {:?}, email {:?} (version {})",
        john.first_name,
        john.last_name,
        john.email.as_deref().unwrap_or("-"),
        john.version.map_or("none".to_owned(), |v| v.to_string())
    );
    let events = sealed
        .read_stream(&StreamId::new("user-1")?, ReadStreamOptions::forward())
        .await?;
    let first = upcasters.upcast_recorded(&events[0])?;
    println!(
        "   its v1 UserCreated, opened and upcast: {} (forgotten fields {})",
        String::from_utf8_lossy(&first.data),
        events[0]
            .metadata
            .get(strata_shred::FORGOTTEN_METADATA_KEY)
            .map_or_else(|| "-".to_owned(), |v| v.to_string())
    );
    println!("\nDone.");
    Ok(())
}

/// Executes one command and says what happened.
async fn run(
    users: &Repository<User, Shredded>,
    id: &str,
    command: UserCommand,
) -> Result<(), Box<dyn Error>> {
    let described = format!("{command:?}");
    match users.execute(id, CommandEnvelope::new(command)).await {
        Ok(done) => {
            for data in done
                .events
                .iter()
                .map(|e| users.codec().encode(e))
                .collect::<Result<Vec<_>, _>>()?
            {
                println!(
                    "   user-{id}: {described} -> {} {} (schema v{})",
                    data.event_type,
                    String::from_utf8_lossy(&data.data),
                    strata::schema_version_of(&data.metadata)?
                );
            }
            Ok(())
        }
        Err(ExecuteError::Rejected(reason)) => {
            println!("   user-{id}: {described} -> refused: {reason}");
            Ok(())
        }
        Err(other) => Err(other.into()),
    }
}
