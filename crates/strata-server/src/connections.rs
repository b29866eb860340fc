//! Connections: the accept loop behind [`crate::serve`], with its bounds.
//!
//! - At most `connections_max` connections are served at once. One past the cap is answered
//!   `503 overloaded` with `Retry-After` (at most `SERVER_REJECTING_CONNECTIONS_MAX` such
//!   answers at a time; past that a new connection is closed unanswered).
//! - A connection has `header_read_timeout_ms` to send a whole request head: from its accept
//!   for the first request (the TLS handshake included), from the head's first byte for later
//!   ones. Between requests, a kept-alive connection may wait `keep_alive_idle_timeout_ms`.
//!   A connection past either is closed. A request in flight (an SSE subscription, say) has no
//!   such deadline: subscriptions have their own keep-alives and slow-subscriber bound.
//! - A request head is at most `SERVER_REQUEST_HEAD_MAX_BYTES`, which also bounds a
//!   connection's read buffer.
//!
//! A small watchdog per connection keeps these deadlines: the connection's reads, the router's
//! calls and the end of each answer tell it which phase the connection is in.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::Router;
use axum_server::accept::Accept;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::error::{ApiError, ErrorCode};
use crate::limits;
use crate::{AppState, ServeError, TlsFiles};

/// The deadlines of one connection.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    header_read: Duration,
    keep_alive_idle: Duration,
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request's first byte since `since`; `first` for a new connection.
    Idle { since: Instant, first: bool },
    /// A request head is arriving, its first byte at `since`.
    Head { since: Instant },
    /// Requests are being answered.
    Busy { requests: usize },
}

/// What the watchdog of one connection knows.
struct Activity {
    phase: Mutex<Phase>,
    /// HTTP/2 frames (settings, pings) arrive between requests, so on an HTTP/2 connection a
    /// read does not start a request head.
    http2: std::sync::atomic::AtomicBool,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            phase: Mutex::new(Phase::Idle {
                since: Instant::now(),
                first: true,
            }),
            http2: std::sync::atomic::AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// Bytes arrived from the client.
    fn bytes_read(&self, first_bytes: &[u8]) {
        let mut phase = self.phase.lock();
        if let Phase::Idle { first, .. } = *phase {
            if first && first_bytes.starts_with(b"PRI * HTTP/2.0") {
                self.http2.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if !self.http2.load(std::sync::atomic::Ordering::Relaxed) && !first {
                *phase = Phase::Head {
                    since: Instant::now(),
                };
                drop(phase);
                self.changed.notify_waiters();
            }
        }
    }

    /// The router was handed a request: its head is complete.
    fn request_started(&self) {
        let mut phase = self.phase.lock();
        *phase = match *phase {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            _ => Phase::Busy { requests: 1 },
        };
        drop(phase);
        self.changed.notify_waiters();
    }

    /// A request's answer was sent whole (or abandoned).
    fn request_ended(&self) {
        let mut phase = self.phase.lock();
        if let Phase::Busy { requests } = *phase {
            *phase = if requests > 1 {
                Phase::Busy {
                    requests: requests - 1,
                }
            } else {
                Phase::Idle {
                    since: Instant::now(),
                    first: false,
                }
            };
        }
        drop(phase);
        self.changed.notify_waiters();
    }

    /// Completes when the connection has overstayed its phase.
    async fn expired(&self, deadlines: Deadlines) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let deadline = match *self.phase.lock() {
                Phase::Idle { since, first: true } | Phase::Head { since } => {
                    Some(since + deadlines.header_read)
                }
                Phase::Idle {
                    since,
                    first: false,
                } => Some(since + deadlines.keep_alive_idle),
                Phase::Busy { .. } => None,
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => return,
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Ends a request in its connection's [`Activity`] when dropped: with the answer's body (sent
/// whole or abandoned), or with the request's future if it never answered.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A connection's byte stream, telling its [`Activity`] when bytes arrive, and completing the
/// HTTP parser's own answers to requests it cannot read (a malformed request line, header or
/// `Content-Length`, a URI or head too long), which it sends with an empty body, into problem
/// documents.
pub(crate) struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
    /// The problem-document answer still to be written, and how much of it was.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> Watched<T> {
    fn new(inner: T, activity: Arc<Activity>) -> Self {
        Watched {
            inner,
            activity,
            pending: None,
        }
    }
}

/// The answer to send instead of `head` when `head` is the HTTP parser's own empty-bodied
/// answer to a request it could not read. The parser answers only before a request reaches the
/// router (never while one is in flight), with a head alone, `Content-Length: 0`, and none of
/// the headers the router puts on every answer (`x-request-id`).
fn parser_answer(head: &[u8]) -> Option<Vec<u8>> {
    if !(head.starts_with(b"HTTP/1.1 4") || head.starts_with(b"HTTP/1.0 4"))
        || !head.ends_with(b"\r\n\r\n")
    {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?.to_ascii_lowercase();
    if text.contains("x-request-id:") || !text.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let error = match &head[9..12] {
        b"400" => ApiError::new(
            ErrorCode::InvalidRequest,
            "the request could not be read as HTTP/1.1: its request line (a space or a control \
             character in the path, say), a header, or its Content-Length or Transfer-Encoding \
             is malformed",
        )
        .with("field", serde_json::json!("request")),
        b"414" => ApiError::new(
            ErrorCode::UriTooLong,
            "the request's URI is longer than the server reads (64 KiB)",
        ),
        b"431" => ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!(
                "the request's head (request line and headers) is larger than the server reads \
                 ({} bytes, or more than 100 headers)",
                limits::SERVER_REQUEST_HEAD_MAX_BYTES
            ),
        ),
        _ => return None,
    };
    let status = crate::error::status_of(error.code);
    let body = error.to_json().to_string();
    let date = text
        .split("\r\n")
        .find(|l| l.starts_with("date:"))
        .map(|l| format!("{l}\r\n"))
        .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n{date}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        crate::error::PROBLEM_JSON,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl<T: AsyncWrite + Unpin> Watched<T> {
    /// Takes `buf` in place of the parser's answer when it is one.
    fn replaces(&mut self, buf: &[u8]) -> bool {
        if self.pending.is_some() || matches!(*self.activity.phase.lock(), Phase::Busy { .. }) {
            return false;
        }
        match parser_answer(buf) {
            Some(answer) => {
                self.pending = Some((answer, 0));
                true
            }
            None => false,
        }
    }

    /// Writes what remains of a replaced answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, done)) = &mut self.pending {
            if *done == answer.len() {
                self.pending = None;
                break;
            }
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        if self.replaces(buf) {
            // Taken whole: what is not written yet goes out on the next write or flush.
            if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        // The parser writes its answer as a head alone, in the first slice.
        let rest_empty = bufs.iter().skip(1).all(|b| b.is_empty());
        if let Some(first) = bufs.first().filter(|_| rest_empty) {
            if self.replaces(first) {
                if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(first.len()));
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The `503 overloaded` answer for a connection past the cap.
fn over_capacity(max: u32) -> Response {
    let mut res = ApiError::new(
        ErrorCode::Overloaded,
        format!("the server has {max} open connections, its limit; retry shortly"),
    )
    .with("limit", serde_json::json!(max))
    .into_response();
    res.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    res
}

/// Everything a connection task needs.
struct Shared {
    state: AppState,
    router: Router,
    tls: Option<RustlsAcceptor>,
    deadlines: Deadlines,
    builder: auto::Builder<TokioExecutor>,
    rejecting: Arc<Semaphore>,
}

/// Serves `router` on `listener` until `shutdown` completes; see [`crate::serve`].
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    state: AppState,
    router: Router,
    tls: Option<TlsFiles>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let config = state.config();
    let deadlines = Deadlines {
        header_read: Duration::from_millis(config.header_read_timeout_ms),
        keep_alive_idle: Duration::from_millis(config.keep_alive_idle_timeout_ms),
    };
    let tls = match tls {
        None => None,
        Some(files) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = RustlsConfig::from_pem_file(&files.cert_file, &files.key_file)
                .await
                .map_err(|source| ServeError::Tls {
                    cert: files.cert_file.clone(),
                    key: files.key_file.clone(),
                    source,
                })?;
            Some(RustlsAcceptor::new(config).handshake_timeout(deadlines.header_read))
        }
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(limits::SERVER_REQUEST_HEAD_MAX_BYTES);
    builder
        .http2()
        .max_header_list_size(limits::SERVER_REQUEST_HEAD_MAX_BYTES as u32);
    let shared = Arc::new(Shared {
        state: state.clone(),
        router,
        tls,
        deadlines,
        builder,
        rejecting: Arc::new(Semaphore::new(limits::SERVER_REJECTING_CONNECTIONS_MAX)),
    });
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            r = listener.accept() => r,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // wait a moment rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(
                    limits::SERVER_ACCEPT_ERROR_BACKOFF_MS,
                ))
                .await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        match state.connection_slots().clone().try_acquire_owned() {
            Ok(slot) => {
                let shared = shared.clone();
                let watcher = graceful.watcher();
                tasks.spawn(async move {
                    let _slot = slot;
                    let activity = Arc::new(Activity::new());
                    tokio::select! {
                        _ = connection(&shared, tcp, activity.clone(), watcher) => {}
                        _ = activity.expired(shared.deadlines) => {
                            shared.state.metrics().connection_timed_out();
                        }
                    }
                });
            }
            Err(_) => match shared.rejecting.clone().try_acquire_owned() {
                Ok(permit) => {
                    shared.state.metrics().connection_rejected();
                    let shared = shared.clone();
                    tasks.spawn(async move {
                        let _permit = permit;
                        let _ = tokio::time::timeout(
                            shared.deadlines.header_read,
                            reject(&shared, tcp),
                        )
                        .await;
                    });
                }
                Err(_) => {
                    shared.state.metrics().connection_rejected();
                    drop(tcp);
                }
            },
        }
    }
    drop(listener);
    // Let open requests finish, for a while; subscriptions never do, so they end with it.
    let grace = Duration::from_millis(limits::SERVER_SHUTDOWN_GRACE_MS);
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
    tasks.shutdown().await;
    Ok(())
}

/// Serves one connection (after its TLS handshake, if any) until it closes.
async fn connection(
    shared: &Shared,
    tcp: TcpStream,
    activity: Arc<Activity>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let router = shared.router.clone();
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        service_activity.request_started();
        let guard = RequestGuard(service_activity.clone());
        let call = router.clone().oneshot(req.map(Body::new));
        async move {
            let res = match call.await {
                Ok(res) => res,
                Err(never) => match never {},
            };
            // The request ends when its answer has been sent whole (or dropped).
            Ok::<_, Infallible>(res.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &guard;
                    frame
                }))
            }))
        }
    });
    match &shared.tls {
        None => {
            let io = TokioIo::new(Watched::new(tcp, activity));
            let conn = shared.builder.serve_connection(io, service);
            let _ = watcher.watch(conn.into_owned()).await;
        }
        Some(acceptor) => {
            let Ok((stream, ())) = acceptor.accept(tcp, ()).await else {
                return;
            };
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                activity
                    .http2
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let io = TokioIo::new(Watched::new(stream, activity));
            let conn = shared.builder.serve_connection(io, service);
            let _ = watcher.watch(conn.into_owned()).await;
        }
    }
}

/// Answers every request of a connection past the cap with `503 overloaded`, then closes it.
async fn reject(shared: &Shared, tcp: TcpStream) {
    let max = shared.state.config().connections_max;
    let service = hyper::service::service_fn(move |_req: hyper::Request<Incoming>| async move {
        Ok::<_, Infallible>(over_capacity(max))
    });
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(shared.deadlines.header_read)
        .keep_alive(false)
        .max_buf_size(limits::SERVER_REQUEST_HEAD_MAX_BYTES);
    match &shared.tls {
        None => {
            let _ = http1.serve_connection(TokioIo::new(tcp), service).await;
        }
        Some(acceptor) => {
            if let Ok((stream, ())) = acceptor.accept(tcp, ()).await {
                let _ = http1.serve_connection(TokioIo::new(stream), service).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINES: Deadlines = Deadlines {
        header_read: Duration::from_secs(10),
        keep_alive_idle: Duration::from_secs(75),
    };

    /// How long `activity` takes to expire from now, in paused time.
    async fn expires_after(activity: &Activity) -> Duration {
        let start = Instant::now();
        activity.expired(DEADLINES).await;
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn each_phase_has_its_deadline() {
        // A new connection: the header read timeout from its accept, bytes or not.
        let a = Activity::new();
        a.bytes_read(b"GET / HT");
        assert_eq!(expires_after(&a).await, DEADLINES.header_read);

        // Between requests: the idle timeout; once a head starts, the header read timeout
        // from its first byte.
        let a = Activity::new();
        a.request_started();
        a.request_ended();
        assert_eq!(expires_after(&a).await, DEADLINES.keep_alive_idle);
        a.bytes_read(b"GET");
        assert_eq!(expires_after(&a).await, DEADLINES.header_read);

        // A request in flight has no deadline; it starts when the last answer ends.
        let a = Arc::new(Activity::new());
        a.request_started();
        a.request_started();
        let watch = tokio::spawn({
            let a = a.clone();
            async move { expires_after(&a).await }
        });
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        a.request_ended();
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        assert!(!watch.is_finished());
        a.request_ended();
        assert_eq!(
            watch.await.unwrap(),
            Duration::from_secs(7_200) + DEADLINES.keep_alive_idle
        );

        // On HTTP/2, frames between requests do not start a head.
        let a = Activity::new();
        a.bytes_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        a.request_started();
        a.request_ended();
        a.bytes_read(b"ping");
        assert_eq!(expires_after(&a).await, DEADLINES.keep_alive_idle);
    }
}
