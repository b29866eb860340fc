//! `strata projections`: the projections recorded next to a data directory, with their
//! status, checkpoint and lag. Projections are application code, so they run (and are paused,
//! resumed and rebuilt) in the application that registers them; this command reads what they
//! recorded, from any process.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use strata::projection::SqliteReadModels;
use strata_core::EventStore;

use crate::output::Printer;

pub async fn list(data: &Path, store: &dyn EventStore, p: &Printer) -> Result<()> {
    let path = SqliteReadModels::path_next_to(data);
    if !path.exists() {
        p.note(&format!(
            "no projections have run against {} (no {})",
            data.display(),
            path.display()
        ));
        return Ok(());
    }
    let models =
        SqliteReadModels::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let stored = models.stored()?;
    let head = store.head().await?.map(|h| h.0);
    let head_time = match head {
        Some(h) => store
            .read_all(strata_core::ReadAllOptions::backward().limit(1))
            .await?
            .events
            .first()
            .map(|e| (h, e.recorded_at)),
        None => None,
    };
    if p.is_json() {
        for s in &stored {
            let lag = lag_events(head, s.checkpoint.map(|c| c.0));
            println!("{}", json!({ "projection": s, "lagEvents": lag }));
        }
        return Ok(());
    }
    println!(
        "{:<28} {:<11} {:>12} {:>10}  LAST ERROR",
        "PROJECTION", "STATUS", "CHECKPOINT", "LAG"
    );
    for s in &stored {
        let status = if s.rebuild_started {
            format!("{} (rebuilding)", s.status)
        } else {
            s.status.clone()
        };
        let checkpoint = s.checkpoint.map_or("-".to_owned(), |c| c.0.to_string());
        let lag = lag_events(head, s.checkpoint.map(|c| c.0));
        let error = match (&s.last_error, s.error_position, &s.error_event_id) {
            (Some(e), Some(pos), Some(id)) => format!("at position {pos} (event {id}): {e}"),
            (Some(e), _, _) => e.clone(),
            _ => String::new(),
        };
        println!(
            "{:<28} {:<11} {:>12} {:>10}  {}",
            s.name, status, checkpoint, lag, error
        );
    }
    if let Some((h, t)) = head_time {
        println!("store head: position {h}, recorded {}", t.to_rfc3339());
    }
    Ok(())
}

fn lag_events(head: Option<u64>, checkpoint: Option<u64>) -> u64 {
    match (head, checkpoint) {
        (Some(h), Some(c)) => h.saturating_sub(c),
        (Some(h), None) => h + 1,
        _ => 0,
    }
}
