//! The client against canned answers from a socket of the test's own: how each kind of answer
//! becomes a value or a typed error, how reads page, and how a subscription resumes.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use strata_client::{Client, ClientError, ErrorCode};
use strata_core::{
    ActualVersion, AppendError, EventData, EventStore, ExpectedVersion, Metadata, Position,
    ReadError, ReadStreamOptions, RecordedEvent, StreamId, CONTENT_TYPE_JSON,
};
use strata_wire::EventJson;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One canned answer: status, content type, body.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn json(status: u16, body: &serde_json::Value) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
    }
}

/// A request as the test server saw it: the request line and the lower-cased header lines.
#[derive(Debug)]
struct Seen {
    line: String,
    headers: Vec<String>,
}

/// Serves `answers`, one per connection, in order; each request is sent on the channel.
async fn serve(answers: Vec<Answer>) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for a in answers {
            let (mut socket, _) = listener.accept().await.unwrap();
            let seen = read_request(&mut socket).await;
            tx.send(seen).unwrap();
            let head = format!(
                "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                a.status,
                a.content_type,
                a.body.len(),
            );
            socket.write_all(head.as_bytes()).await.unwrap();
            socket.write_all(&a.body).await.unwrap();
            socket.shutdown().await.unwrap();
        }
    });
    (url, rx)
}

async fn read_request(socket: &mut TcpStream) -> Seen {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        socket.read_exact(&mut byte).await.unwrap();
        buf.push(byte[0]);
    }
    let text = String::from_utf8(buf).unwrap();
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap().to_owned();
    let headers: Vec<String> = lines
        .filter(|l| !l.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let length = headers
        .iter()
        .find_map(|h| h.strip_prefix("content-length: "))
        .map_or(0, |n| n.parse().unwrap());
    let mut body = vec![0u8; length];
    socket.read_exact(&mut body).await.unwrap();
    Seen { line, headers }
}

fn event(version: u64) -> RecordedEvent {
    RecordedEvent {
        event_id: strata_core::Uuid::from_u128(u128::from(version) + 1),
        stream_id: StreamId::new("account-1").unwrap(),
        stream_version: version,
        position: Position(100 + version),
        recorded_at: strata_core::timestamp_from_micros(1_700_000_000_000_000),
        event_type: "Deposited".to_owned(),
        content_type: CONTENT_TYPE_JSON.to_owned(),
        data: format!(r#"{{"amount": {version}}}"#).into_bytes(),
        metadata: Metadata::new(),
    }
}

fn stream_page(events: &[RecordedEvent], next: Option<&str>) -> Answer {
    let page = strata_wire::StreamPage {
        stream_id: "account-1".into(),
        direction: strata_core::Direction::Forward,
        events: events.iter().map(EventJson::new).collect(),
        next: next.map(str::to_owned),
    };
    // Serialized directly, as the server does: a `Value` would rewrite the payloads.
    Answer {
        status: 200,
        content_type: "application/json",
        body: serde_json::to_vec(&page).unwrap(),
    }
}

#[tokio::test]
async fn a_problem_document_is_a_typed_error() {
    let doc = serde_json::json!({
        "type": "urn:strata:problem:wrong_expected_version",
        "status": 409,
        "code": "wrong_expected_version",
        "detail": "stream account-1 was expected at no stream but is at 3; nothing was written",
        "expected": "no_stream",
        "actual": 3,
    });
    let (url, mut seen) = serve(vec![json(409, &doc), json(409, &doc)]).await;
    let client = Client::builder(&url).token("secret").build().unwrap();
    let events = [EventData::json("Opened", &serde_json::json!({})).unwrap()];

    let err = client
        .append_raw("account-1", ExpectedVersion::NoStream, &events)
        .await
        .unwrap_err();
    assert!(err.is(ErrorCode::WrongExpectedVersion), "{err:?}");
    let ClientError::Problem {
        status,
        code,
        doc: got,
        ..
    } = err
    else {
        panic!("not a problem: {err:?}");
    };
    assert_eq!((status, code), (409, Some(ErrorCode::WrongExpectedVersion)));
    assert_eq!(got["actual"], 3);
    let request = seen.recv().await.unwrap();
    assert_eq!(request.line, "POST /streams/account-1 HTTP/1.1");
    assert!(
        request
            .headers
            .contains(&"authorization: bearer secret".to_owned()),
        "{request:?}"
    );

    // Through the store trait, the same answer is the store's own error.
    let stream = StreamId::new("account-1").unwrap();
    let err = client
        .append(&stream, ExpectedVersion::NoStream, events.to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AppendError::WrongExpectedVersion {
                actual: ActualVersion(Some(3)),
                expected: ExpectedVersion::NoStream,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_answer_that_is_no_problem_document_keeps_its_text() {
    let page = Answer {
        status: 502,
        content_type: "text/html",
        body: b"<html>bad gateway</html>".to_vec(),
    };
    let (url, _seen) = serve(vec![page]).await;
    let err = Client::new(&url)
        .unwrap()
        .get_json("/all/head")
        .await
        .unwrap_err();
    match err {
        ClientError::Problem {
            status: 502,
            code: None,
            detail,
            ..
        } => assert_eq!(detail, "<html>bad gateway</html>"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_success_of_the_wrong_shape_is_an_unexpected_answer() {
    let (url, _seen) = serve(vec![
        json(200, &serde_json::json!({ "positions": "many" })),
        Answer {
            status: 200,
            content_type: "text/plain",
            body: b"hello".to_vec(),
        },
    ])
    .await;
    let client = Client::new(&url).unwrap();
    let err = client
        .append_raw("account-1", ExpectedVersion::Any, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::UnexpectedAnswer { .. }),
        "{err:?}"
    );
    let err = client.head().await.unwrap_err();
    let ReadError::Storage(backend) = &err else {
        panic!("expected a storage error, got {err:?}");
    };
    // The client's own error is kept as the cause, for a caller that looks closer.
    let cause = std::error::Error::source(backend)
        .and_then(|s| s.downcast_ref::<ClientError>())
        .expect("the client error is the cause");
    assert!(
        matches!(cause, ClientError::UnexpectedAnswer { .. }),
        "{cause:?}"
    );
}

#[tokio::test]
async fn an_answer_over_the_limit_is_refused_before_it_is_read() {
    // A server that announces one byte more than the client reads, sends one, and waits.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        read_request(&mut socket).await;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n[",
            strata_client::limits::ANSWER_MAX_BYTES + 1
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        // Hold the connection open: the client must not wait for the body.
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest).await;
    });
    let err = Client::new(&url)
        .unwrap()
        .get_json("/all")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::AnswerTooLarge { limit_bytes } if limit_bytes == strata_client::limits::ANSWER_MAX_BYTES as u64),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_server_that_is_not_there_is_a_transport_error_with_its_cause() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = Client::new(&url)
        .unwrap()
        .get_json("/all/head")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
    // Through the `EventStore` interface it is `Unavailable`, the transport error its cause.
    let err = Client::new(&url).unwrap().head().await.unwrap_err();
    let ReadError::Unavailable(backend) = &err else {
        panic!("expected unavailable, got {err:?}");
    };
    let cause = std::error::Error::source(backend).and_then(|s| s.downcast_ref::<ClientError>());
    assert!(
        matches!(cause, Some(ClientError::Transport { .. })),
        "{cause:?}"
    );
}

#[tokio::test]
async fn a_stream_read_follows_the_pages_it_needs() {
    let events: Vec<RecordedEvent> = (0..3).map(event).collect();
    let (url, mut seen) = serve(vec![
        stream_page(
            &events[..2],
            Some("/streams/account-1?direction=forward&from=2&limit=3"),
        ),
        stream_page(&events[2..], None),
    ])
    .await;
    let client = Client::new(&url).unwrap();
    // The server answers fewer events than asked, with a next link: the client asks for the
    // rest from where the page ended.
    let got = client
        .read_stream(
            &StreamId::new("account-1").unwrap(),
            ReadStreamOptions::forward().limit(3),
        )
        .await
        .unwrap();
    assert_eq!(got, events);
    assert_eq!(
        seen.recv().await.unwrap().line,
        "GET /streams/account-1?direction=forward&limit=3 HTTP/1.1"
    );
    assert_eq!(
        seen.recv().await.unwrap().line,
        "GET /streams/account-1?direction=forward&from=2&limit=1 HTTP/1.1"
    );
}

fn sse(frames: &str) -> Answer {
    Answer {
        status: 200,
        content_type: "text/event-stream",
        body: frames.as_bytes().to_vec(),
    }
}

fn frame(e: &RecordedEvent) -> String {
    format!(
        "event: event\nid: {}\ndata: {}\n\n",
        e.position.0,
        serde_json::to_string(&EventJson::new(e)).unwrap()
    )
}

#[tokio::test]
async fn a_follow_resumes_after_the_last_event_it_returned() {
    let (a, b) = (event(0), event(1));
    let problem = serde_json::json!({
        "status": 503,
        "code": "unavailable",
        "detail": "the store is unavailable",
        "resumeAfter": 101,
    });
    let (url, mut seen) = serve(vec![
        // The first connection ends after one event; the second is told it lagged (and the
        // server closes it); the third delivers the next event, then fails.
        sse(&frame(&a)),
        sse("event: lagged\ndata: {\"resumeAfter\":100}\n\n"),
        sse(&format!("{}event: error\ndata: {problem}\n\n", frame(&b))),
    ])
    .await;
    let client = Client::new(&url).unwrap();
    let mut follow = client.follow("/subscriptions/all?from=start".to_owned(), None);
    let first = tokio::time::timeout(Duration::from_secs(10), follow.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, a);
    let second = tokio::time::timeout(Duration::from_secs(10), follow.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second, b);
    assert_eq!(follow.last_id(), Some(101));
    let err = follow.next().await.unwrap_err();
    assert!(err.is(ErrorCode::Unavailable), "{err:?}");

    let first_request = seen.recv().await.unwrap();
    assert_eq!(
        first_request.line,
        "GET /subscriptions/all?from=start HTTP/1.1"
    );
    assert!(!first_request
        .headers
        .iter()
        .any(|h| h.starts_with("last-event-id")));
    for _ in 0..2 {
        let resumed = seen.recv().await.unwrap();
        assert!(
            resumed.headers.contains(&"last-event-id: 100".to_owned()),
            "{resumed:?}"
        );
    }
}
