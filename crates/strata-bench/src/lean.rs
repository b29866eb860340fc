//! A lean HTTP/1.1 load generator for appends, in the manner of `wrk`: one keep-alive TCP
//! connection per task, the request pre-serialized once and only the event id (and a fixed-width
//! amount) rewritten in place before each send, the answer parsed just far enough to know its
//! status and where it ends.
//!
//! The load generator shares the machine with the server, so every microsecond it spends is one
//! the server does not get; the general-purpose client ([`strata_client::Client`]) costs
//! several times more per request. The measurement stays honest: each request is a real
//! `POST /streams/{stream}` of one event with its own event id, and only a complete `200`
//! answer (sent once the event is durable) counts; anything else is an error.

use std::time::{Duration, Instant};

use strata_core::{EventData, ExpectedVersion, Uuid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::limits::{BENCH_HTTP_READ_BUFFER_BYTES, BENCH_HTTP_RECONNECT_DELAY_MS};

/// Where to send plain-HTTP requests, split out of a base URL.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    host: String,
    /// A path prefix of the base URL (no trailing slash), usually empty.
    base_path: String,
}

impl Endpoint {
    /// `http://host[:port][/base]`; `None` for anything else (HTTPS goes through the full
    /// client).
    pub(crate) fn parse(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        let addr = if authority.starts_with('[') {
            if authority.contains("]:") {
                authority.to_owned()
            } else {
                format!("{authority}:80")
            }
        } else if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Some(Endpoint {
            addr,
            host: authority.to_owned(),
            base_path: path.to_owned(),
        })
    }
}

/// One request, serialized once; [`AppendRequest::next`] rewrites the event id in place.
struct AppendRequest {
    bytes: Vec<u8>,
    id_at: usize,
    amount_at: usize,
    id_base: u128,
}

/// A stand-in the template is built with, then found and overwritten per request.
const ID_MARK: Uuid = Uuid::from_u128(0x5eed_5eed_5eed_4eed_9eed_5eed_5eed_5eed);

impl AppendRequest {
    fn new(ep: &Endpoint, token: Option<&str>, stream: &str, id_base: u128) -> Option<Self> {
        if !stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        let event = EventData::json(
            "MoneyDeposited",
            &serde_json::json!({ "amount": 100, "currency": "EUR", "note": "x".repeat(40) }),
        )
        .ok()?
        .with_id(ID_MARK);
        let body = strata_wire::append_body(ExpectedVersion::Any, &[event]);
        let mut bytes = format!(
            "POST {}/streams/{stream} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n",
            ep.base_path, ep.host
        )
        .into_bytes();
        if let Some(t) = token {
            bytes.extend_from_slice(format!("authorization: Bearer {t}\r\n").as_bytes());
        }
        bytes.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        let body_at = bytes.len();
        bytes.extend_from_slice(&body);
        let find =
            |needle: &[u8]| memchr::memmem::find(&bytes[body_at..], needle).map(|i| body_at + i);
        let id_at = find(ID_MARK.hyphenated().to_string().as_bytes())?;
        let amount_at = find(b"\"amount\":100")? + b"\"amount\":".len();
        Some(AppendRequest {
            bytes,
            id_at,
            amount_at,
            id_base,
        })
    }

    /// The request for the `n`th append: a fresh event id (a random v4-shaped id per run and
    /// connection, plus `n`) and an amount of `100 + n % 900` (always three digits).
    fn next(&mut self, n: u64) -> &[u8] {
        let mut id = self.id_base.wrapping_add(u128::from(n)).to_be_bytes();
        // Version 4, RFC 4122 variant.
        id[6] = (id[6] & 0x0f) | 0x40;
        id[8] = (id[8] & 0x3f) | 0x80;
        let id = Uuid::from_bytes(id);
        let mut text = [0u8; 36];
        id.hyphenated().encode_lower(&mut text);
        self.bytes[self.id_at..self.id_at + 36].copy_from_slice(&text);
        let a = 100 + n % 900;
        self.bytes[self.amount_at] = b'0' + (a / 100) as u8;
        self.bytes[self.amount_at + 1] = b'0' + (a / 10 % 10) as u8;
        self.bytes[self.amount_at + 2] = b'0' + (a % 10) as u8;
        &self.bytes
    }
}

/// What one answer was.
enum Answer {
    /// A complete `200`; `close` when the server ends the connection after it.
    Ok { close: bool },
    /// Any other complete answer.
    Failed { close: bool },
}

/// Reads one whole response from `stream` into `buf` (which may hold bytes already read) and
/// removes it from `buf`.
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Answer> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    loop {
        if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
            let head = &buf[..end];
            let status = head
                .get(9..12)
                .filter(|_| head.starts_with(b"HTTP/1.1 "))
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| bad("not an HTTP/1.1 status line"))?;
            let mut length = None;
            let mut close = false;
            for line in head.split(|b| *b == b'\n').skip(1) {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let Some(colon) = line.iter().position(|b| *b == b':') else {
                    continue;
                };
                let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
                if name.eq_ignore_ascii_case(b"content-length") {
                    length = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<usize>().ok());
                } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                    return Err(bad("a chunked answer"));
                } else if name.eq_ignore_ascii_case(b"connection") {
                    close = value.eq_ignore_ascii_case(b"close");
                }
            }
            let length = length.ok_or_else(|| bad("an answer without content-length"))?;
            let total = end + 4 + length;
            while buf.len() < total {
                buf.reserve(total - buf.len());
                if stream.read_buf(buf).await? == 0 {
                    return Err(bad("the connection closed mid-answer"));
                }
            }
            buf.drain(..total);
            return Ok(if status == 200 {
                Answer::Ok { close }
            } else {
                Answer::Failed { close }
            });
        }
        buf.reserve(BENCH_HTTP_READ_BUFFER_BYTES);
        if stream.read_buf(buf).await? == 0 {
            return Err(bad("the connection closed"));
        }
    }
}

async fn connect(ep: &Endpoint) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(&ep.addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One connection's loop until `deadline` or `max` requests: one append in flight at a time.
/// Returns the latency histogram, the appends answered `200`, and the errors.
pub(crate) async fn append_loop(
    ep: Endpoint,
    token: Option<String>,
    stream: String,
    id_base: u128,
    deadline: Instant,
    max: u64,
) -> (hdrhistogram::Histogram<u64>, u64, u64) {
    let mut h = crate::measure::histogram();
    let (mut ops, mut errors) = (0u64, 0u64);
    let Some(mut req) = AppendRequest::new(&ep, token.as_deref(), &stream, id_base) else {
        return (h, 0, 1);
    };
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(BENCH_HTTP_READ_BUFFER_BYTES);
    let mut n = 0u64;
    while n < max && Instant::now() < deadline {
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match connect(&ep).await {
                Ok(s) => {
                    buf.clear();
                    conn.insert(s)
                }
                Err(_) => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(BENCH_HTTP_RECONNECT_DELAY_MS)).await;
                    continue;
                }
            },
        };
        let t = Instant::now();
        let bytes = req.next(n);
        n += 1;
        let answer = match s.write_all(bytes).await {
            Ok(()) => read_answer(s, &mut buf).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(Answer::Ok { close }) => {
                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                ops += 1;
                if close {
                    conn = None;
                }
            }
            Ok(Answer::Failed { close }) => {
                errors += 1;
                if close {
                    conn = None;
                }
            }
            Err(_) => {
                errors += 1;
                conn = None;
            }
        }
    }
    (h, ops, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends a fixed number of events through a server on loopback, for counting the
    /// instructions one HTTP append costs (client and server, user space):
    /// `valgrind --tool=callgrind <test binary> lean::tests::fixed_appends --ignored`.
    #[test]
    #[ignore]
    fn fixed_appends() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("strata-lean-{}", std::process::id()));
            let store = strata_log::LogStore::open(&dir).unwrap();
            let state = strata_server::AppState::new(
                std::sync::Arc::new(store),
                strata_server::ServerConfig::default(),
            )
            .unwrap();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(strata_server::serve(
                listener,
                state.clone(),
                strata_server::app(state),
                None,
                std::future::pending(),
            ));
            let ep = Endpoint::parse(&url).unwrap();
            let deadline = Instant::now() + Duration::from_secs(3600);
            let (connections, per) = (16u64, 250u64);
            let tasks: Vec<_> = (0..connections)
                .map(|c| {
                    tokio::spawn(append_loop(
                        ep.clone(),
                        None,
                        format!("bench-{c}"),
                        u128::from(c + 1) << 64,
                        deadline,
                        per,
                    ))
                })
                .collect();
            let mut ok = 0;
            for t in tasks {
                let (_, ops, errors) = t.await.unwrap();
                assert_eq!(errors, 0);
                ok += ops;
            }
            assert_eq!(ok, connections * per);
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (e.addr.as_str(), e.base_path.as_str()),
            ("127.0.0.1:8080", "")
        );
        let e = Endpoint::parse("http://example.com/api/").unwrap();
        assert_eq!(
            (e.addr.as_str(), e.host.as_str()),
            ("example.com:80", "example.com")
        );
        assert_eq!(e.base_path, "/api");
        assert!(Endpoint::parse("https://example.com").is_none());
    }

    #[test]
    fn each_request_has_its_own_event_id() {
        let ep = Endpoint::parse("http://127.0.0.1:1").unwrap();
        let mut r = AppendRequest::new(&ep, Some("t"), "bench-1", 7 << 64).unwrap();
        let parse = |bytes: &[u8]| {
            let text = std::str::from_utf8(bytes).unwrap().to_owned();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains("authorization: Bearer t"));
            assert!(head.contains(&format!("content-length: {}", body.len())));
            let b = strata_wire::AppendBody::parse(body.as_bytes()).unwrap();
            let (_, events) = b.into_events().unwrap();
            (events[0].event_id.unwrap(), events[0].data.clone())
        };
        let (a, da) = parse(r.next(0));
        let (b, db) = parse(r.next(1));
        assert_ne!(a, b);
        assert_ne!(a, ID_MARK);
        assert_eq!(a.get_version_num(), 4);
        assert!(String::from_utf8(da).unwrap().contains("\"amount\":100"));
        assert!(String::from_utf8(db).unwrap().contains("\"amount\":101"));
    }
}
