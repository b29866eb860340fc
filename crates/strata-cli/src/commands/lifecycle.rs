//! `strata delete`, `strata truncate` and `strata meta`: a stream's lifecycle; `strata
//! scavenge`: reclaiming what those hide.

use anyhow::{Context, Result};
use clap::Args;
use strata_core::scavenge::{ScavengeError, ScavengeProgress};
use strata_core::{ExpectedVersion, StreamMetadata};

use super::stream_arg;
use crate::cli::Cli;
use crate::commands::append::parse_expected;
use crate::output::Printer;

#[derive(Args)]
pub struct DeleteArgs {
    /// The stream.
    stream: String,
    /// Expected version of the stream: `any`, `stream_exists` or a version number.
    #[arg(long, default_value = "any")]
    expected: String,
    /// Delete for good: the stream can never be written or read again (a tombstone).
    /// Without it the delete is soft: appending again re-creates the stream, its versions
    /// continuing after the last.
    #[arg(long)]
    tombstone: bool,
}

#[derive(Args)]
pub struct TruncateArgs {
    /// The stream.
    stream: String,
    /// The first version to keep: the events below it are hidden (and reclaimed by a
    /// scavenge). Truncation only moves forward.
    #[arg(long)]
    before: u64,
}

#[derive(Args)]
pub struct MetaArgs {
    /// The stream.
    stream: String,
    /// Replace the metadata with this JSON object (`maxCount`, `maxAgeSeconds`,
    /// `truncateBefore`, `custom`); without it, print the metadata.
    #[arg(long, value_name = "JSON")]
    set: Option<String>,
    /// With --set: the metadata's expected version (`any`, `no_stream`, or the version
    /// `strata meta STREAM` printed).
    #[arg(long, default_value = "any", requires = "set")]
    expected: String,
}

pub async fn delete(cli: &Cli, a: &DeleteArgs, p: &Printer) -> Result<()> {
    let store = cli.open().await?;
    let stream = stream_arg(&a.stream)?;
    let expected = parse_expected(&a.expected)?;
    if a.tombstone {
        let r = store.tombstone_stream(&stream, expected).await?;
        p.lifecycle("tombstoned", &stream, &stream, &r);
    } else {
        let r = store.delete_stream(&stream, expected).await?;
        p.lifecycle("deleted", &stream, &stream.metastream(), &r);
    }
    Ok(())
}

pub async fn truncate(cli: &Cli, a: &TruncateArgs, p: &Printer) -> Result<()> {
    let store = cli.open().await?;
    let stream = stream_arg(&a.stream)?;
    let r = store.truncate_stream(&stream, a.before).await?;
    p.lifecycle("truncated", &stream, &stream.metastream(), &r);
    Ok(())
}

pub async fn meta(cli: &Cli, a: &MetaArgs, p: &Printer) -> Result<()> {
    let store = cli.open().await?;
    let stream = stream_arg(&a.stream)?;
    if let Some(json) = &a.set {
        let metadata = StreamMetadata::from_json(json.as_bytes())
            .context("--set must be a JSON object of stream metadata")?;
        let expected: ExpectedVersion = parse_expected(&a.expected)?;
        store
            .set_stream_metadata(&stream, expected, metadata)
            .await?;
    }
    let record = store.stream_metadata(&stream).await?;
    p.metadata(&stream, &record);
    Ok(())
}

/// `strata scavenge`: removes for good what deleted, truncated, tombstoned and expired
/// streams hide, with a progress bar on a terminal's stderr.
pub async fn scavenge(cli: &Cli, p: &Printer) -> Result<()> {
    let store = cli.open().await?;
    let bar = indicatif::ProgressBar::hidden();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "scavenging [{bar:30}] {pos}/{len} streams, {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let on_progress = |s: ScavengeProgress| {
        if bar.is_hidden() && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        bar.set_length(s.streams_total.max(s.streams_examined));
        bar.set_position(s.streams_examined);
        bar.set_message(format!("{} events removed", s.events_removed));
    };
    let result = store.scavenge(&on_progress).await;
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            p.scavenged(&report);
            Ok(())
        }
        Err(ScavengeError::Unsupported) => {
            anyhow::bail!("{} cannot scavenge", cli.location())
        }
        Err(e) => Err(e).context(format!("scavenging {}", cli.location())),
    }
}
