//! Crypto-shredding on the command line: the master key options every command shares,
//! sealing the store a command opens, and `strata forget`, `strata schemas`, `strata keygen`,
//! `strata rotate-master-key`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use strata_core::{EventStore, StreamId};
use strata_shred::{
    rotate_master_key, DirKeys, EncryptionSchema, ForgetOutcome, KeyStorage, Keyring, MasterKey,
    PgKeys, Shredded, SubjectSource, SCHEMAS_STREAM,
};

use crate::cli::Cli;
use crate::output::Printer;

/// Where a local store's subject keys are kept.
pub enum Keys {
    /// The embedded store's `keys/` directory.
    Dir(PathBuf),
    /// Tables beside a PostgreSQL store's events.
    Postgres(strata_postgres::PostgresStore),
}

impl Keys {
    async fn storage(&self) -> Result<Arc<dyn KeyStorage>> {
        Ok(match self {
            Keys::Dir(dir) => {
                // Creates and fsyncs directories: off the runtime's workers.
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || DirKeys::open(dir))
                    .await??
                    .shared()
            }
            Keys::Postgres(pg) => Arc::new(PgKeys::open(pg.pool().clone(), pg.schema()).await?),
        })
    }
}

/// Whether the command line (or the environment) names a master key.
pub fn has_master_key(cli: &Cli) -> bool {
    cli.master_key_file.is_some()
        || cli.master_key_env.is_some()
        || cli.master_key_command.is_some()
}

/// The master key the command line names, if it names one.
pub fn master_key(cli: &Cli) -> Result<Option<MasterKey>> {
    Ok(
        match (
            &cli.master_key_file,
            &cli.master_key_env,
            &cli.master_key_command,
        ) {
            (Some(f), None, None) => Some(MasterKey::from_file(f)?),
            (None, Some(v), None) => Some(MasterKey::from_env(v)?),
            (None, None, Some(c)) => Some(MasterKey::from_command(c)?),
            (None, None, None) => None,
            _ => anyhow::bail!(
                "give one of --master-key-file, --master-key-env and --master-key-command"
            ),
        },
    )
}

/// `store`, sealing personal fields when the command line names a master key. Without one, a
/// store that has encryption schemas is refused: its personal fields would be written in
/// clear text and read sealed; and a PostgreSQL store that has none yet is wrapped all the
/// same, so that a schema another process registers later has this one refuse the events it
/// names. Returns
/// the store to use, and the crypto-shredding over it when there is a key.
pub async fn seal(
    cli: &Cli,
    store: Arc<dyn EventStore>,
    keys: Keys,
) -> Result<(Arc<dyn EventStore>, Option<Shredded>)> {
    let Some(master) = master_key(cli)? else {
        let schemas = StreamId::new(SCHEMAS_STREAM).expect("a valid stream id");
        if store.stream_info(&schemas).await?.exists {
            anyhow::bail!(
                "this store seals personal data with encryption schemas: give its master key \
                 (--master-key-file, --master-key-env or --master-key-command); without it \
                 Strata neither reads nor writes their fields"
            );
        }
        return Ok(match keys {
            // The data directory's lock keeps other processes out: no schema can appear
            // while this one has the store open without a key.
            Keys::Dir(_) => (store, None),
            // Other processes share PostgreSQL: a schema one registers later must still
            // stop this one from writing the events it names in clear.
            Keys::Postgres(_) => (Arc::new(Shredded::keyless(store).await?), None),
        });
    };
    let keyring = Keyring::open(keys.storage().await?, master).await?;
    let shredded = Shredded::open(store, keyring).await?;
    Ok((Arc::new(shredded.clone()), Some(shredded)))
}

#[derive(Args)]
pub struct ForgetArgs {
    /// The data subject's id (a customer id, a user id: what the schemas' subject names).
    subject: String,
}

#[derive(Args)]
pub struct SchemasArgs {
    /// Register (or replace) the schema of this event type; without it, list the schemas.
    #[arg(long, value_name = "EVENT_TYPE")]
    set: Option<String>,
    /// With --set: the JSON pointer of the subject's id in the event's data (`/customerId`).
    #[arg(
        long,
        value_name = "POINTER",
        requires = "set",
        conflicts_with_all = ["subject_metadata_key", "subject_stream"]
    )]
    subject_pointer: Option<String>,
    /// With --set: the metadata key holding the subject's id.
    #[arg(
        long,
        value_name = "KEY",
        requires = "set",
        conflicts_with = "subject_stream"
    )]
    subject_metadata_key: Option<String>,
    /// With --set: the subject's id is the id of the stream the event is appended to
    /// (an aggregate per person, such as `user-42`).
    #[arg(long, requires = "set")]
    subject_stream: bool,
    /// With --set: the JSON pointer of a personal field (repeatable).
    #[arg(long = "field", value_name = "POINTER", requires = "set")]
    fields: Vec<String>,
}

/// The crypto-shredding of the local store the command line opens; a master key is needed.
async fn local(cli: &Cli) -> Result<Shredded> {
    if !has_master_key(cli) {
        anyhow::bail!(
            "forgetting and schemas need the store's master key: give --master-key-file, \
             --master-key-env or --master-key-command (or talk to a server with --server)"
        );
    }
    let (_, shredded) = cli.open_sealed().await?;
    shredded.context("the store was opened without its master key")
}

pub async fn forget(cli: &Cli, a: &ForgetArgs, p: &Printer) -> Result<()> {
    let answer = match &cli.server {
        Some(url) => {
            cli.server_alone()?;
            let a = cli.server_client(url)?.forget_subject(&a.subject).await?;
            let outcome = serde_json::to_value(a.outcome)?;
            (a.subject, outcome, a.subject_ref, a.position)
        }
        None => {
            let r = local(cli).await?.forget(&a.subject).await?;
            let outcome = match r.outcome {
                ForgetOutcome::Forgotten => "forgotten",
                ForgetOutcome::AlreadyForgotten => "alreadyForgotten",
                ForgetOutcome::NeverSeen => "neverSeen",
            };
            (
                a.subject.clone(),
                json!(outcome),
                r.subject_ref,
                r.position.0,
            )
        }
    };
    let (subject, outcome, subject_ref, position) = answer;
    if p.is_json() {
        println!(
            "{}",
            json!({"subject": subject, "outcome": outcome, "subjectRef": subject_ref, "position": position})
        );
    } else {
        let said = match outcome.as_str() {
            Some("alreadyForgotten") => "was already forgotten",
            Some("neverSeen") => "had nothing sealed; marked forgotten",
            _ => "forgotten: their key is destroyed",
        };
        println!(
            "subject {subject} {said} ($subjectForgotten at position {position}, subject ref {subject_ref})"
        );
    }
    Ok(())
}

pub async fn schemas(cli: &Cli, a: &SchemasArgs, p: &Printer) -> Result<()> {
    let set = match &a.set {
        None => None,
        Some(event_type) => {
            let subject = match (
                &a.subject_pointer,
                &a.subject_metadata_key,
                a.subject_stream,
            ) {
                (Some(ptr), None, false) => SubjectSource::Pointer(ptr.clone()),
                (None, Some(key), false) => SubjectSource::MetadataKey(key.clone()),
                (None, None, true) => SubjectSource::Stream {},
                _ => anyhow::bail!(
                    "--set needs where the subject is: --subject-pointer, --subject-metadata-key \
                     or --subject-stream"
                ),
            };
            Some(EncryptionSchema {
                event_type: event_type.clone(),
                subject,
                fields: a.fields.clone(),
            })
        }
    };
    let (schemas, unreadable): (Vec<serde_json::Value>, Vec<String>) = match &cli.server {
        Some(url) => {
            cli.server_alone()?;
            let client = cli.server_client(url)?;
            if let Some(schema) = &set {
                let mut body = serde_json::to_value(schema)?;
                body.as_object_mut().map(|o| o.remove("eventType"));
                client.register_schema(&schema.event_type, &body).await?;
            }
            let all = client.encryption_schemas().await?;
            let unreadable = all["unreadable"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect();
            (
                all["schemas"].as_array().cloned().unwrap_or_default(),
                unreadable,
            )
        }
        None => {
            let shredded = local(cli).await?;
            if let Some(schema) = set {
                schema.validate()?;
                shredded.register(schema).await?;
            }
            let schemas = shredded
                .schemas()
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?;
            (schemas, shredded.unreadable_schemas())
        }
    };
    if p.is_json() {
        let mut answer = json!({ "schemas": schemas });
        if !unreadable.is_empty() {
            answer["unreadable"] = json!(unreadable);
        }
        println!("{answer}");
    } else if schemas.is_empty() && unreadable.is_empty() {
        println!("no encryption schemas");
    } else {
        for t in &unreadable {
            println!(
                "{t}: a schema this version of Strata cannot read (a newer one registered it); \
                 its events are refused here"
            );
        }
        for s in &schemas {
            let subject = match (&s["subject"]["pointer"], &s["subject"]["metadataKey"]) {
                (serde_json::Value::String(ptr), _) => format!("subject at {ptr}"),
                (_, serde_json::Value::String(key)) => format!("subject in metadata {key}"),
                _ if s["subject"].get("stream").is_some() => "subject is the stream".to_owned(),
                _ => "subject unknown".to_owned(),
            };
            let fields: Vec<&str> = s["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .collect();
            println!(
                "{}: {subject}; personal fields {}",
                s["eventType"].as_str().unwrap_or("?"),
                fields.join(", ")
            );
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct RotateArgs {
    /// The new master key, in a file (64 hex digits; `strata keygen` makes one).
    #[arg(long, value_name = "PATH", conflicts_with = "new_master_key_env")]
    new_master_key_file: Option<PathBuf>,
    /// The new master key, in this environment variable.
    #[arg(long, value_name = "VAR")]
    new_master_key_env: Option<String>,
}

/// `strata rotate-master-key`: the local store's subject keys re-wrapped under a new master key.
pub async fn rotate(cli: &Cli, a: &RotateArgs, p: &Printer) -> Result<()> {
    if cli.server.is_some() {
        anyhow::bail!(
            "rotate the master key where the store is (--data or --database-url), with its \
             server stopped: a server holds the key in force"
        );
    }
    let old = master_key(cli)?.context(
        "rotating needs the master key in force: give --master-key-file, --master-key-env or \
         --master-key-command",
    )?;
    let new = match (&a.new_master_key_file, &a.new_master_key_env) {
        (Some(f), None) => MasterKey::from_file(f)?,
        (None, Some(v)) => MasterKey::from_env(v)?,
        _ => {
            anyhow::bail!("give the new master key: --new-master-key-file or --new-master-key-env")
        }
    };
    // The embedded store is opened (and locked) for the rotation's length: no other process
    // creates a key meanwhile.
    let (keys, held) = match &cli.database_url {
        Some(url) => {
            let store = strata_postgres::PostgresStore::connect(url).await?;
            (Keys::Postgres(store), None)
        }
        None => {
            let dir = cli.data_dir();
            let store = crate::cli::open_log(&dir)?;
            (Keys::Dir(dir.join("keys")), Some(store))
        }
    };
    let report = rotate_master_key(keys.storage().await?, &old, &new).await?;
    if p.is_json() {
        println!(
            "{}",
            json!({"rewrapped": report.rewrapped, "already": report.already, "resumed": report.resumed})
        );
    } else {
        println!(
            "master key rotated: {} subject keys re-wrapped{}; only the new master key opens \
             this store now",
            report.rewrapped,
            if report.resumed {
                format!(
                    " (finishing an earlier run, which had re-wrapped {})",
                    report.already
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(store) = held {
        store.close().await?;
    }
    Ok(())
}

/// `strata keygen`: a new random master key.
pub fn keygen() {
    println!("{}", MasterKey::generate_hex());
}
