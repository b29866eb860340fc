//! What a reader gets from a store: every event of `$all`, and every answer as one string, for tests that change how a store
//! keeps its events (a scavenge, a restore) and must change no answer.

use strata_core::{EventStore, ReadAllOptions, ReadStreamOptions, RecordedEvent, StreamId};

/// Every event of `$all`, read forward in pages of `page` events.
pub async fn all_events<S: EventStore + ?Sized>(store: &S, page: usize) -> Vec<RecordedEvent> {
    let mut all: Vec<RecordedEvent> = Vec::new();
    let mut from = strata_core::Position(0);
    loop {
        let got = store
            .read_all(ReadAllOptions::forward().from(from).limit(page))
            .await
            .expect("a page of $all");
        all.extend(got.events);
        from = got.next.expect("a next position");
        if got.is_end {
            return all;
        }
    }
}

/// `$all` forward in pages of 7 and backward, then each of `streams` forward, backward (3)
/// and its info, written out with `{:?}`: two stores that answer alike give equal strings.
pub async fn every_answer<S: EventStore + ?Sized>(store: &S, streams: &[StreamId]) -> String {
    let mut out = String::new();
    let all = all_events(store, 7).await;
    out.push_str(&format!("{} {all:?}\n", all.len()));
    let back = store
        .read_all(ReadAllOptions::backward().limit(10_000))
        .await
        .expect("$all backward");
    out.push_str(&format!("{:?}\n", back.events));
    for stream in streams {
        let f = store
            .read_stream(stream, ReadStreamOptions::forward())
            .await;
        let b = store
            .read_stream(stream, ReadStreamOptions::backward().limit(3))
            .await;
        let info = store.stream_info(stream).await.expect("a stream's info");
        out.push_str(&format!("{f:?}\n{b:?}\n{info:?}\n"));
    }
    out
}
