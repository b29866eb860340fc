//! `strata append`: one event to one stream.

use anyhow::{Context, Result};
use clap::Args;
use strata_core::{EventData, ExpectedVersion, Metadata, Uuid};

use super::stream_arg;
use crate::cli::Cli;
use crate::output::Printer;

#[derive(Args)]
pub struct AppendArgs {
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

pub async fn run(cli: &Cli, a: &AppendArgs, p: &Printer) -> Result<()> {
    let store = cli.open().await?;
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
