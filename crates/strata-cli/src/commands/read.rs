//! `strata read`: a stream, or `$all`, a page at a time; optionally as it was at a time.

use anyhow::Result;
use clap::Args;
use strata_core::{Position, ReadAllOptions, ReadStreamOptions};

use super::{stream_arg, FilterArgs};
use crate::cli::Cli;
use crate::output::Printer;

#[derive(Args)]
pub struct ReadArgs {
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

pub async fn run(cli: &Cli, a: &ReadArgs, p: &Printer) -> Result<()> {
    let store = cli.open().await?;
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
