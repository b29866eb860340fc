//! The server's connection and request-body bounds, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use strata_server::{app, AppState, ServerConfig};
use strata_testkit::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// Longest any step here waits for its signal before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

struct Server {
    addr: std::net::SocketAddr,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    fn start(config: ServerConfig) -> Server {
        let state = AppState::new(Arc::new(MemoryStore::new()), config).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = state.clone();
        let task = tokio::spawn(async move {
            strata_server::serve(listener, serving.clone(), app(serving), None, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Server {
            addr,
            state,
            stop: Some(stop),
            task,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("the server stops")
            .unwrap();
    }
}

/// One HTTP/1.1 answer read from `conn`: status, head, body (by Content-Length).
async fn answer(conn: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + 4 + len {
                let n = tokio::time::timeout(PATIENCE, conn.read(&mut chunk))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(n > 0, "the connection closed inside a body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let status = head[9..12].parse().unwrap();
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            return (status, head, body);
        }
        let n = tokio::time::timeout(PATIENCE, conn.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "the connection closed before an answer: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Waits until the server closes `conn` (EOF, or a reset).
async fn closed(conn: &mut TcpStream) {
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, conn.read(&mut chunk))
            .await
            .expect("the server closes the connection")
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Waits until `done` holds (checked every few milliseconds), failing after [`PATIENCE`].
async fn until(done: impl Fn() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the condition in time");
}

const GET_HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

async fn metrics(server: &Server) -> String {
    let mut conn = server.connect().await;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    answer(&mut conn).await.2
}

#[tokio::test]
async fn a_connection_that_sends_no_whole_request_head_is_closed() {
    let server = Server::start(ServerConfig {
        header_read_timeout_ms: 300,
        // Far beyond this test: any close seen here is the header read timeout.
        keep_alive_idle_timeout_ms: 3_600_000,
        ..ServerConfig::default()
    });
    // Nothing at all.
    let mut silent = server.connect().await;
    // Half a request head.
    let mut slow = server.connect().await;
    slow.write_all(b"GET /health HTTP/1.1\r\nhost:")
        .await
        .unwrap();
    closed(&mut silent).await;
    closed(&mut slow).await;
    // A kept-alive connection whose next head arrives only in part is closed too.
    let mut kept = server.connect().await;
    kept.write_all(GET_HEALTH).await.unwrap();
    assert_eq!(answer(&mut kept).await.0, 200);
    kept.write_all(b"GET /health HT").await.unwrap();
    closed(&mut kept).await;
    assert_eq!(
        metric(&metrics(&server).await, "strata_connection_timeouts_total"),
        3
    );
    server.stop().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let server = Server::start(ServerConfig {
        // Far beyond this test: any close seen here is the idle timeout.
        header_read_timeout_ms: 600_000,
        keep_alive_idle_timeout_ms: 300,
        ..ServerConfig::default()
    });
    let mut conn = server.connect().await;
    for _ in 0..3 {
        conn.write_all(GET_HEALTH).await.unwrap();
        assert_eq!(answer(&mut conn).await.0, 200);
    }
    closed(&mut conn).await;
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_cap_get_503_with_retry_after() {
    let server = Server::start(ServerConfig {
        connections_max: 3,
        ..ServerConfig::default()
    });
    // Three idle connections (no token needed to open one) take every slot.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(server.connect().await);
    }
    // Wait until the server has taken all three.
    until(|| server.state.connections_open() == 3).await;
    // The next one is answered at once, not left hanging.
    let mut extra = server.connect().await;
    extra.write_all(GET_HEALTH).await.unwrap();
    let (status, head, body) = answer(&mut extra).await;
    assert_eq!(status, 503, "{head}\n{body}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["code"], "overloaded");
    assert_eq!(doc["limit"], 3);
    closed(&mut extra).await;
    // A slot freed is a slot served.
    drop(idle.pop());
    let mut status = 0;
    for _ in 0..2_000 {
        let mut conn = server.connect().await;
        conn.write_all(GET_HEALTH).await.unwrap();
        status = answer(&mut conn).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(status, 200);
    assert!(server.state.connections_open() <= 3);
    let text = server.state.metrics().render();
    assert!(metric(&text, "strata_connections_rejected_total") >= 1);
    drop(idle);
    server.stop().await;
}

/// A request body that the test feeds by hand.
fn fed_body() -> (tokio::sync::mpsc::Sender<bytes::Bytes>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    (tx, Body::from_stream(stream))
}

fn append_of(bytes: usize) -> String {
    let filler = "x".repeat(bytes.saturating_sub(60));
    let body = format!(r#"{{"events":[{{"eventType":"T","data":"{filler}"}}]}}"#);
    assert!(body.len() <= bytes);
    format!("{body:<bytes$}")
}

#[tokio::test]
async fn request_bodies_in_flight_are_bounded_in_bytes() {
    let state = AppState::new(
        Arc::new(MemoryStore::new()),
        ServerConfig {
            request_body_max_bytes: 40_000,
            request_bodies_in_flight_max_bytes: 64_000,
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let router = app(state.clone());
    let body = append_of(40_000);
    // A body that declares 40,000 bytes and sends half of them holds its share.
    let (tx, slow_body) = fed_body();
    let slow = tokio::spawn(
        router.clone().oneshot(
            Request::post("/streams/a-1")
                .header("content-length", "40000")
                .body(slow_body)
                .unwrap(),
        ),
    );
    tx.send(bytes::Bytes::copy_from_slice(&body.as_bytes()[..20_000]))
        .await
        .unwrap();
    until(|| state.request_body_bytes_in_flight() == 40_000).await;
    // Another 40,000 do not fit in 64,000: refused at once, with Retry-After.
    let r = router
        .clone()
        .oneshot(
            Request::post("/streams/a-1")
                .header("content-length", "40000")
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let doc: Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(doc["code"], "overloaded");
    // Nor does a body without a Content-Length, charged as it arrives.
    let (tx2, chunked) = fed_body();
    let second = tokio::spawn(
        router
            .clone()
            .oneshot(Request::post("/streams/a-1").body(chunked).unwrap()),
    );
    tx2.send(bytes::Bytes::copy_from_slice(&body.as_bytes()[..20_000]))
        .await
        .unwrap();
    tx2.send(bytes::Bytes::copy_from_slice(&body.as_bytes()[20_000..]))
        .await
        .unwrap();
    drop(tx2);
    let r = tokio::time::timeout(PATIENCE, second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 503);
    // The first finishes, and its share comes back.
    tx.send(bytes::Bytes::copy_from_slice(&body.as_bytes()[20_000..]))
        .await
        .unwrap();
    drop(tx);
    let r = tokio::time::timeout(PATIENCE, slow)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(state.request_body_bytes_in_flight(), 0);
    let r = router
        .oneshot(
            Request::post("/streams/a-1")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(state.request_body_bytes_in_flight(), 0);
    assert!(state
        .metrics()
        .render()
        .contains("strata_request_bodies_refused_total 2"));
}

#[tokio::test(start_paused = true)]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let state = AppState::new(
        Arc::new(MemoryStore::new()),
        ServerConfig {
            request_body_read_timeout_ms: 1_000,
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let (tx, body) = fed_body();
    tx.send(bytes::Bytes::from_static(b"{\"events\":"))
        .await
        .unwrap();
    let r = app(state.clone())
        .oneshot(
            Request::post("/streams/a-1")
                .header("content-length", "100")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 408);
    assert_eq!(state.request_body_bytes_in_flight(), 0);
    drop(tx);
}

#[tokio::test]
async fn requests_the_http_parser_refuses_get_problem_documents() {
    let server = Server::start(ServerConfig::default());
    let long_uri = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    let big_head = format!(
        "GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "b".repeat(120_000)
    );
    let huge_head = format!(
        "GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "b".repeat(1_000_000)
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a bad Content-Length",
            b"POST /streams/a-1 HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n{}".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "two Content-Lengths",
            b"POST /streams/a-1 HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "a raw space in the path",
            b"GET /streams/a b HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
            400,
            "invalid_request",
        ),
        ("a URI past 64 KiB", long_uri.into_bytes(), 414, "uri_too_long"),
        ("a head past its limit", big_head.into_bytes(), 431, "headers_too_large"),
        (
            "a head far past its limit",
            huge_head.into_bytes(),
            431,
            "headers_too_large",
        ),
    ];
    for (what, request, status, code) in cases {
        let mut conn = server.connect().await;
        conn.write_all(&request).await.unwrap();
        let (got, head, body) = answer(&mut conn).await;
        assert_eq!(got, status, "{what}: {head}\n{body}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{what}: {head}"
        );
        let doc: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
        assert_eq!(doc["code"], code, "{what}");
        assert_eq!(doc["status"], status, "{what}");
        closed(&mut conn).await;
    }
    // The server still answers well-formed requests.
    let mut conn = server.connect().await;
    conn.write_all(GET_HEALTH).await.unwrap();
    assert_eq!(answer(&mut conn).await.0, 200);
    server.stop().await;
}
