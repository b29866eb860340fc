//! `strata info`: what the store knows about one stream.

use anyhow::Result;
use clap::Args;

use super::stream_arg;
use crate::cli::Cli;
use crate::output::Printer;

#[derive(Args)]
pub struct InfoArgs {
    /// The stream.
    stream: String,
}

pub async fn run(cli: &Cli, a: &InfoArgs, p: &Printer) -> Result<()> {
    let store = cli.open().await?;
    let info = store.stream_info(&stream_arg(&a.stream)?).await?;
    p.info(&info);
    Ok(())
}
