//! `strata info`: what the store knows about one stream, or (`--store`) about the embedded
//! store itself: its events and how much of its index is in memory.

use anyhow::Result;
use clap::Args;

use super::stream_arg;
use crate::cli::{open_log, Cli};
use crate::output::Printer;

#[derive(Args)]
pub struct InfoArgs {
    /// The stream.
    #[arg(required_unless_present = "store")]
    stream: Option<String>,
    /// Instead: the embedded store in --data (its events, and its index's memory).
    #[arg(long, conflicts_with = "stream")]
    store: bool,
}

pub async fn run(cli: &Cli, a: &InfoArgs, p: &Printer) -> Result<()> {
    if a.store {
        if cli.server.is_some() || cli.database_url.is_some() {
            anyhow::bail!(
                "--store describes the embedded store in a data directory: give --data (or nothing, for ./strata-data), not --server or --database-url"
            );
        }
        let store = open_log(&cli.data_dir())?;
        p.store_info(&cli.data_dir(), &store.index_stats());
        store.close().await?;
        return Ok(());
    }
    let Some(stream) = &a.stream else {
        anyhow::bail!("give a stream, or --store");
    };
    let store = cli.open().await?;
    let info = store.stream_info(&stream_arg(stream)?).await?;
    p.info(&info);
    Ok(())
}
