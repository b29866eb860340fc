//! `strata streams`: streams (or categories) with their event counts, a page at a time.

use anyhow::Result;
use clap::Args;
use strata_core::ListOptions;

use crate::cli::Cli;
use crate::output::Printer;

#[derive(Args)]
pub struct StreamsArgs {
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

pub async fn run(cli: &Cli, a: &StreamsArgs, p: &Printer) -> Result<()> {
    let store = cli.open().await?;
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
