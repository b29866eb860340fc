//! `strata serve`: the HTTP API on the embedded store or PostgreSQL.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use strata_core::EventStore;

use crate::cli::{open_log, Cli};
use strata_cli::config::{self, Backend, Given};

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML config file (listen, data, database_url, [tls], [limits], [[tokens]]).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The address to listen on [default: 127.0.0.1:2113; also STRATA_LISTEN]. Any address
    /// other than loopback needs API tokens in the config file.
    #[arg(long)]
    listen: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM) [also STRATA_TLS_CERT_FILE].
    #[arg(long)]
    tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert-file [also STRATA_TLS_KEY_FILE].
    #[arg(long)]
    tls_key_file: Option<PathBuf>,
    /// A built-in projection to host (repeatable) [default: event-type-counts; also
    /// STRATA_PROJECTIONS, comma-separated].
    #[arg(long = "projection", value_name = "NAME")]
    projections: Vec<String>,
    /// Host no projections.
    #[arg(long, conflicts_with = "projections")]
    no_projections: bool,
    /// Archive the embedded store's sealed segments (PostgreSQL's final events, in the same
    /// format) to this archive (a directory, or
    /// s3://bucket/prefix configured from the AWS_* environment variables) while serving: a
    /// pass at start, then every --archive-every seconds and on POST /admin/archive.
    #[arg(long, env = "STRATA_ARCHIVE")]
    archive: Option<String>,
    /// Seconds between archive passes (a failed pass is tried again sooner, with a backoff).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400), requires = "archive")]
    archive_every: u64,
    /// After each archive pass, give back the disk of archived segments, keeping this many of
    /// the newest sealed segments local (the others are read from the archive).
    #[arg(long, value_name = "SEGMENTS", requires = "archive")]
    archive_keep_local: Option<u64>,
    /// With the disk given back, also keep local every segment holding an event recorded
    /// less than AGE ago (`90s`, `15m`, `12h`, `30d`).
    #[arg(long, value_name = "AGE", requires = "archive", value_parser = super::archive::parse_age)]
    archive_keep_local_newer_than: Option<std::time::Duration>,
    /// With the disk given back, also keep local every segment holding a position at or
    /// above POSITION.
    #[arg(long, value_name = "POSITION", requires = "archive")]
    archive_keep_local_from: Option<u64>,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub async fn run(cli: &Cli, args: &ServeArgs) -> Result<()> {
    if cli.server.is_some() {
        anyhow::bail!("serve runs a server: --server is for the client commands");
    }
    let given = Given {
        config_file: args.config.clone(),
        listen: args.listen.clone(),
        data: cli.data.clone(),
        database_url: cli.database_url.clone(),
        tls_cert_file: args.tls_cert_file.clone(),
        tls_key_file: args.tls_key_file.clone(),
        projections: if args.no_projections {
            Some(Vec::new())
        } else if args.projections.is_empty() {
            None
        } else {
            Some(args.projections.clone())
        },
    };
    let resolved = match config::resolve(&given, &|k| std::env::var(k).ok()) {
        Ok(r) => r,
        Err(errors) => {
            let n = errors.len();
            let list: Vec<String> = errors.into_iter().map(|e| format!("  - {e}")).collect();
            anyhow::bail!(
                "the configuration has {n} problem{}:\n{}",
                if n == 1 { "" } else { "s" },
                list.join("\n")
            );
        }
    };
    if let Some(tls) = &resolved.tls {
        strata_server::check_tls(tls).await?;
    }
    if !resolved.listen.ip().is_loopback() && resolved.tls.is_none() {
        tracing::warn!(
            "listening on {} without TLS: tokens and events cross the network in clear text",
            resolved.listen
        );
    }
    // Bind before opening anything: a server that cannot listen leaves no data directory or
    // read-model file behind.
    let listener = std::net::TcpListener::bind(resolved.listen).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                " (a Strata server may be running there already: talk to it with --server \
                 http://{}, or give this one another --listen address)",
                resolved.listen
            )
        } else {
            String::new()
        };
        anyhow::Error::new(e).context(format!("cannot listen on {}{hint}", resolved.listen))
    })?;
    // The embedded store, to close when the server stops.
    let mut log = None;
    let mut postgres = None;
    let (store, what, keys): (Arc<dyn EventStore>, String, _) = match &resolved.backend {
        Backend::Embedded(dir) => {
            let store = open_log(dir)?;
            log = Some(store.clone());
            (
                Arc::new(store),
                format!("the embedded store in {}", dir.display()),
                super::subjects::Keys::Dir(dir.join("keys")),
            )
        }
        Backend::Postgres(url) => {
            let store = strata_postgres::PostgresStore::connect(url).await?;
            postgres = Some(store.clone());
            (
                Arc::new(store.clone()),
                "PostgreSQL".to_owned(),
                super::subjects::Keys::Postgres(store),
            )
        }
    };
    // Personal fields sealed per subject with a master key; refused without one when the
    // store has encryption schemas.
    let (store, shredding) = super::subjects::seal(cli, store, keys).await?;
    let auth = if resolved.server.auth_enabled() {
        format!("{} API token(s)", resolved.server.tokens.len())
    } else {
        "no authentication (loopback only)".to_owned()
    };
    let hosted = super::projections::Hosted::start(
        &resolved.backend,
        Arc::clone(&store),
        &resolved.projections,
    )
    .await?;
    let mut state = strata_server::AppState::new(store, resolved.server.clone())?;
    if let Some(h) = &hosted {
        state = state.with_projections(h.control());
    }
    let sealing = match shredding {
        Some(shredded) => {
            state = state.with_shredding(shredded);
            ", sealing personal data"
        }
        None => "",
    };
    if let Some(url) = &args.archive {
        let keep_local = super::archive::keep_local(
            args.archive_keep_local,
            args.archive_keep_local_newer_than,
            args.archive_keep_local_from,
        );
        let source = match (&log, postgres) {
            (Some(log), _) => super::archive::Archived::Embedded {
                store: log.clone(),
                keep_local,
            },
            (None, Some(_)) if keep_local.is_some() => anyhow::bail!(
                "--archive-keep-local* give back the embedded store's disk: they do not work with --database-url"
            ),
            (None, Some(pg)) => super::archive::Archived::Postgres(pg),
            (None, None) => unreachable!("the store is embedded or PostgreSQL"),
        };
        let archiver = super::archive::StoreArchiver::new(source, url)?;
        state = state.with_archiver(
            Arc::new(archiver),
            std::time::Duration::from_secs(args.archive_every),
        );
    }
    let addr = listener.local_addr()?;
    let scheme = if resolved.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // One line on stdout that scripts (and the end-to-end test) wait for.
    let hosting = if resolved.projections.is_empty() {
        String::new()
    } else {
        format!(", hosting projections {}", resolved.projections.join(", "))
    };
    println!("strata: serving {what} on {scheme}://{addr} with {auth}{hosting}{sealing}");
    tracing::info!(%addr, "serving");
    strata_server::serve(
        listener,
        state.clone(),
        strata_server::app(state),
        resolved.tls,
        shutdown_signal(),
    )
    .await?;
    if let Some(h) = hosted {
        h.shutdown().await;
    }
    if let Some(log) = log {
        // Queued appends finish and the index file is written, off the runtime's workers.
        log.close().await?;
    }
    tracing::info!("stopped");
    Ok(())
}
