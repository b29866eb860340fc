//! `strata archive`, `strata restore` and `strata verify --archive`: the embedded store's
//! sealed segments (or a PostgreSQL store's final events, in the same format) copied to an
//! archive (a directory, or S3), brought back into a new data directory or an empty
//! PostgreSQL store, and checked where they lie.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use strata_archive::{Archive, ArchiveError, Progress};

use crate::cli::Cli;
use crate::output::Printer;

/// The archive's address, from the command line or the environment.
#[derive(Args)]
pub struct ArchiveArgs {
    /// The archive: a directory (made when missing), file:///path, or s3://bucket/prefix
    /// (configured from the AWS_* environment variables; AWS_ENDPOINT_URL for an
    /// S3-compatible service).
    #[arg(long = "to", env = "STRATA_ARCHIVE")]
    to: String,
    /// Seal the open segment first, so that everything appended so far is archived (each
    /// seal starts a new segment).
    #[arg(long)]
    seal: bool,
    /// After archiving, give back the disk of archived segments, keeping this many of the
    /// newest sealed segments on local disk: the others are read from the archive from then
    /// on (through a cache in memory), and the store opens only where it can reach it.
    #[arg(long, value_name = "SEGMENTS")]
    keep_local: Option<u64>,
    /// With the disk given back, also keep local every segment holding an event recorded
    /// less than AGE ago (`90s`, `15m`, `12h`, `30d`).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    keep_local_newer_than: Option<std::time::Duration>,
    /// With the disk given back, also keep local every segment holding a position at or
    /// above POSITION.
    #[arg(long, value_name = "POSITION")]
    keep_local_from: Option<u64>,
}

/// An age: a number of seconds, minutes, hours or days (`90s`, `15m`, `12h`, `30d`).
pub fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not an age such as 90s, 15m, 12h or 30d"))?;
    let secs = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    n.checked_mul(secs)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long an age"))
}

/// What stays local when the disk of archived segments is given back, from the command
/// line: `None` when nothing asked for the disk back.
pub fn keep_local(
    newest: Option<u64>,
    newer_than: Option<std::time::Duration>,
    from: Option<u64>,
) -> Option<strata_archive::KeepLocal> {
    if newest.is_none() && newer_than.is_none() && from.is_none() {
        return None;
    }
    let mut keep = strata_archive::KeepLocal::newest_segments(newest.unwrap_or(0));
    if let Some(age) = newer_than {
        keep = keep.newer_than(age);
    }
    if let Some(p) = from {
        keep = keep.from_position(p);
    }
    Some(keep)
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The archive to restore from (as for `strata archive --to`).
    #[arg(long = "from", env = "STRATA_ARCHIVE")]
    from: String,
    /// With --database-url: where the archive is first restored and checked (removed
    /// afterwards); it needs room for the archive's size [default: the temp directory].
    #[arg(long)]
    scratch: Option<PathBuf>,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Check an archive instead of the data directory: every file's size and SHA-256, every
    /// segment's records, and `strata verify` on a copy restored under --scratch.
    #[arg(long)]
    archive: Option<String>,
    /// Where `--archive` restores its copy (removed afterwards); it needs room for the
    /// archive's size.
    #[arg(long, requires = "archive")]
    scratch: Option<PathBuf>,
}

impl VerifyArgs {
    pub fn archive(&self) -> Option<&str> {
        self.archive.as_deref()
    }
    pub fn scratch(&self) -> Option<&PathBuf> {
        self.scratch.as_ref()
    }
}

fn embedded_only(cli: &Cli, what: &str) -> Result<()> {
    if cli.server.is_some() || cli.database_url.is_some() {
        anyhow::bail!(
            "{what} works on the embedded store's files: it works on --data only (stop a server on the directory first)"
        );
    }
    Ok(())
}

/// A progress bar on stderr when it is a terminal.
fn bar(what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::hidden();
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} [{{bar:30}}] {{pos}}/{{len}} segments, {{msg}} ({{elapsed}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

fn show(bar: &indicatif::ProgressBar, p: Progress) {
    if bar.is_hidden() && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    bar.set_length(p.segments_total);
    bar.set_position(p.segments_done);
    bar.set_message(format!("{:.1} MiB", p.bytes as f64 / (1024.0 * 1024.0)));
}

/// `strata archive --database-url`: the PostgreSQL store's final events exported into the
/// archive, in the embedded store's segment format.
async fn archive_postgres(url: &str, args: &ArchiveArgs, p: &Printer) -> Result<()> {
    if args.seal
        || args.keep_local.is_some()
        || args.keep_local_newer_than.is_some()
        || args.keep_local_from.is_some()
    {
        anyhow::bail!(
            "--seal and --keep-local* work on the embedded store's segments; PostgreSQL exports every final event"
        );
    }
    let archive = Archive::open(&args.to)?;
    let store = strata_postgres::PostgresStore::connect(url).await?;
    let bar = bar("exporting");
    let result = archive.archive_postgres(&store, &|s| show(&bar, s)).await;
    bar.finish_and_clear();
    let report = result.with_context(|| format!("archiving PostgreSQL to {}", args.to))?;
    p.archived(&args.to, &report, None);
    Ok(())
}

pub async fn archive(cli: &Cli, args: &ArchiveArgs, p: &Printer) -> Result<()> {
    if let (None, Some(url)) = (&cli.server, &cli.database_url) {
        if cli.data.is_some() {
            anyhow::bail!("give --data or --database-url, not both");
        }
        return archive_postgres(url, args, p).await;
    }
    embedded_only(cli, "archive")?;
    let archive = Archive::open(&args.to)?;
    let dir = cli.data_dir();
    let store = crate::cli::open_log(&dir)?;
    if args.seal {
        store
            .seal_open_segment()
            .await
            .with_context(|| format!("sealing the open segment of {}", dir.display()))?;
    }
    let bar = bar("archiving");
    let result = archive.archive_store(&store, &|s| show(&bar, s)).await;
    bar.finish_and_clear();
    let keep = keep_local(
        args.keep_local,
        args.keep_local_newer_than,
        args.keep_local_from,
    );
    let evicted = match (&result, keep) {
        (Ok(_), Some(keep)) => Some(archive.evict_archived_with(&store, &keep).await),
        _ => None,
    };
    let closed = store.close().await;
    let report = result.with_context(|| format!("archiving {} to {}", dir.display(), args.to))?;
    let evicted = evicted.transpose().with_context(|| {
        format!(
            "giving back the disk of {}'s archived segments",
            dir.display()
        )
    })?;
    closed.context("closing the store")?;
    p.archived(&args.to, &report, evicted.as_ref());
    Ok(())
}

pub async fn restore(cli: &Cli, args: &RestoreArgs, p: &Printer) -> Result<()> {
    if let (None, Some(url)) = (&cli.server, &cli.database_url) {
        if cli.data.is_some() {
            anyhow::bail!("give --data or --database-url, not both");
        }
        let archive = Archive::open(&args.from)?;
        let store = strata_postgres::PostgresStore::connect(url).await?;
        let scratch = args.scratch.clone().unwrap_or_else(std::env::temp_dir);
        let bar = bar("restoring");
        let result = archive
            .restore_postgres(&store, &scratch, &|s| show(&bar, s))
            .await;
        bar.finish_and_clear();
        let report = result.with_context(|| format!("restoring {} into PostgreSQL", args.from))?;
        p.restored(std::path::Path::new("PostgreSQL"), &report);
        return Ok(());
    }
    embedded_only(cli, "restore")?;
    let archive = Archive::open(&args.from)?;
    let dir = cli.data_dir();
    let bar = bar("restoring");
    let result = archive.restore(&dir, &|s| show(&bar, s)).await;
    bar.finish_and_clear();
    let report =
        result.with_context(|| format!("restoring {} into {}", args.from, dir.display()))?;
    p.restored(&dir, &report);
    Ok(())
}

pub async fn verify_archive(url: &str, scratch: Option<&PathBuf>, p: &Printer) -> Result<()> {
    let archive = Archive::open(url)?;
    let scratch = scratch.cloned().unwrap_or_else(std::env::temp_dir);
    let report = archive
        .verify(&scratch)
        .await
        .with_context(|| format!("verifying the archive at {url}"))?;
    p.archive_verified(url, &report);
    Ok(())
}

/// Whether an error is an archive, or a store's segment, found damaged (the command then
/// exits 2).
pub fn is_damaged(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<ArchiveError>(),
        Some(ArchiveError::Damaged { .. } | ArchiveError::LocalSegment { .. })
    )
}

/// What `strata serve --archive URL` archives.
pub enum Archived {
    /// The embedded store's sealed segments.
    Embedded {
        store: strata_log::LogStore,
        /// Give back the disk of archived segments after each pass, keeping these local.
        keep_local: Option<strata_archive::KeepLocal>,
    },
    /// A PostgreSQL store's final events.
    Postgres(strata_postgres::PostgresStore),
}

/// What `strata serve --archive URL` archives with.
pub struct StoreArchiver {
    source: Archived,
    archive: Archive,
}

impl StoreArchiver {
    pub fn new(source: Archived, url: &str) -> Result<StoreArchiver> {
        Ok(StoreArchiver {
            source,
            archive: Archive::open(url)?,
        })
    }

    /// One pass: archive, then give back the disk of what is archived when asked to.
    async fn pass(&self) -> Result<strata_archive::ArchiveReport, ArchiveError> {
        let (store, keep) = match &self.source {
            Archived::Postgres(pg) => return self.archive.archive_postgres(pg, &|_| {}).await,
            Archived::Embedded { store, keep_local } => (store, keep_local),
        };
        let result = self.archive.archive_store(store, &|_| {}).await?;
        if let Some(keep) = keep {
            let e = self.archive.evict_archived_with(store, keep).await?;
            if e.evicted > 0 {
                tracing::info!(
                    segments = e.evicted,
                    bytes = e.bytes,
                    read_from_archive = e.archived_segments,
                    "gave back the disk of archived segments"
                );
            }
        }
        Ok(result)
    }
}

impl strata_server::Archiver for StoreArchiver {
    fn target(&self) -> String {
        self.archive.url().to_owned()
    }

    fn archive_sealed(
        &self,
    ) -> futures::future::BoxFuture<
        '_,
        Result<strata_server::ArchivePass, strata_server::ArchivePassError>,
    > {
        Box::pin(async move {
            match self.pass().await {
                Ok(r) => Ok(strata_server::ArchivePass {
                    segments: r.segments,
                    bytes: r.bytes,
                    archived_below: r.archived_below,
                }),
                Err(ArchiveError::Busy) => Err(strata_server::ArchivePassError::Busy),
                Err(e) => Err(strata_server::ArchivePassError::Failed {
                    message: public_message(&self.archive, &e),
                    detail: with_causes(&e),
                }),
            }
        })
    }
}

/// What admins (and `/health`, which is open) are told of a failed pass over HTTP: the kind
/// of failure and the archive's public name (an S3 address, never a local path); the server's
/// log has the whole error.
fn public_message(archive: &Archive, e: &ArchiveError) -> String {
    let at = archive.public_name();
    match e {
        ArchiveError::Unavailable { .. } => {
            format!("{at} did not answer or refused the request (see the server log)")
        }
        ArchiveError::Damaged { .. } => {
            format!("an object of {at} is damaged (see the server log)")
        }
        ArchiveError::OtherStore { .. } => format!("{at} holds another store's segments"),
        ArchiveError::Diverged { segment, .. } => {
            format!("{at} and this store differ at segment {segment}")
        }
        ArchiveError::LocalSegment { segment, .. } => {
            format!("segment {segment} of the store does not check out (see the server log)")
        }
        ArchiveError::Store(_) | ArchiveError::Io { .. } => {
            "reading the store's sealed segments failed (see the server log)".to_owned()
        }
        _ => "the archive pass failed (see the server log)".to_owned(),
    }
}

/// An error with its causes, for the server's log.
fn with_causes(e: &ArchiveError) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ages in seconds, minutes, hours and days; anything else is refused with the forms.
    #[test]
    fn ages_are_read_with_their_unit() {
        let secs = |s| parse_age(s).map(|d| d.as_secs());
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("15m"), Ok(900));
        assert_eq!(secs("12h"), Ok(43_200));
        assert_eq!(secs("30d"), Ok(2_592_000));
        for bad in ["", "d", "1w", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    /// No message a failed pass shows over HTTP names a local path.
    #[test]
    fn failures_are_told_without_local_paths() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().display().to_string();
        let archive = Archive::open(&local).unwrap();
        let io = || std::io::Error::other(format!("{local}/segments/x: denied"));
        let errors = [
            ArchiveError::Unavailable {
                url: local.clone(),
                reason: format!("{local}: refused"),
            },
            ArchiveError::Damaged {
                object: format!("{local}/segments/0.seg"),
                reason: "bad".into(),
            },
            ArchiveError::OtherStore {
                url: local.clone(),
                archived: "a".into(),
                this: "b".into(),
            },
            ArchiveError::Diverged {
                url: local.clone(),
                segment: 3,
                reason: local.clone(),
            },
            ArchiveError::LocalSegment {
                segment: 2,
                reason: format!("{local}: cut"),
            },
            ArchiveError::Io {
                context: format!("reading {local}"),
                source: io(),
            },
            ArchiveError::Busy,
            ArchiveError::Interrupted(local.clone()),
        ];
        for e in &errors {
            let shown = public_message(&archive, e);
            assert!(!shown.contains(&local), "{shown}");
            assert!(!shown.is_empty());
        }
        // The log keeps the causes.
        let logged = with_causes(&errors[5]);
        assert!(logged.contains("denied"), "{logged}");
        // An S3 archive is named by its address.
        let s3 = Archive::open_with_options(
            "s3://backups/bank",
            [("aws_access_key_id", "k"), ("aws_secret_access_key", "s")],
        )
        .unwrap();
        assert!(public_message(&s3, &errors[0]).contains("s3://backups/bank"));
    }
}
