//! `strata tail`: follow a stream or `$all`, in this process or from a server over SSE.

use anyhow::Result;
use clap::Args;
use strata_core::{EventStore, Position, SubscribeFrom, SubscriptionTarget};

use super::{stream_arg, FilterArgs};
use crate::cli::Cli;
use crate::output::Printer;

#[derive(Args)]
pub struct TailArgs {
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

pub async fn run(cli: &Cli, a: &TailArgs, p: &Printer) -> Result<()> {
    if a.stream.is_empty() {
        anyhow::bail!(
            "the stream is empty: to follow the global order, give '$all' (in single quotes, so that the shell leaves the $ alone)"
        );
    }
    if a.stream == "all" {
        // A stream may be called `all`; say what it is not, without refusing it.
        eprintln!(
            "following the stream named all; to follow the global order, give '$all' (in single quotes)"
        );
    }
    let store = cli.open().await?;
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
        let client = cli.server_client(url)?;
        // Fix "from now" to a position (or version) here, so that a reconnect resumes
        // exactly where this started even before the first event arrives.
        let after = match (&target, from) {
            (_, SubscribeFrom::AfterPosition(p)) => Some(p.0),
            (_, SubscribeFrom::AfterVersion(v)) => Some(v),
            (_, SubscribeFrom::Start) => None,
            (SubscriptionTarget::All(_), SubscribeFrom::End) => client.head().await?.map(|p| p.0),
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
