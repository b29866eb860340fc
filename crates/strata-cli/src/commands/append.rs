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
    /// Expected version: `any`, `no_stream`, `stream_exists`, or a version number (the
    /// spellings `no-stream` and `exists` are accepted too).
    #[arg(long, default_value = "any")]
    expected: String,
    /// The event id (for idempotent retries); assigned by the store when absent.
    #[arg(long)]
    id: Option<Uuid>,
    /// Metadata as a JSON object (correlationId, causationId, userId, anything else).
    #[arg(long)]
    metadata: Option<String>,
}

pub(crate) fn parse_expected(s: &str) -> Result<ExpectedVersion> {
    if let Some(e) = ExpectedVersion::from_name(s) {
        return Ok(e);
    }
    Ok(ExpectedVersion::Exact(s.parse().with_context(|| {
        format!("--expected must be any, no_stream, stream_exists or a version number, not {s:?}")
    })?))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_takes_both_spellings_and_names_them_when_wrong() {
        assert_eq!(
            parse_expected("no_stream").unwrap(),
            ExpectedVersion::NoStream
        );
        assert_eq!(
            parse_expected("no-stream").unwrap(),
            ExpectedVersion::NoStream
        );
        assert_eq!(
            parse_expected("stream_exists").unwrap(),
            ExpectedVersion::StreamExists
        );
        assert_eq!(
            parse_expected("exists").unwrap(),
            ExpectedVersion::StreamExists
        );
        assert_eq!(parse_expected("7").unwrap(), ExpectedVersion::Exact(7));
        let e = format!("{:#}", parse_expected("nostream").unwrap_err());
        assert!(
            e.contains("any, no_stream, stream_exists or a version number"),
            "{e}"
        );
    }
}
