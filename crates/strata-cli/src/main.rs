//! `strata`: the command-line front door to a Strata store.

#![forbid(unsafe_code)]

use strata_cli::config;
mod output;
mod projections;
mod serve;
mod tour;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use strata_core::{
    EventData, EventStore, ExpectedVersion, Filter, ListOptions, Metadata, Position,
    ReadAllOptions, ReadStreamOptions, StreamId, SubscribeFrom, SubscriptionTarget, Uuid,
};
use strata_log::{LogConfig, LogStore, OpenError};

use crate::output::Printer;

/// Strata: an event store and event-sourcing toolkit.
#[derive(Parser)]
#[command(name = "strata", version, about, long_about = None)]
struct Cli {
    /// The data directory of the embedded store [default: ./strata-data].
    #[arg(long, global = true, env = "STRATA_DATA")]
    data: Option<PathBuf>,
    /// Use PostgreSQL at this URL instead of the embedded store
    /// (postgres://user[:password]@host[:port]/database).
    #[arg(
        long,
        global = true,
        env = "STRATA_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Talk to a running Strata server instead of opening a store (http://127.0.0.1:2113).
    #[arg(long, global = true, env = "STRATA_SERVER")]
    server: Option<String>,
    /// The API token for --server.
    #[arg(long, global = true, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A CA certificate (PEM) to trust for an https --server with a private certificate.
    #[arg(long, global = true, env = "STRATA_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Print JSON (one document per line) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (and live subscriptions) on the store.
    Serve(serve::ServeArgs),
    /// A scripted tour of Strata on the mission's bank account.
    Tour,
    /// Append one event to a stream.
    Append(AppendArgs),
    /// Read a stream, or `$all`.
    Read(ReadArgs),
    /// Follow a stream or `$all` as events are appended (Ctrl-C to stop).
    Tail(TailArgs),
    /// List streams (or categories) with their event counts.
    Streams(StreamsArgs),
    /// Show what is known about one stream.
    Info {
        /// The stream.
        stream: String,
    },
    /// Check every record of the data directory (CRC, positions, versions) and that every
    /// event the index file records as acknowledged is there. Exits 2 when data is damaged or
    /// missing.
    Verify,
    /// Open a data directory whose newest acknowledged events are missing (a segment file cut
    /// short, zeroed or deleted), cutting the log where it is whole and saying exactly what was
    /// lost. Without --accept-data-loss it only reports what it would cut.
    Repair(RepairArgs),
    /// List, pause, resume, reset or rebuild projections (on a server with --server).
    Projections {
        #[command(subcommand)]
        command: Option<projections::ProjectionsCommand>,
    },
    /// Run the benchmarks.
    Bench(BenchArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Open the store, serve a read and print time and memory (used by `bench --large`).
    #[command(hide = true)]
    BenchOpen,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a new random token; prints it once, with the config entry holding its hash.
    New {
        /// A name for logs.
        #[arg(long, default_value = "client")]
        name: String,
        /// reader, writer or admin.
        #[arg(long, default_value = "reader")]
        role: String,
        /// Limit the role to streams starting with this (repeatable; default: every stream).
        #[arg(long = "prefix")]
        prefixes: Vec<String>,
    },
}

#[derive(Args)]
struct RepairArgs {
    /// Cut the missing events for good (the store then opens without them).
    #[arg(long)]
    accept_data_loss: bool,
}

#[derive(Args)]
struct AppendArgs {
    /// The stream, such as `account-123`.
    stream: String,
    /// The event type, such as `MoneyDeposited`.
    event_type: String,
    /// The event's data as JSON; `-` reads it from standard input.
    #[arg(id = "payload", value_name = "DATA", default_value = "{}")]
    payload: String,
    /// Expected version: `any`, `no-stream`, `exists`, or a version number.
    #[arg(long, default_value = "any")]
    expected: String,
    /// The event id (for idempotent retries); assigned by the store when absent.
    #[arg(long)]
    id: Option<Uuid>,
    /// Metadata as a JSON object (correlationId, causationId, userId, anything else).
    #[arg(long)]
    metadata: Option<String>,
}

#[derive(Args, Clone)]
struct FilterArgs {
    /// Only these event types (repeatable).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Only these categories (repeatable).
    #[arg(long = "category")]
    categories: Vec<String>,
    /// Only streams whose id starts with this.
    #[arg(long)]
    prefix: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        let mut f = Filter::default()
            .event_types(self.types.clone())
            .categories(self.categories.clone());
        f.stream_prefix = self.prefix.clone();
        f
    }
}

#[derive(Args)]
struct ReadArgs {
    /// A stream, or `$all` for the global order.
    stream: String,
    /// Start at this version (a stream) or position (`$all`), inclusive.
    #[arg(long)]
    from: Option<u64>,
    /// Newest first.
    #[arg(long)]
    backward: bool,
    /// Most events to print.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Show history as it was at this time (RFC 3339, e.g. 2026-01-01T00:00:00Z).
    #[arg(long)]
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Args)]
struct TailArgs {
    /// A stream, or `$all`.
    stream: String,
    /// Start from the first event instead of only new ones.
    #[arg(long)]
    from_start: bool,
    /// Resume after this position (`$all`) or version (a stream).
    #[arg(long, conflicts_with = "from_start")]
    after: Option<u64>,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Args)]
struct StreamsArgs {
    /// List categories instead of streams.
    #[arg(long)]
    categories: bool,
    /// Only names starting with this.
    #[arg(long)]
    prefix: Option<String>,
    /// Continue after this name (the `next` of the previous page).
    #[arg(long)]
    after: Option<String>,
    /// Most entries.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

#[derive(Args)]
struct BenchArgs {
    /// A small, fast run instead of the full-size one.
    #[arg(long)]
    quick: bool,
    /// Where to put the benchmark's stores (removed afterwards).
    #[arg(long, default_value = "./strata-bench-data")]
    dir: PathBuf,
    /// Instead: fill a store with this many events and measure opening it in a fresh
    /// process, with and without its index file (the memory budget check).
    #[arg(long, value_name = "EVENTS")]
    large: Option<u64>,
    /// Instead: the HTTP benchmarks, against an in-process server on loopback (or the
    /// running server given with --server), beside in-process appends for comparison.
    #[arg(long)]
    http: bool,
}

/// `strata bench --large N`: fill a store, then open it in fresh processes.
async fn bench_large(dir: &std::path::Path, events: u64, p: &Printer) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    eprintln!("filling {} with {events} events...", dir.display());
    let took = strata_bench::large::populate(dir, events, (events / 100).max(1))
        .await
        .map_err(anyhow::Error::msg)?;
    eprintln!(
        "filled in {:.1} s ({:.0} events/s)",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
    let exe = std::env::current_exe().context("finding the strata binary")?;
    let measure = || -> Result<strata_bench::large::OpenMeasure> {
        let out = std::process::Command::new(&exe)
            .arg("--data")
            .arg(dir)
            .arg("bench-open")
            .output()
            .context("running strata bench-open")?;
        if !out.status.success() {
            anyhow::bail!(
                "bench-open failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let with_index = measure()?;
    std::fs::remove_file(dir.join("index.bin")).context("removing the index file")?;
    let rebuilt = measure()?;
    let _ = std::fs::remove_dir_all(dir);
    if p.is_json() {
        println!(
            "{}",
            serde_json::json!({"withIndex": with_index, "rebuilt": rebuilt})
        );
    } else {
        for (name, m) in [
            ("with index file", &with_index),
            ("rebuilding index", &rebuilt),
        ] {
            println!(
                "open {} events, {name}: {} ms; resident memory {:.0} MiB (peak {:.0} MiB, {:.0} bytes/event); a 1,000-event stream read right after: {:.2} ms",
                m.events,
                m.open_ms,
                m.rss_bytes as f64 / 1048576.0,
                m.peak_rss_bytes as f64 / 1048576.0,
                m.rss_bytes as f64 / m.events.max(1) as f64,
                m.stream_read_us as f64 / 1000.0
            );
        }
    }
    Ok(())
}

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
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<OpenError>() {
                Some(OpenError::DataLoss(_)) => {
                    eprintln!(
                        "nothing was changed on disk. `strata repair --accept-data-loss` opens the store without these events and reports what it cut."
                    );
                    ExitCode::from(EXIT_DAMAGED)
                }
                Some(OpenError::Corruption { .. }) => ExitCode::from(EXIT_DAMAGED),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// The exit code when the data directory is damaged (corruption, or acknowledged events
/// missing); other errors exit 1.
const EXIT_DAMAGED: u8 = 2;

/// Opens the embedded store in `dir`.
pub(crate) fn open_log(dir: &std::path::Path) -> Result<LogStore> {
    LogStore::open(dir).with_context(|| format!("cannot open {}", dir.display()))
}

impl Cli {
    fn data_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA))
    }
}

/// A client of the server at `url`, with the token and CA certificate of the command line.
fn server_client(cli: &Cli, url: &str) -> Result<strata_client::Client> {
    let mut b = strata_client::Client::builder(url);
    if let Some(token) = &cli.token {
        b = b.token(token);
    }
    if let Some(ca) = &cli.ca_cert {
        b = b.ca_cert(ca);
    }
    Ok(b.build()?)
}

/// The store the client commands work on: a server, PostgreSQL, or the embedded log.
async fn open(cli: &Cli) -> Result<Arc<dyn EventStore>> {
    if let Some(url) = &cli.server {
        if cli.database_url.is_some() || cli.data.is_some() {
            anyhow::bail!(
                "--server talks to a running server: do not give --data or --database-url with it"
            );
        }
        return Ok(Arc::new(server_client(cli, url)?));
    }
    if let Some(url) = &cli.database_url {
        if cli.data.is_some() {
            anyhow::bail!("give --data or --database-url, not both");
        }
        let store = strata_postgres::PostgresStore::connect(url).await?;
        return Ok(Arc::new(store));
    }
    Ok(Arc::new(open_log(&cli.data_dir())?))
}

/// Where the store is, for people.
fn location(cli: &Cli) -> String {
    match (&cli.server, &cli.database_url) {
        (Some(url), _) => format!("the server at {url}"),
        (None, Some(_)) => "PostgreSQL".to_owned(),
        (None, None) => cli.data_dir().display().to_string(),
    }
}

fn stream_arg(s: &str) -> Result<StreamId> {
    StreamId::new(s).map_err(Into::into)
}

fn parse_expected(s: &str) -> Result<ExpectedVersion> {
    Ok(match s {
        "any" => ExpectedVersion::Any,
        "no-stream" => ExpectedVersion::NoStream,
        "exists" => ExpectedVersion::StreamExists,
        n => ExpectedVersion::Exact(n.parse().with_context(|| {
            format!("--expected must be any, no-stream, exists or a version number, not {n:?}")
        })?),
    })
}

async fn run(cli: Cli) -> Result<()> {
    let p = Printer::new(cli.json);
    match &cli.command {
        Command::Serve(a) => serve::run(&cli, a).await,
        Command::Token(TokenCommand::New {
            name,
            role,
            prefixes,
        }) => {
            let role = match role.as_str() {
                "reader" | "writer" | "admin" => role.clone(),
                r => anyhow::bail!("--role must be reader, writer or admin, not {r:?}"),
            };
            let token = strata_server::new_token();
            let hash = strata_server::hash_token(&token);
            let prefixes = if prefixes.is_empty() {
                String::new()
            } else {
                format!("prefixes = {}\n", serde_json::to_string(prefixes)?)
            };
            if p.is_json() {
                println!(
                    "{}",
                    serde_json::json!({"token": token, "sha256": hash, "name": name, "role": role})
                );
            } else {
                println!("token (give it to the client; it is not stored anywhere): {token}\n");
                println!("add to the server's config file:\n\n[[tokens]]\nname = {name:?}\nsha256 = \"{hash}\"\nrole = \"{role}\"\n{prefixes}");
            }
            Ok(())
        }
        Command::Tour => tour::run(open(&cli).await?, &location(&cli), &p).await,
        Command::Append(a) => {
            let store = open(&cli).await?;
            let stream = stream_arg(&a.stream)?;
            let data = if a.payload == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading data from stdin")?
            } else {
                a.payload.clone()
            };
            let value: serde_json::Value =
                serde_json::from_str(&data).context("the event data is not valid JSON")?;
            let mut event = EventData::json(a.event_type.clone(), &value)?;
            if let Some(id) = a.id {
                event = event.with_id(id);
            }
            if let Some(m) = &a.metadata {
                let map: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(m).context("--metadata must be a JSON object")?;
                event = event.with_metadata(Metadata::from_map(map));
            }
            let r = store
                .append(&stream, parse_expected(&a.expected)?, vec![event])
                .await?;
            p.appended(&stream, &r);
            Ok(())
        }
        Command::Read(a) => {
            let store = open(&cli).await?;
            let max_position = match a.as_of {
                Some(t) => match store.position_at(t).await? {
                    Some(p) => Some(p),
                    None => {
                        p.note(&format!("nothing was recorded at or before {t}"));
                        return Ok(());
                    }
                },
                None => None,
            };
            if a.stream == "$all" {
                let mut o = if a.backward {
                    ReadAllOptions::backward()
                } else {
                    ReadAllOptions::forward()
                }
                .limit(a.limit)
                .filter(a.filter.filter());
                if let Some(f) = a.from {
                    o = o.from(Position(f));
                }
                if let Some(m) = max_position {
                    o = o.max_position(m);
                }
                let page = store.read_all(o).await?;
                for e in &page.events {
                    p.event(e);
                }
                if !page.is_end {
                    if let Some(n) = page.next {
                        p.note(&format!("more: --from {n}"));
                    }
                }
            } else {
                let stream = stream_arg(&a.stream)?;
                let mut o = if a.backward {
                    ReadStreamOptions::backward()
                } else {
                    ReadStreamOptions::forward()
                }
                .limit(a.limit);
                if let Some(f) = a.from {
                    o = o.from_version(f);
                }
                if let Some(m) = max_position {
                    o = o.max_position(m);
                }
                for e in store.read_stream(&stream, o).await? {
                    p.event(&e);
                }
            }
            Ok(())
        }
        Command::Tail(a) => {
            let store = open(&cli).await?;
            let (target, from) = if a.stream == "$all" {
                let from = match (a.from_start, a.after) {
                    (true, _) => SubscribeFrom::Start,
                    (_, Some(n)) => SubscribeFrom::AfterPosition(Position(n)),
                    _ => SubscribeFrom::End,
                };
                (SubscriptionTarget::All(a.filter.filter()), from)
            } else {
                let from = match (a.from_start, a.after) {
                    (true, _) => SubscribeFrom::Start,
                    (_, Some(n)) => SubscribeFrom::AfterVersion(n),
                    _ => SubscribeFrom::End,
                };
                (SubscriptionTarget::Stream(stream_arg(&a.stream)?), from)
            };
            if let Some(url) = &cli.server {
                let client = server_client(&cli, url)?;
                // Fix "from now" to a position (or version) here, so that a reconnect resumes
                // exactly where this started even before the first event arrives.
                let after = match (&target, from) {
                    (_, SubscribeFrom::AfterPosition(p)) => Some(p.0),
                    (_, SubscribeFrom::AfterVersion(v)) => Some(v),
                    (_, SubscribeFrom::Start) => None,
                    (SubscriptionTarget::All(_), SubscribeFrom::End) => {
                        client.head().await?.map(|p| p.0)
                    }
                    (SubscriptionTarget::Stream(s), SubscribeFrom::End) => {
                        client.stream_info(s).await?.current_version
                    }
                };
                let path = strata_client::paths::subscription_path(&target, SubscribeFrom::Start);
                let mut follow = client.follow(path, after);
                let mut seen = 0u64;
                drop(store);
                while a.count.is_none_or(|c| seen < c) {
                    tokio::select! {
                        e = follow.next() => { p.event(&e?); seen += 1; }
                        _ = tokio::signal::ctrl_c() => break,
                    }
                }
                return Ok(());
            }
            let mut sub = store.subscribe(target, from).await?;
            let mut seen = 0u64;
            while a.count.is_none_or(|c| seen < c) {
                tokio::select! {
                    e = sub.next() => { p.event(&e?); seen += 1; }
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
            Ok(())
        }
        Command::Streams(a) => {
            let store = open(&cli).await?;
            let mut o = ListOptions::default().limit(a.limit);
            o.after = a.after.clone();
            o.prefix = a.prefix.clone();
            if a.categories {
                let page = store.list_categories(o).await?;
                p.categories(&page);
            } else {
                let page = store.list_streams(o).await?;
                p.streams(&page);
            }
            Ok(())
        }
        Command::Info { stream } => {
            let store = open(&cli).await?;
            let info = store.stream_info(&stream_arg(stream)?).await?;
            p.info(&info);
            Ok(())
        }
        Command::Projections { command } => {
            use projections::ProjectionsCommand as P;
            let command = command.clone().unwrap_or(P::List);
            if let Some(url) = &cli.server {
                if cli.database_url.is_some() || cli.data.is_some() {
                    anyhow::bail!(
                        "--server talks to a running server: do not give --data or --database-url with it"
                    );
                }
                let client = server_client(&cli, url)?;
                return projections::on_server(&client, &command, &p).await;
            }
            match &command {
                P::List if cli.database_url.is_none() => {
                    let store = open(&cli).await?;
                    projections::list(&cli.data_dir(), &*store, &p).await
                }
                P::List => anyhow::bail!(
                    "listing PostgreSQL read models needs the program that hosts them: pass --server URL"
                ),
                P::Rebuild { name } => {
                    let backend = match &cli.database_url {
                        Some(url) => config::Backend::Postgres(url.clone()),
                        None => config::Backend::Embedded(cli.data_dir()),
                    };
                    let store = open(&cli).await?;
                    projections::rebuild_here(&backend, store, name, &p).await
                }
                P::Pause { .. } | P::Resume { .. } | P::Reset { .. } => anyhow::bail!(
                    "pause, resume and reset act on projections while they run, in the program that hosts them: pass --server URL"
                ),
            }
        }
        Command::Verify => {
            if cli.server.is_some() || cli.database_url.is_some() {
                anyhow::bail!("verify checks the embedded store's files: it works on --data only");
            }
            let dir = cli.data_dir();
            let r = strata_log::verify(&dir)?;
            p.verify(&dir, &r);
            Ok(())
        }
        Command::Repair(args) => {
            if cli.server.is_some() || cli.database_url.is_some() {
                anyhow::bail!(
                    "repair works on the embedded store's files: it works on --data only"
                );
            }
            let dir = cli.data_dir();
            if !args.accept_data_loss {
                // Only say what would be cut.
                let r = strata_log::verify(&dir)?;
                p.nothing_to_repair(&dir, &r);
                return Ok(());
            }
            let config = LogConfig {
                accept_data_loss: true,
                ..LogConfig::default()
            };
            let store = LogStore::open_with(&dir, config)
                .with_context(|| format!("cannot open {}", dir.display()))?;
            let report = store.open_report().clone();
            drop(store);
            p.repaired(&dir, &report);
            Ok(())
        }
        Command::BenchOpen => {
            let m = strata_bench::large::open_and_measure(&cli.data_dir())
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string(&m)?);
            Ok(())
        }
        Command::Bench(b) if b.http || cli.server.is_some() => {
            let scale = if b.quick {
                strata_bench::Scale::Quick
            } else {
                strata_bench::Scale::Full
            };
            let target = match &cli.server {
                Some(url) => strata_bench::http::Target::Server {
                    url: url.clone(),
                    token: cli.token.clone(),
                },
                None => strata_bench::http::Target::InProcess,
            };
            if !cli.json {
                eprintln!(
                    "running the HTTP benchmarks ({}) in {}...",
                    if b.quick {
                        "quick"
                    } else {
                        "full size, about a minute"
                    },
                    b.dir.display()
                );
            }
            let report = strata_bench::http::run(&b.dir, target, scale)
                .await
                .map_err(anyhow::Error::msg)?;
            let _ = std::fs::remove_dir_all(&b.dir);
            if cli.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{report}");
            }
            Ok(())
        }
        Command::Bench(b) if b.large.is_some() => {
            let events = b.large.unwrap_or_default();
            bench_large(&b.dir, events, &p).await
        }
        Command::Bench(b) => {
            let scale = if b.quick {
                strata_bench::Scale::Quick
            } else {
                strata_bench::Scale::Full
            };
            if !cli.json {
                eprintln!(
                    "running the embedded-store benchmarks in {} ({})...",
                    b.dir.display(),
                    if b.quick {
                        "quick"
                    } else {
                        "full size, about two minutes"
                    }
                );
            }
            let report = strata_bench::log::run(&b.dir, scale)
                .await
                .map_err(anyhow::Error::msg)?;
            let _ = std::fs::remove_dir_all(&b.dir);
            if cli.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{report}");
            }
            Ok(())
        }
    }
}
