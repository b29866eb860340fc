//! `strata`: the command-line front door to a Strata store. This file parses the command line,
//! installs logging and dispatches; each command lives in `commands/`.

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod output;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use strata_core::{AccessDenied, AppendError, ReadError};
use strata_log::OpenError;

use crate::cli::{Cli, Command};
use crate::commands::{
    append, archive, bench, info, lifecycle, projections, read, serve, streams, subjects, tail,
    token, tour, verify,
};
use crate::output::Printer;

/// The exit code when the data directory is damaged (corruption, or acknowledged events
/// missing); other errors exit 1.
const EXIT_DAMAGED: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs requests' spans and start-up at info; client commands only warnings.
    let default_filter = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let serving = matches!(cli.command, Command::Serve(_));
    let outcome = rt.block_on(run(cli));
    // A local store dropped by the command finishes its index file before the process ends.
    strata_log::LogStore::wait_for_dropped();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<strata_client::ClientError>() {
                // One line that says what to do, not the HTTP stack's chain of causes.
                Some(c) => eprintln!("error: {}", c.summary()),
                None => eprintln!("error: {e:#}"),
            }
            if let Some(hint) = access_hint(&e) {
                eprintln!("{hint}");
            }
            match e.downcast_ref::<OpenError>() {
                Some(OpenError::Locked { .. }) => {
                    eprintln!("{}", locked_hint(serving));
                    ExitCode::FAILURE
                }
                Some(OpenError::DataLoss(_)) => {
                    eprintln!(
                        "nothing was changed on disk. `strata repair --accept-data-loss` opens the store without these events and reports what it cut."
                    );
                    ExitCode::from(EXIT_DAMAGED)
                }
                Some(OpenError::Corruption { .. }) => ExitCode::from(EXIT_DAMAGED),
                _ if archive::is_damaged(&e) => ExitCode::from(EXIT_DAMAGED),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// What to do when a server refused the request for want of a token or a right.
fn access_hint(e: &anyhow::Error) -> Option<&'static str> {
    let denied = e
        .downcast_ref::<AppendError>()
        .and_then(|a| match a {
            AppendError::Denied(d) => Some(d),
            _ => None,
        })
        .or_else(|| {
            e.downcast_ref::<ReadError>().and_then(|r| match r {
                ReadError::Denied(d) => Some(d),
                _ => None,
            })
        });
    let unauthenticated = match (denied, e.downcast_ref::<strata_client::ClientError>()) {
        (Some(AccessDenied::Unauthenticated(_)), _) => true,
        (Some(_), _) => false,
        (None, Some(c)) if c.is_unauthorized() => true,
        (None, Some(c)) if c.is_forbidden() => false,
        (None, _) => return None,
    };
    Some(if unauthenticated {
        "give the server's API token with --token or STRATA_TOKEN (`strata token new` makes one; the server's config file must list it)"
    } else {
        "the token's role or stream prefixes do not allow this: ask for a token with the right (see `strata token new --help`)"
    })
}

/// What to do when the data directory is held by another process: most often a running
/// `strata serve`, which the client commands reach with `--server`.
fn locked_hint(serving: bool) -> String {
    let url = format!("http://{}", strata_cli::config::DEFAULT_LISTEN);
    if serving {
        format!(
            "is a server already serving it (at {url} by default)? Stop it first, or give this one another --data directory"
        )
    } else {
        format!(
            "while `strata serve` runs on it, talk to the server instead: add --server URL (--server {url} by default); or stop the server first"
        )
    }
}

async fn run(cli: Cli) -> Result<()> {
    let p = Printer::new(cli.json);
    match &cli.command {
        Command::Serve(a) => serve::run(&cli, a).await,
        Command::Tour => {
            tour::run(
                cli.open().await?,
                &cli.location(),
                cli.server.as_deref(),
                &p,
            )
            .await
        }
        Command::Append(a) => append::run(&cli, a, &p).await,
        Command::Read(a) => read::run(&cli, a, &p).await,
        Command::Tail(a) => tail::run(&cli, a, &p).await,
        Command::Streams(a) => streams::run(&cli, a, &p).await,
        Command::Info(a) => info::run(&cli, a, &p).await,
        Command::Delete(a) => lifecycle::delete(&cli, a, &p).await,
        Command::Truncate(a) => lifecycle::truncate(&cli, a, &p).await,
        Command::Meta(a) => lifecycle::meta(&cli, a, &p).await,
        Command::Scavenge => lifecycle::scavenge(&cli, &p).await,
        Command::Verify(a) => verify::verify(&cli, a, &p).await,
        Command::Archive(a) => archive::archive(&cli, a, &p).await,
        Command::Restore(a) => archive::restore(&cli, a, &p).await,
        Command::Repair(a) => verify::repair(&cli, a, &p),
        Command::Projections { command } => projections::run(&cli, command.as_ref(), &p).await,
        Command::Token(c) => token::run(c, &p),
        Command::Forget(a) => subjects::forget(&cli, a, &p).await,
        Command::Schemas(a) => subjects::schemas(&cli, a, &p).await,
        Command::Keygen => {
            subjects::keygen();
            Ok(())
        }
        Command::RotateMasterKey(a) => subjects::rotate(&cli, a, &p).await,
        Command::Bench(a) => Err(bench::bench(&cli, a).into()),
        Command::BenchOpen => Err(bench::bench_open(&cli).into()),
    }
}
