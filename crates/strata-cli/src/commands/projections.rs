//! `strata projections`: list, pause, resume, reset and rebuild projections, and the built-in
//! projections `strata serve` hosts.
//!
//! Projections are application code, so they run in the program that registers them: with
//! `--server URL` these commands operate the projections that server hosts (its built-in ones,
//! or an application's when it embeds `strata-server`). Without `--server`, `list` reads what
//! projections recorded next to an embedded data directory, and `rebuild` rebuilds a built-in
//! projection in this process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use strata::projection::{
    EventTypeCounts, PgProjections, PgReadModels, ProjectionControl, ProjectionStatus, Projections,
    RebuildProgress, SqliteReadModels,
};
use strata_client::paths::{projection_path, PROJECTIONS_PATH};
use strata_client::{Client, RebuildReport, RebuildState};
use strata_core::EventStore;

use crate::cli::Cli;
use crate::output::Printer;
use strata_cli::config::{self, Backend};

/// The PostgreSQL schema of the built-in projections' read models.
pub const PG_READ_MODEL_SCHEMA: &str = "strata_read_models";

/// How often `rebuild --server` polls the rebuild's progress.
const REBUILD_POLL_INTERVAL_MS: u64 = 200;

#[derive(Subcommand, Clone)]
pub enum ProjectionsCommand {
    /// Status, checkpoint, lag and last error of each projection (the default).
    List,
    /// Stop a projection after its current batch (needs --server).
    Pause {
        /// The projection.
        name: String,
    },
    /// Run a paused or failed projection again from its checkpoint (needs --server).
    Resume {
        /// The projection.
        name: String,
    },
    /// Empty a projection and replay it from position 0 (needs --server).
    Reset {
        /// The projection.
        name: String,
    },
    /// Rebuild a projection into a fresh copy and swap it in once caught up, with a progress
    /// bar: on the server with --server, else a built-in projection in this process.
    Rebuild {
        /// The projection.
        name: String,
    },
}

/// Built-in projections hosted by this process.
pub enum Hosted {
    Sqlite(Projections),
    Postgres(PgProjections),
}

impl Hosted {
    /// Registers the built-in projections `names` (async) over `store`, with their read models
    /// next to the data directory (SQLite) or in [`PG_READ_MODEL_SCHEMA`]. `None` for no names.
    pub async fn start(
        backend: &Backend,
        store: Arc<dyn EventStore>,
        names: &[String],
    ) -> Result<Option<Hosted>> {
        if names.is_empty() {
            return Ok(None);
        }
        let hosted = match backend {
            Backend::Embedded(dir) => {
                let models = SqliteReadModels::next_to(dir).with_context(|| {
                    format!("opening the read models next to {}", dir.display())
                })?;
                Hosted::Sqlite(Projections::new(store, models))
            }
            Backend::Postgres(url) => {
                let models = PgReadModels::connect(url, PG_READ_MODEL_SCHEMA)
                    .await
                    .context("opening the PostgreSQL read models")?;
                Hosted::Postgres(PgProjections::new(store, models))
            }
        };
        for name in names {
            // Config validation admits only built-in names; this is the one there is.
            if name != EventTypeCounts::NAME {
                anyhow::bail!("{name:?} is not a built-in projection");
            }
            match &hosted {
                Hosted::Sqlite(p) => p.spawn(EventTypeCounts).await?,
                Hosted::Postgres(p) => p.spawn(EventTypeCounts).await?,
            }
        }
        Ok(Some(hosted))
    }

    pub fn control(&self) -> Arc<dyn ProjectionControl> {
        match self {
            Hosted::Sqlite(p) => Arc::new(p.clone()),
            Hosted::Postgres(p) => Arc::new(p.clone()),
        }
    }

    pub async fn shutdown(&self) {
        match self {
            Hosted::Sqlite(p) => p.shutdown().await,
            Hosted::Postgres(p) => p.shutdown().await,
        }
    }
}

/// One rebuild's progress as both paths report it.
struct Shown {
    passed: u64,
    total: u64,
    events_per_second: f64,
    eta: Option<Duration>,
}

fn progress_bar(name: &str) -> ProgressBar {
    // Hidden until the first report gives it a length.
    let bar = ProgressBar::hidden();
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} events {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("rebuilding {name}"));
    bar
}

fn show(bar: &ProgressBar, s: &Shown) {
    if bar.is_hidden() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    bar.set_length(s.total.max(1));
    bar.set_position(s.passed.min(s.total));
    let eta = s.eta.map_or("-".to_owned(), |d| {
        format!("{:.0}s left", d.as_secs_f64().ceil())
    });
    bar.set_message(format!("{:.0} events/s, {eta}", s.events_per_second));
}

fn shown_of(p: &RebuildProgress) -> Shown {
    Shown {
        passed: p.position.map_or(0, |c| c.0 + 1),
        total: p.head.map_or(0, |h| h.0 + 1),
        events_per_second: p.events_per_second,
        eta: p.eta,
    }
}

fn shown_of_report(r: &RebuildReport) -> Shown {
    let passed = r.position.map_or(0, |c| c + 1);
    Shown {
        passed,
        total: r.head.map_or(passed, |h| h + 1),
        events_per_second: r.events_per_second,
        eta: r
            .eta_seconds
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64),
    }
}

fn rebuilt(p: &Printer, name: &str, applied: u64, elapsed_s: f64, checkpoint: Option<u64>) {
    if p.is_json() {
        println!(
            "{}",
            json!({ "rebuilt": name, "appliedEvents": applied, "elapsedSeconds": elapsed_s, "checkpoint": checkpoint })
        );
    } else {
        let rate = applied as f64 / elapsed_s.max(1e-6);
        let at = checkpoint.map_or("nothing yet".to_owned(), |c| format!("position {c}"));
        println!(
            "rebuilt {name}: {applied} events applied in {elapsed_s:.1} s ({rate:.0} events/s); it serves from {at}"
        );
    }
}

/// `strata projections [COMMAND]`: on the server with --server, else in this process.
pub async fn run(cli: &Cli, command: Option<&ProjectionsCommand>, p: &Printer) -> Result<()> {
    use ProjectionsCommand as P;
    let command = command.cloned().unwrap_or(P::List);
    if let Some(url) = &cli.server {
        cli.server_alone()?;
        let client = cli.server_client(url)?;
        return on_server(&client, &command, p).await;
    }
    match &command {
        P::List if cli.database_url.is_none() => {
            let store = cli.open().await?;
            list(&cli.data_dir(), &*store, p).await
        }
        P::List => anyhow::bail!(
            "listing PostgreSQL read models needs the program that hosts them: pass --server URL"
        ),
        P::Rebuild { name } => {
            let backend = match &cli.database_url {
                Some(url) => config::Backend::Postgres(url.clone()),
                None => config::Backend::Embedded(cli.data_dir()),
            };
            let store = cli.open().await?;
            rebuild_here(&backend, store, name, p).await
        }
        P::Pause { .. } | P::Resume { .. } | P::Reset { .. } => anyhow::bail!(
            "pause, resume and reset act on projections while they run, in the program that hosts them: pass --server URL"
        ),
    }
}

/// `strata projections ... --server URL`
pub async fn on_server(client: &Client, cmd: &ProjectionsCommand, p: &Printer) -> Result<()> {
    let path = |name: &str, op: &str| format!("{}{op}", projection_path(name));
    match cmd {
        ProjectionsCommand::List => {
            let v = client.get_json(PROJECTIONS_PATH).await?;
            let items = v["projections"].as_array().cloned().unwrap_or_default();
            print_list(p, &items);
        }
        ProjectionsCommand::Pause { name } => {
            let v = client.post_json(&path(name, "/pause")).await?;
            print_list(p, &[v]);
        }
        ProjectionsCommand::Resume { name } => {
            let v = client.post_json(&path(name, "/resume")).await?;
            print_list(p, &[v]);
        }
        ProjectionsCommand::Reset { name } => {
            let v = client.post_json(&path(name, "/reset")).await?;
            print_list(p, &[v]);
        }
        ProjectionsCommand::Rebuild { name } => {
            client.post_json(&path(name, "/rebuild")).await?;
            let bar = progress_bar(name);
            loop {
                let mut v = client.get_json(&path(name, "")).await?;
                let report = v.get_mut("rebuild").map(serde_json::Value::take);
                // No report yet (or from a server that restarted since): ask again.
                let Some(report) = report.filter(|r| !r.is_null()) else {
                    tokio::time::sleep(Duration::from_millis(REBUILD_POLL_INTERVAL_MS)).await;
                    continue;
                };
                let r: RebuildReport = serde_json::from_value(report)
                    .context("the server's `rebuild` report is not readable")?;
                show(&bar, &shown_of_report(&r));
                match r.state {
                    RebuildState::Done => {
                        bar.finish_and_clear();
                        rebuilt(p, name, r.applied_events, r.elapsed_seconds, r.checkpoint);
                        return Ok(());
                    }
                    RebuildState::Failed => {
                        bar.abandon();
                        anyhow::bail!(
                            "the rebuild of {name} failed: {}",
                            r.error.as_deref().unwrap_or("no reason given")
                        );
                    }
                    _ => tokio::time::sleep(Duration::from_millis(REBUILD_POLL_INTERVAL_MS)).await,
                }
            }
        }
    }
    Ok(())
}

/// `strata projections rebuild NAME` in this process: a built-in projection, on the embedded
/// store or PostgreSQL.
pub async fn rebuild_here(
    backend: &Backend,
    store: Arc<dyn EventStore>,
    name: &str,
    p: &Printer,
) -> Result<()> {
    if !strata::projection::BUILTIN_PROJECTIONS.contains(&name) {
        anyhow::bail!(
            "{name:?} is not a built-in projection ({}); an application's projections are rebuilt by the program that hosts them: pass --server URL",
            strata::projection::BUILTIN_PROJECTIONS.join(", ")
        );
    }
    let hosted = Hosted::start(backend, store, &[name.to_owned()])
        .await?
        .context("no projection to rebuild")?;
    let control = hosted.control();
    // The serving copy need not catch up while the fresh one is built from 0 (that would do
    // the work twice): hold it, and let it go on from the swapped-in checkpoint afterwards.
    let was_paused = control.status(name).await?.status == ProjectionStatus::Paused;
    if !was_paused {
        control.pause(name).await?;
    }
    let bar = progress_bar(name);
    let mut last: Option<RebuildProgress> = None;
    let result = control
        .rebuild(name, &mut |progress: &RebuildProgress| {
            show(&bar, &shown_of(progress));
            last = Some(progress.clone());
        })
        .await;
    // Let it go on whether or not the rebuild worked: a failed rebuild leaves the serving
    // copy as it was, and it must not stay paused for the next program that hosts it.
    if !was_paused {
        control.resume(name).await?;
    }
    hosted.shutdown().await;
    let checkpoint = result?;
    bar.finish_and_clear();
    let (applied, elapsed) = last.map_or((0, 0.0), |l| (l.applied_events, l.elapsed.as_secs_f64()));
    rebuilt(p, name, applied, elapsed, checkpoint.map(|c| c.0));
    Ok(())
}

fn print_list(p: &Printer, items: &[Value]) {
    if p.is_json() {
        for i in items {
            println!("{i}");
        }
        return;
    }
    println!(
        "{:<28} {:<7} {:<24} {:>12} {:>10} {:>9}  LAST ERROR",
        "PROJECTION", "MODE", "STATUS", "CHECKPOINT", "LAG", "LAG (s)"
    );
    for i in items {
        let checkpoint = i["checkpoint"]
            .as_u64()
            .map_or("-".to_owned(), |c| c.to_string());
        let error = match (i["lastError"].as_str(), i["errorPosition"].as_u64()) {
            (Some(e), Some(pos)) => format!(
                "at position {pos} (event {}): {e}",
                i["errorEventId"].as_str().unwrap_or("?")
            ),
            (Some(e), None) => e.to_owned(),
            _ => String::new(),
        };
        println!(
            "{:<28} {:<7} {:<24} {:>12} {:>10} {:>9}  {}",
            i["name"].as_str().unwrap_or("?"),
            i["mode"].as_str().unwrap_or("?"),
            i["status"].as_str().unwrap_or("?"),
            checkpoint,
            i["lagEvents"].as_u64().unwrap_or(0),
            i["lagSeconds"]
                .as_f64()
                .map_or("-".to_owned(), |s| format!("{s:.1}")),
            error
        );
    }
}

/// `strata projections list` on an embedded data directory: what the projections recorded.
pub async fn list(data: &Path, store: &dyn EventStore, p: &Printer) -> Result<()> {
    let path = SqliteReadModels::path_next_to(data);
    if !path.exists() {
        p.note(&format!(
            "no projections have run against {} (no {})",
            data.display(),
            path.display()
        ));
        return Ok(());
    }
    let models =
        SqliteReadModels::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let stored = models.stored()?;
    let head = store.head().await?.map(|h| h.0);
    let head_time = match head {
        Some(h) => store
            .read_all(strata_core::ReadAllOptions::backward().limit(1))
            .await?
            .events
            .first()
            .map(|e| (h, e.recorded_at)),
        None => None,
    };
    let items: Vec<Value> = stored
        .iter()
        .map(|s| {
            // Nothing hosts them now (this process holds the data directory): what is
            // shown is what they recorded when last hosted. JSON keeps `status` one word
            // for scripts; the table says it in a phrase.
            let status = match (p.is_json(), s.rebuild_started) {
                (true, _) => "stopped".to_owned(),
                (false, true) => format!("stopped (was {}, rebuilding)", s.status),
                (false, false) => format!("stopped (was {})", s.status),
            };
            json!({
                "name": s.name,
                "mode": "-",
                "status": status,
                "recordedStatus": s.status.to_string(),
                "rebuildStarted": s.rebuild_started,
                "checkpoint": s.checkpoint,
                "lagEvents": lag_events(head, s.checkpoint.map(|c| c.0)),
                "lastError": s.last_error,
                "errorPosition": s.error_position,
                "errorEventId": s.error_event_id,
            })
        })
        .collect();
    print_list(p, &items);
    if p.is_json() {
        return Ok(());
    }
    println!(
        "not running: this is what they recorded next to {}; `strata serve` hosts them (see them live with --server URL)",
        data.display()
    );
    if let Some((h, t)) = head_time {
        println!("store head: position {h}, recorded {}", t.to_rfc3339());
    }
    Ok(())
}

/// Positions between a checkpoint and the head.
fn lag_events(head: Option<u64>, checkpoint: Option<u64>) -> u64 {
    match (head, checkpoint) {
        (Some(h), Some(c)) => h.saturating_sub(c),
        (Some(h), None) => h + 1,
        _ => 0,
    }
}
