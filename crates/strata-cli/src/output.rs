//! Printing results for people (text) or scripts (`--json`, one document per line).

use std::path::Path;

use serde_json::{json, Value};
use strata_core::{
    AppendResult, CategorySummary, Page, RecordedEvent, StreamId, StreamInfo, StreamSummary,
};
use strata_log::{OpenReport, VerifyReport};

pub struct Printer {
    json: bool,
}

/// An event as a JSON document, with the mission's field names.
pub fn event_json(e: &RecordedEvent) -> Value {
    let mut v = json!({
        "eventId": e.event_id,
        "streamId": e.stream_id.as_str(),
        "category": e.category(),
        "eventType": e.event_type,
        "version": e.stream_version,
        "position": e.position.0,
        "recordedAt": e.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "contentType": e.content_type,
        "metadata": e.metadata.as_map(),
    });
    match e.data_json() {
        Some(d) => v["data"] = d,
        None => v["dataHex"] = Value::String(e.data.iter().map(|b| format!("{b:02x}")).collect()),
    }
    v
}

impl Printer {
    pub fn new(json: bool) -> Self {
        Printer { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    pub fn note(&self, text: &str) {
        if self.json {
            println!("{}", json!({ "note": text }));
        } else {
            println!("{text}");
        }
    }

    pub fn appended(&self, stream: &StreamId, r: &AppendResult) {
        if self.json {
            println!(
                "{}",
                json!({
                    "streamId": stream.as_str(),
                    "version": r.stream_version,
                    "positions": r.positions.iter().map(|p| p.0).collect::<Vec<_>>(),
                    "replayed": r.replayed,
                })
            );
        } else if r.replayed {
            println!(
                "already appended: {} event(s) with these ids are in {stream} at version {}, position {}; nothing was written",
                r.positions.len(),
                r.stream_version,
                r.last_position()
            );
        } else {
            println!(
                "appended {} event(s) to {stream}: now at version {}, position {}",
                r.positions.len(),
                r.stream_version,
                r.last_position()
            );
        }
    }

    /// A lifecycle change of `stream` (`what`: deleted, tombstoned, truncated), whose event
    /// `r` was appended to `written` (the stream, or its metastream).
    pub fn lifecycle(&self, what: &str, stream: &StreamId, written: &StreamId, r: &AppendResult) {
        if self.json {
            println!(
                "{}",
                json!({
                    "streamId": stream.as_str(),
                    "change": what,
                    "writtenTo": written.as_str(),
                    "version": r.stream_version,
                    "position": r.last_position().0,
                })
            );
        } else {
            println!(
                "{what} {stream}: recorded in {written} at version {}, position {}",
                r.stream_version,
                r.last_position()
            );
        }
    }

    /// A finished scavenge.
    pub fn scavenged(&self, r: &strata_core::scavenge::ScavengeReport) {
        let p = &r.progress;
        if self.json {
            println!(
                "{}",
                json!({
                    "streamsExamined": p.streams_examined,
                    "eventsRemoved": p.events_removed,
                    "elapsedSeconds": r.elapsed.as_secs_f64(),
                })
            );
        } else {
            println!(
                "scavenged: {} events removed from {} streams with lifecycle state in {:.1}s",
                p.events_removed,
                p.streams_examined,
                r.elapsed.as_secs_f64()
            );
        }
    }

    /// A finished archive run.
    pub fn archived(
        &self,
        url: &str,
        r: &strata_archive::ArchiveReport,
        evicted: Option<&strata_log::EvictReport>,
    ) {
        if self.json {
            let mut out = json!({
                "archive": url,
                "segmentsArchived": r.segments,
                "events": r.events,
                "bytes": r.bytes,
                "segmentsAlreadyArchived": r.already_archived,
                "archivedBelowPosition": r.archived_below,
                "elapsedSeconds": r.elapsed.as_secs_f64(),
            });
            if let Some(e) = evicted {
                out["segmentsEvicted"] = json!(e.evicted);
                out["bytesFreed"] = json!(e.bytes);
                out["segmentsReadFromArchive"] = json!(e.archived_segments);
                out["segmentsKeptDiffering"] = json!(e.differ);
                out["segmentsKeptMissing"] = json!(e.missing);
            }
            println!("{out}");
        } else {
            println!(
                "archived to {url}: {} segment(s), {} events, {} bytes in {:.1}s ({} held already); every event below position {} is archived",
                r.segments,
                r.events,
                r.bytes,
                r.elapsed.as_secs_f64(),
                r.already_archived,
                r.archived_below
            );
            if let Some(e) = evicted {
                println!(
                    "gave back {} bytes of {} segment(s); {} segment(s) are now read from the archive",
                    e.bytes, e.evicted, e.archived_segments
                );
                if !e.differ.is_empty() {
                    println!(
                        "kept {} segment(s) local: a scavenge rewrote them after they were archived",
                        e.differ.len()
                    );
                }
                if !e.missing.is_empty() {
                    println!(
                        "kept {} segment(s) local: the archive lacks them or holds them cut short",
                        e.missing.len()
                    );
                }
            }
        }
    }

    /// A finished restore.
    pub fn restored(&self, dir: &Path, r: &strata_archive::RestoreReport) {
        if self.json {
            println!(
                "{}",
                json!({
                    "dataDir": dir,
                    "segments": r.segments,
                    "events": r.events,
                    "bytes": r.bytes,
                    "nextPosition": r.next_position,
                    "removedBetweenScavenges": r.removed,
                    "elapsedSeconds": r.elapsed.as_secs_f64(),
                })
            );
        } else {
            println!(
                "restored into {}: {} segment(s), {} events, {} bytes in {:.1}s; the next append goes to position {}",
                dir.display(),
                r.segments,
                r.events,
                r.bytes,
                r.elapsed.as_secs_f64(),
                r.next_position
            );
            if r.removed > 0 {
                println!(
                    "{} archived events were left out: segments archived after different scavenges held versions the later one had removed from the store",
                    r.removed
                );
            }
        }
    }

    /// An archive checked whole.
    pub fn archive_verified(&self, url: &str, r: &strata_archive::ArchiveVerifyReport) {
        if self.json {
            println!(
                "{}",
                json!({
                    "ok": true,
                    "archive": url,
                    "segments": r.segments,
                    "events": r.events,
                    "bytes": r.bytes,
                    "streams": r.store.streams,
                })
            );
        } else {
            println!(
                "{url}: OK: {} events in {} streams, {} segment(s), {} bytes; every file's SHA-256 and every record's CRC, position and version checked",
                r.events, r.store.streams, r.segments, r.bytes
            );
        }
    }

    /// A stream's metadata.
    pub fn metadata(&self, stream: &StreamId, r: &strata_core::StreamMetadataRecord) {
        let metadata = serde_json::to_value(&r.metadata).unwrap_or_default();
        if self.json {
            println!(
                "{}",
                json!({ "streamId": stream.as_str(), "version": r.version, "metadata": metadata })
            );
            return;
        }
        match r.version {
            None => println!("stream {stream} has no metadata"),
            Some(v) => println!("stream {stream}, metadata version {v}: {metadata}"),
        }
    }

    pub fn event(&self, e: &RecordedEvent) {
        if self.json {
            println!("{}", event_json(e));
        } else {
            let data = match e.data_json() {
                Some(d) => d.to_string(),
                None => format!("<{} bytes of {}>", e.data.len(), e.content_type),
            };
            let meta = if e.metadata.is_empty() {
                String::new()
            } else {
                format!("  meta {}", Value::Object(e.metadata.as_map().clone()))
            };
            println!(
                "#{:<6} {}@{}  {}  {}  {data}{meta}",
                e.position.0,
                e.stream_id,
                e.stream_version,
                e.event_type,
                e.recorded_at.format("%Y-%m-%d %H:%M:%S%.3f"),
            );
        }
    }

    pub fn streams(&self, page: &Page<StreamSummary>) {
        if self.json {
            println!("{}", json!({ "streams": page.items, "next": page.next }));
            return;
        }
        println!(
            "{:<40} {:<20} {:>10} {:>12}",
            "STREAM", "CATEGORY", "EVENTS", "LAST POS"
        );
        for s in &page.items {
            println!(
                "{:<40} {:<20} {:>10} {:>12}",
                s.stream_id, s.category, s.event_count, s.last_position.0
            );
        }
        if let Some(n) = &page.next {
            println!("more: --after {n}");
        }
    }

    pub fn categories(&self, page: &Page<CategorySummary>) {
        if self.json {
            println!("{}", json!({ "categories": page.items, "next": page.next }));
            return;
        }
        println!("{:<30} {:>10} {:>12}", "CATEGORY", "STREAMS", "EVENTS");
        for c in &page.items {
            println!(
                "{:<30} {:>10} {:>12}",
                c.category, c.stream_count, c.event_count
            );
        }
        if let Some(n) = &page.next {
            println!("more: --after {n}");
        }
    }

    pub fn info(&self, i: &StreamInfo) {
        if self.json {
            println!("{}", serde_json::to_string(i).unwrap_or_default());
            return;
        }
        if !i.exists {
            println!("stream {} does not exist", i.stream_id);
            return;
        }
        println!("stream          {}", i.stream_id);
        println!("category        {}", i.stream_id.category());
        println!("events          {}", i.event_count);
        if let Some(v) = i.current_version {
            println!("current version {v}");
        }
        if let Some(p) = i.last_position {
            println!("last position   {}", p.0);
        }
        if let (Some(a), Some(b)) = (i.first_recorded_at, i.last_recorded_at) {
            println!("first recorded  {}", a.to_rfc3339());
            println!("last recorded   {}", b.to_rfc3339());
        }
    }

    pub fn store_info(&self, dir: &Path, s: &strata_log::IndexStats) {
        if self.json {
            println!(
                "{}",
                json!({
                    "dataDir": dir,
                    "events": s.events,
                    "eventIdsInMemory": s.event_ids_in_memory,
                    "eventIdFiles": s.event_id_files,
                    "eventIdBytes": s.event_id_bytes,
                    "entriesInMemory": s.entries_in_memory,
                    "entryFiles": s.entry_files,
                    "entryBytes": s.entry_bytes,
                    "positionListBytes": s.position_list_bytes,
                    "archivedSegments": s.archived_segments,
                    "archiveCache": s.archive_cache.map(|c| json!({
                        "cachedBytes": c.cached_bytes,
                        "limitBytes": c.limit_bytes,
                        "hits": c.hits,
                        "fetches": c.fetches,
                        "fetchedBytes": c.fetched_bytes,
                    })),
                })
            );
            return;
        }
        println!("data directory        {}", dir.display());
        println!("events                {}", s.events);
        println!(
            "event ids in memory   {} (the open segment's; the rest are in {} segment index files)",
            s.event_ids_in_memory, s.event_id_files
        );
        let mib = |b: u64| b as f64 / 1_048_576.0;
        println!("event id memory       {:.1} MiB", mib(s.event_id_bytes));
        println!(
            "entries in memory     {} (the open segment's; the rest are read from {} segment index files)",
            s.entries_in_memory, s.entry_files
        );
        println!("entry memory          {:.1} MiB", mib(s.entry_bytes));
        println!(
            "position list memory  {:.1} MiB (stream, category and event type lists)",
            mib(s.position_list_bytes)
        );
        if s.archived_segments > 0 {
            println!(
                "archived segments     {} (their records are read from the archive)",
                s.archived_segments
            );
        }
        if let Some(c) = &s.archive_cache {
            println!(
                "archive cache         {:.1} of {:.1} MiB; {} blocks fetched ({:.1} MiB), {} read from the cache",
                mib(c.cached_bytes),
                mib(c.limit_bytes),
                c.fetches,
                mib(c.fetched_bytes),
                c.hits
            );
        }
    }

    pub fn verify(&self, dir: &Path, r: &VerifyReport) {
        if self.json {
            println!(
                "{}",
                json!({
                    "ok": true,
                    "segments": r.segments,
                    "events": r.events,
                    "streams": r.streams,
                    "bytes": r.bytes,
                    "indexedEvents": r.indexed_events,
                    "tornTail": r.torn_tail.as_ref().map(|(f, o, why)| json!({"file": f, "offset": o, "reason": why})),
                })
            );
            return;
        }
        println!(
            "{}: OK: {} events in {} streams, {} segment(s), {} bytes; every record's CRC, position and version checked",
            dir.display(),
            r.events,
            r.streams,
            r.segments,
            r.bytes
        );
        match r.indexed_events {
            Some(n) => println!(
                "the index file records {n} acknowledged events: all are in the log, where it places them"
            ),
            None => println!(
                "no index file: nothing records which events were acknowledged, so a log cut at a record boundary cannot be told from one that ended there"
            ),
        }
        if let Some((f, o, why)) = &r.torn_tail {
            println!(
                "note: an incomplete write at {} offset {o} ({why}) will be cut on the next open{}",
                f.display(),
                if r.indexed_events.is_some() {
                    "; it lies past every event the index file records as acknowledged, as a write torn by a crash does"
                } else {
                    ""
                }
            );
        }
    }

    /// `strata repair` without `--accept-data-loss` on a directory where nothing is missing.
    pub fn nothing_to_repair(&self, dir: &Path, r: &VerifyReport) {
        if self.json {
            println!(
                "{}",
                json!({"ok": true, "events": r.events, "dataLoss": null, "changed": false})
            );
            return;
        }
        println!(
            "{}: nothing to repair: no acknowledged event is missing ({} events checked); nothing was changed",
            dir.display(),
            r.events
        );
    }

    /// `strata repair --accept-data-loss`: what was cut.
    pub fn repaired(&self, dir: &Path, r: &OpenReport) {
        if self.json {
            let loss = r.data_loss.as_ref().map(|l| {
                json!({
                    "file": l.file,
                    "offset": l.offset,
                    "fromPosition": l.from_position,
                    "eventsAtLeast": l.events_at_least,
                    "cause": l.cause.to_string(),
                })
            });
            println!(
                "{}",
                json!({"ok": true, "events": r.events, "dataLoss": loss, "changed": loss.is_some()})
            );
            return;
        }
        match &r.data_loss {
            Some(l) => println!(
                "{}: cut for good: {l}. The store now holds {} events (the next append takes position {}).",
                dir.display(),
                r.events,
                r.events
            ),
            None => println!(
                "{}: nothing to repair: no acknowledged event is missing; the store holds {} events",
                dir.display(),
                r.events
            ),
        }
    }
}
