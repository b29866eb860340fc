//! Every answer a reader gets from a store, as one string: for tests that change how a store
//! keeps its events (a scavenge, a restore) and must change no answer.

use strata_core::{EventStore, ReadAllOptions, ReadStreamOptions, RecordedEvent, StreamId};

/// `$all` forward in pages of 7 and backward, then each of `streams` forward, backward (3)
/// and its info, written out with `{:?}`: two stores that answer alike give equal strings.
pub async fn every_answer<S: EventStore + ?Sized>(store: &S, streams: &[StreamId]) -> String {
    let mut out = String::new();
    let mut all: Vec<RecordedEvent> = Vec::new();
    let mut from = strata_core::Position(0);
    loop {
        let page = store
            .read_all(ReadAllOptions::forward().from(from).limit(7))
            .await
            .expect("a page of $all");
        all.extend(page.events);
        from = page.next.expect("a next position");
        if page.is_end {
            break;
        }
    }
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
