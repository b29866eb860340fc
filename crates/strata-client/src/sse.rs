//! Server-sent events: the raw stream ([`SseStream`]) and the subscription that reconnects by
//! itself ([`Follow`]).

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::Value;
use strata_core::RecordedEvent;
use strata_wire::sse;

use crate::limits::{
    FOLLOW_CONNECT_ATTEMPTS_MAX, FOLLOW_CONNECT_RETRY_DELAY_MS, FOLLOW_RESUME_DELAY_MS,
    SSE_FRAME_MAX_BYTES,
};
use crate::{Client, ClientError};

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent); see [`strata_wire::sse`] for Strata's.
    pub event: String,
    /// The `id:` field.
    pub id: Option<String>,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

type Body = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// A server-sent-event response, parsed as it arrives. It buffers at most one event
/// ([`SSE_FRAME_MAX_BYTES`]) beyond what the caller has taken.
pub struct SseStream {
    body: Body,
    buf: Vec<u8>,
    /// Where the unparsed part of `buf` starts.
    start: usize,
    /// The server's base URL, for errors.
    url: String,
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("buffered_bytes", &(self.buf.len() - self.start))
            .finish_non_exhaustive()
    }
}

impl SseStream {
    pub(crate) fn new(body: Body, url: String) -> Self {
        SseStream {
            body,
            buf: Vec::new(),
            start: 0,
            url,
        }
    }

    /// The next chunk of the response as it came off the connection, unparsed (for load
    /// generators that scan it themselves); `None` when the server closed the stream. Do not
    /// mix with [`SseStream::next`].
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        match self.body.next().await {
            Some(Ok(chunk)) => Ok(Some(chunk)),
            Some(Err(source)) => Err(ClientError::Transport {
                url: self.url.clone(),
                source,
            }),
            None => Ok(None),
        }
    }

    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            if let Some(e) = self.parse_one() {
                return Ok(Some(e));
            }
            // What is left holds no whole event: it is the start of the next one.
            if self.buf.len() - self.start > SSE_FRAME_MAX_BYTES {
                return Err(ClientError::EventTooLarge {
                    limit_bytes: SSE_FRAME_MAX_BYTES as u64,
                });
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    // Drop what was parsed before growing the buffer.
                    if self.start > 0 {
                        self.buf.drain(..self.start);
                        self.start = 0;
                    }
                    self.buf.extend_from_slice(&chunk)
                }
                Some(Err(source)) => {
                    return Err(ClientError::Transport {
                        url: self.url.clone(),
                        source,
                    })
                }
                None => return Ok(None),
            }
        }
    }

    fn parse_one(&mut self) -> Option<SseEvent> {
        loop {
            // An event ends at a blank line.
            let text = &self.buf[self.start..];
            let (end, next) = find_blank_line(text)?;
            let block = String::from_utf8_lossy(&text[..end]);
            let mut ev = SseEvent {
                event: String::new(),
                id: None,
                data: String::new(),
            };
            let mut has_data = false;
            for line in block.split('\n') {
                let line = line.strip_suffix('\r').unwrap_or(line);
                if line.starts_with(':') {
                    continue;
                }
                let (k, v) = line.split_once(':').unwrap_or((line, ""));
                let v = v.strip_prefix(' ').unwrap_or(v);
                match k {
                    "event" => ev.event = v.to_owned(),
                    "id" => ev.id = Some(v.to_owned()),
                    "data" => {
                        if has_data {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(v);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            self.start += next;
            if ev.event.is_empty() {
                ev.event.push_str("message");
            }
            // A block of comments only (a keep-alive) is no event.
            if has_data || ev.id.is_some() {
                return Some(ev);
            }
        }
    }
}

/// (end of the block, start of the next) of the first blank line.
fn find_blank_line(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' {
            if b.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// A subscription that reconnects by itself; see [`Client::follow`].
#[derive(Debug)]
pub struct Follow {
    client: Client,
    path: String,
    last_id: Option<u64>,
    stream: Option<SseStream>,
}

impl Follow {
    pub(crate) fn new(client: Client, path: String, after: Option<u64>) -> Self {
        Follow {
            client,
            path,
            last_id: after,
            stream: None,
        }
    }

    /// The id (position, or version on a stream subscription) of the last event returned.
    pub fn last_id(&self) -> Option<u64> {
        self.last_id
    }

    /// The next event. Reconnects, resuming after [`Follow::last_id`], when the connection
    /// drops or the server disconnects a subscriber that fell behind; returns an error for
    /// what a reconnect cannot fix (a problem document, an event it cannot read), or after
    /// [`FOLLOW_CONNECT_ATTEMPTS_MAX`] failed attempts in a row to reach the server.
    pub async fn next(&mut self) -> Result<RecordedEvent, ClientError> {
        let mut failures = 0u32;
        loop {
            let stream = match &mut self.stream {
                Some(s) => s,
                None => match self.client.sse(&self.path, self.last_id).await {
                    Ok(s) => self.stream.insert(s),
                    Err(e @ ClientError::Transport { .. }) => {
                        failures += 1;
                        if failures >= FOLLOW_CONNECT_ATTEMPTS_MAX {
                            return Err(e);
                        }
                        tokio::time::sleep(Duration::from_millis(FOLLOW_CONNECT_RETRY_DELAY_MS))
                            .await;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            match stream.next().await {
                Ok(Some(e)) if e.event == sse::EVENT => {
                    let event = strata_wire::parse_event(e.data.as_bytes())
                        .map_err(|source| ClientError::UnreadableEvent { source })?;
                    if let Some(id) = e.id.as_deref().and_then(|s| s.parse().ok()) {
                        self.last_id = Some(id);
                    }
                    return Ok(event);
                }
                Ok(Some(e)) if e.event == sse::ERROR => {
                    self.stream = None;
                    let doc: Value = serde_json::from_str(&e.data)
                        .map_err(|source| ClientError::UnexpectedAnswer { source })?;
                    let status = doc["status"]
                        .as_u64()
                        .and_then(|s| u16::try_from(s).ok())
                        .unwrap_or(500);
                    return Err(ClientError::from_problem_doc(status, doc));
                }
                // `lagged`: the server closes the stream after it; the next read sees the end.
                Ok(Some(_)) => {}
                Ok(None) | Err(ClientError::Transport { .. }) => {
                    self.stream = None;
                    tokio::time::sleep(Duration::from_millis(FOLLOW_RESUME_DELAY_MS)).await;
                }
                Err(e) => {
                    self.stream = None;
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_of(chunks: Vec<Vec<u8>>) -> SseStream {
        SseStream::new(
            Box::pin(futures::stream::iter(
                chunks.into_iter().map(|c| Ok(Bytes::from(c))),
            )),
            "http://test".to_owned(),
        )
    }

    async fn all(mut s: SseStream) -> Result<Vec<SseEvent>, ClientError> {
        let mut out = Vec::new();
        while let Some(e) = s.next().await? {
            out.push(e);
        }
        Ok(out)
    }

    fn ev(event: &str, id: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.to_owned(),
            id: id.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    const TEXT: &[u8] = b": keep-alive\n\nevent: event\nid: 7\ndata: {\"a\":1}\n\n\
        event: lagged\r\ndata: {}\r\n\r\ndata: one\ndata:two\n\n: only a comment\n\nid: 9\n\n";

    #[tokio::test(flavor = "current_thread")]
    async fn events_parse_however_the_bytes_are_cut() {
        let want = vec![
            ev("event", Some("7"), r#"{"a":1}"#),
            ev("lagged", None, "{}"),
            ev("message", None, "one\ntwo"),
            ev("message", Some("9"), ""),
        ];
        assert_eq!(all(stream_of(vec![TEXT.to_vec()])).await.unwrap(), want);
        for cut in 1..TEXT.len() {
            let chunks = vec![TEXT[..cut].to_vec(), TEXT[cut..].to_vec()];
            assert_eq!(all(stream_of(chunks)).await.unwrap(), want, "cut at {cut}");
        }
        let bytes = TEXT.iter().map(|b| vec![*b]).collect();
        assert_eq!(all(stream_of(bytes)).await.unwrap(), want);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_event_without_end_stops_at_the_limit() {
        // 64 KiB chunks of one `data:` line that never ends.
        let mut chunks = vec![b"data: ".to_vec()];
        let chunk = vec![b'x'; 64 * 1024];
        chunks.extend(std::iter::repeat_n(
            chunk,
            SSE_FRAME_MAX_BYTES / (64 * 1024) + 2,
        ));
        let mut s = stream_of(chunks);
        let err = s.next().await.unwrap_err();
        assert!(
            matches!(err, ClientError::EventTooLarge { limit_bytes } if limit_bytes == SSE_FRAME_MAX_BYTES as u64),
            "{err:?}"
        );
        assert!(s.buf.len() <= SSE_FRAME_MAX_BYTES + 2 * 64 * 1024);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_closed_stream_ends_without_a_half_event() {
        let s = stream_of(vec![b"event: event\nid: 1\ndata: {".to_vec()]);
        assert_eq!(all(s).await.unwrap(), Vec::new());
    }
}
