//! The command line: the options every command shares, the list of commands, and opening the
//! store the client commands work on. Each command's own arguments live with it, under
//! `commands/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use strata_cli::config;
use strata_core::EventStore;
use strata_log::LogStore;

use crate::commands::{
    append, bench, info, lifecycle, projections, read, serve, streams, subjects, tail, token,
    verify,
};

/// Strata: an event store and event-sourcing toolkit.
#[derive(Parser)]
#[command(name = "strata", version, about, long_about = None)]
pub struct Cli {
    /// The data directory of the embedded store [default: ./strata-data].
    #[arg(long, global = true, env = "STRATA_DATA")]
    pub data: Option<PathBuf>,
    /// Use PostgreSQL at this URL instead of the embedded store
    /// (postgres://user[:password]@host[:port]/database).
    #[arg(
        long,
        global = true,
        env = "STRATA_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Talk to a running Strata server instead of opening a store (http://127.0.0.1:2113).
    #[arg(long, global = true, env = "STRATA_SERVER")]
    pub server: Option<String>,
    /// The API token for --server.
    #[arg(long, global = true, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A CA certificate (PEM) to trust for an https --server with a private certificate.
    #[arg(long, global = true, env = "STRATA_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Print JSON (one document per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The master key of crypto-shredding, in a file (64 hex digits; `strata keygen` makes
    /// one): personal fields of events are sealed per data subject (docs/gdpr.md). A store
    /// with encryption schemas does not open without it.
    #[arg(long, global = true, env = "STRATA_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// The master key, from this environment variable (64 hex digits).
    #[arg(long, global = true, value_name = "VARIABLE")]
    pub master_key_env: Option<String>,
    /// The master key, printed by this command (run with `sh -c`; a secrets manager's CLI).
    #[arg(
        long,
        global = true,
        env = "STRATA_MASTER_KEY_COMMAND",
        value_name = "COMMAND"
    )]
    pub master_key_command: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the HTTP API (and live subscriptions) on the store.
    Serve(serve::ServeArgs),
    /// A scripted tour of Strata on the mission's bank account.
    Tour,
    /// Append one event to a stream.
    Append(append::AppendArgs),
    /// Read a stream, or `$all`.
    Read(read::ReadArgs),
    /// Follow a stream or `$all` as events are appended (Ctrl-C to stop).
    Tail(tail::TailArgs),
    /// List streams (or categories) with their event counts.
    Streams(streams::StreamsArgs),
    /// Show what is known about one stream.
    Info(info::InfoArgs),
    /// Delete a stream: soft (appending again re-creates it), or --tombstone for good.
    Delete(lifecycle::DeleteArgs),
    /// Hide a stream's events below a version.
    Truncate(lifecycle::TruncateArgs),
    /// Show a stream's metadata, or replace it with --set.
    Meta(lifecycle::MetaArgs),
    /// Remove for good the events deleted, truncated, tombstoned and expired streams hide
    /// (PostgreSQL, or --server as an admin); readers see no difference.
    Scavenge,
    /// Check every record of the data directory (CRC, positions, versions) and that every
    /// event the index file records as acknowledged is there; or, with --archive, an archive.
    /// Exits 2 when data is damaged or missing.
    Verify(crate::commands::archive::VerifyArgs),
    /// Copy the embedded store's sealed segments that the archive does not hold yet to an
    /// archive (a directory, or S3): a continuous off-site copy of everything sealed.
    Archive(crate::commands::archive::ArchiveArgs),
    /// Make a new (or empty) --data directory from an archive: the store as archived.
    Restore(crate::commands::archive::RestoreArgs),
    /// Open a data directory whose newest acknowledged events are missing (a segment file cut
    /// short, zeroed or deleted), cutting the log where it is whole and saying exactly what was
    /// lost. Without --accept-data-loss it only reports what it would cut.
    Repair(verify::RepairArgs),
    /// List, pause, resume, reset or rebuild projections (on a server with --server).
    Projections {
        #[command(subcommand)]
        command: Option<projections::ProjectionsCommand>,
    },
    /// Manage API tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Forget a data subject: their key is destroyed, so every field sealed for them reads as
    /// null from now on, and `$subjectForgotten` is appended for projections (docs/gdpr.md).
    Forget(subjects::ForgetArgs),
    /// List the encryption schemas, or register one with --set.
    Schemas(subjects::SchemasArgs),
    /// Print a new random master key (64 hex digits) for --master-key-file.
    Keygen,
    /// Rotate the master key: the store's subject keys are re-wrapped under a new one, and
    /// only the new one opens the store afterwards. Give the key in force the usual way
    /// (--master-key-file, ...) and the new one here. Run it with the store's other processes
    /// stopped; run it again to finish a rotation that stopped part way.
    RotateMasterKey(subjects::RotateArgs),
    /// The benchmarks are the `strata-bench` program now; this only says how to run them.
    #[command(hide = true)]
    Bench(bench::BenchArgs),
    /// Was the open measurement of `bench --large`; says where it went.
    #[command(hide = true)]
    BenchOpen,
}

/// Opens the embedded store in `dir`; segments of it that live only in an archive are read
/// from the archive their stubs name.
pub fn open_log(dir: &Path) -> Result<LogStore> {
    let opened = strata_archive::open_store(dir, strata_log::LogConfig::default());
    store_error(opened).with_context(|| format!("cannot open {}", dir.display()))
}

/// An archive operation's error, with a store's own open error kept as one (the exit code and
/// hints look for it).
pub fn store_error<T>(r: Result<T, strata_archive::ArchiveError>) -> Result<T> {
    r.map_err(|e| match e {
        strata_archive::ArchiveError::Open(e) => anyhow::Error::new(e),
        e => anyhow::Error::new(e),
    })
}

impl Cli {
    /// The embedded store's data directory: --data, or the default.
    pub fn data_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA))
    }

    /// A client of the server at `url`, with the token and CA certificate of the command line.
    pub fn server_client(&self, url: &str) -> Result<strata_client::Client> {
        let mut b = strata_client::Client::builder(url);
        if let Some(token) = &self.token {
            b = b.token(token);
        }
        if let Some(ca) = &self.ca_cert {
            b = b.ca_cert(ca);
        }
        Ok(b.build()?)
    }

    /// Fails when --server is given with --data or --database-url, which it would ignore.
    pub fn server_alone(&self) -> Result<()> {
        if self.database_url.is_some() || self.data.is_some() {
            anyhow::bail!(
                "--server talks to a running server: do not give --data or --database-url with it"
            );
        }
        Ok(())
    }

    /// The store the client commands work on: a server, PostgreSQL, or the embedded log.
    pub async fn open(&self) -> Result<Arc<dyn EventStore>> {
        if let Some(url) = &self.server {
            // A master key given (or exported) is not used: the server seals with its own.
            self.server_alone()?;
            return Ok(Arc::new(self.server_client(url)?));
        }
        Ok(self.open_sealed().await?.0)
    }

    /// The local store (PostgreSQL or the embedded log), sealing personal fields when a
    /// master key is given (see [`subjects::seal`]), and the crypto-shredding over it.
    pub async fn open_sealed(
        &self,
    ) -> Result<(Arc<dyn EventStore>, Option<strata_shred::Shredded>)> {
        if let Some(url) = &self.database_url {
            if self.data.is_some() {
                anyhow::bail!("give --data or --database-url, not both");
            }
            let store = strata_postgres::PostgresStore::connect(url).await?;
            return subjects::seal(
                self,
                Arc::new(store.clone()),
                subjects::Keys::Postgres(store),
            )
            .await;
        }
        let dir = self.data_dir();
        let store = open_log(&dir)?;
        subjects::seal(self, Arc::new(store), subjects::Keys::Dir(dir.join("keys"))).await
    }

    /// Where the store is, for people.
    pub fn location(&self) -> String {
        match (&self.server, &self.database_url) {
            (Some(url), _) => format!("the server at {url}"),
            (None, Some(_)) => "PostgreSQL".to_owned(),
            (None, None) => self.data_dir().display().to_string(),
        }
    }
}
