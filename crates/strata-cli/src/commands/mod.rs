//! One module per command (or small family of commands). Each has its arguments and a `run`
//! that takes the shared command line and a [`Printer`](crate::output::Printer).

pub mod append;
pub mod archive;
pub mod bench;
pub mod info;
pub mod lifecycle;
pub mod projections;
pub mod read;
pub mod serve;
pub mod streams;
pub mod subjects;
pub mod tail;
pub mod token;
pub mod tour;
pub mod verify;

use anyhow::Result;
use clap::Args;
use strata_core::{Filter, StreamId};

/// A stream id from the command line.
fn stream_arg(s: &str) -> Result<StreamId> {
    StreamId::new(s).map_err(Into::into)
}

/// The `$all` filter of `read` and `tail`.
#[derive(Args, Clone)]
pub struct FilterArgs {
    /// Only these event types (repeatable).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Only these categories (repeatable).
    #[arg(long = "category")]
    categories: Vec<String>,
    /// Only streams whose id starts with this.
    #[arg(long)]
    prefix: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        let mut f = Filter::default()
            .event_types(self.types.clone())
            .categories(self.categories.clone());
        f.stream_prefix = self.prefix.clone();
        f
    }
}
