//! `strata verify` and `strata repair`: check the embedded store's files, and open one whose
//! newest acknowledged events are missing by cutting them.

use anyhow::{Context, Result};
use clap::Args;
use strata_log::LogConfig;

use crate::cli::Cli;
use crate::output::Printer;

#[derive(Args)]
pub struct RepairArgs {
    /// Cut the missing events for good (the store then opens without them).
    #[arg(long)]
    accept_data_loss: bool,
}

pub async fn verify(cli: &Cli, args: &super::archive::VerifyArgs, p: &Printer) -> Result<()> {
    if let Some(url) = args.archive() {
        return super::archive::verify_archive(url, args.scratch(), p).await;
    }
    if cli.server.is_some() || cli.database_url.is_some() {
        anyhow::bail!("verify checks the embedded store's files: it works on --data only");
    }
    let dir = cli.data_dir();
    let r = crate::cli::store_error(strata_archive::verify_store(&dir))?;
    p.verify(&dir, &r);
    Ok(())
}

pub fn repair(cli: &Cli, args: &RepairArgs, p: &Printer) -> Result<()> {
    if cli.server.is_some() || cli.database_url.is_some() {
        anyhow::bail!("repair works on the embedded store's files: it works on --data only");
    }
    let dir = cli.data_dir();
    if !args.accept_data_loss {
        // Only say what would be cut.
        let r = crate::cli::store_error(strata_archive::verify_store(&dir))?;
        p.nothing_to_repair(&dir, &r);
        return Ok(());
    }
    let config = LogConfig {
        accept_data_loss: true,
        ..LogConfig::default()
    };
    let store = crate::cli::store_error(strata_archive::open_store(&dir, config))
        .with_context(|| format!("cannot open {}", dir.display()))?;
    let report = store.open_report().clone();
    drop(store);
    p.repaired(&dir, &report);
    Ok(())
}
