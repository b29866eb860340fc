//! The client and its requests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use strata_core::{EventData, ExpectedVersion};
use strata_wire::{append_body, batch_append_body, paths, Appended, BatchAppended, ForgetAnswer};
use tokio::sync::watch;

use crate::limits::{ANSWER_MAX_BYTES, CONNECT_TIMEOUT_MS, IDLE_CONNECTIONS_PER_HOST_MAX};
use crate::{ClientError, Follow, SseStream};

/// An HTTP client of a Strata server. Cheap to clone: clones share their connections.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// For [`EventStore::changes`](strata_core::EventStore::changes): the client learns of no
    /// appends but its own, so the trait's polling subscription drives itself.
    pub(crate) changes: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// How to reach a server: see [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
    connect_timeout: Duration,
}

impl ClientBuilder {
    /// Sends `token` as `Authorization: Bearer` with every request.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Trusts the CA certificate in `pem_file` (PEM), for `https` with a private CA; it is
    /// read when the client is built.
    pub fn ca_cert(mut self, pem_file: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(pem_file.into());
        self
    }

    /// How long a connection attempt may take ([`CONNECT_TIMEOUT_MS`] by default).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The client. It connects on its first request, not here.
    pub fn build(self) -> Result<Client, ClientError> {
        let base = self.base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::InvalidUrl { url: self.base_url });
        }
        // reqwest's TLS comes without a crypto provider; a program that installed another
        // keeps it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(self.connect_timeout)
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST_MAX);
        if let Some(path) = self.ca_cert {
            let pem = match std::fs::read(&path) {
                Ok(pem) => pem,
                Err(source) => return Err(ClientError::ReadCaCert { path, source }),
            };
            let cert = match reqwest::Certificate::from_pem(&pem) {
                Ok(cert) => cert,
                Err(source) => return Err(ClientError::InvalidCaCert { path, source }),
            };
            b = b.add_root_certificate(cert);
        }
        let http = b.build().map_err(|source| ClientError::Setup { source })?;
        Ok(Client {
            http,
            base,
            token: self.token,
            changes: Arc::new(watch::channel(0).0),
        })
    }
}

impl Client {
    /// A client of the server at `base_url` (`http://127.0.0.1:2113`), without a token.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Client::builder(base_url).build()
    }

    /// A client of the server at `base_url`, with the options of [`ClientBuilder`].
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            token: None,
            ca_cert: None,
            connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS),
        }
    }

    /// The server's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A failure of the connection to this server.
    pub(crate) fn transport(&self, source: reqwest::Error) -> ClientError {
        ClientError::Transport {
            url: self.base.clone(),
            source,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends `request`: the body of a success, or the problem of a failure.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, ClientError> {
        let res = request
            .send()
            .await
            .map_err(|source| self.transport(source))?;
        let status = res.status();
        let body = read_body(res, &self.base).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(ClientError::problem(status.as_u16(), &body))
        }
    }

    /// `GET path` (with its query), the answer read as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.send(self.request(reqwest::Method::GET, path)).await?;
        serde_json::from_slice(&body).map_err(|source| ClientError::UnexpectedAnswer { source })
    }

    /// `GET path` (with its query) as JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        self.get(path).await
    }

    /// `POST path` with an empty body, as JSON (the projection operations).
    pub async fn post_json(&self, path: &str) -> Result<Value, ClientError> {
        let body = self.send(self.request(reqwest::Method::POST, path)).await?;
        serde_json::from_slice(&body).map_err(|source| ClientError::UnexpectedAnswer { source })
    }

    /// Sends `method path` with `body` (JSON) when given; the answer read as `T`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let body = self.send(request).await?;
        serde_json::from_slice(&body).map_err(|source| ClientError::UnexpectedAnswer { source })
    }

    /// Forgets a data subject (`DELETE /subjects/{subject}`, admin): the server destroys
    /// their key and appends `$subjectForgotten`. Idempotent.
    pub async fn forget_subject(&self, subject: &str) -> Result<ForgetAnswer, ClientError> {
        self.call(reqwest::Method::DELETE, &paths::subject_path(subject), None)
            .await
    }

    /// The encryption schemas in force (`GET /encryption/schemas`, admin), as the server
    /// answers them: `{"schemas": [...]}`.
    pub async fn encryption_schemas(&self) -> Result<Value, ClientError> {
        self.get_json(paths::SCHEMAS_PATH).await
    }

    /// Registers `event_type`'s encryption schema (`PUT /encryption/schemas/{eventType}`,
    /// admin): `schema` is its JSON (`subject` and `fields`).
    pub async fn register_schema(
        &self,
        event_type: &str,
        schema: &Value,
    ) -> Result<Value, ClientError> {
        self.call(
            reqwest::Method::PUT,
            &paths::schema_path(event_type),
            Some(schema.to_string().into_bytes()),
        )
        .await
    }

    /// Appends `events` to `stream` if it is at `expected`; the server's answer (the
    /// positions the events got, the stream's new version). The
    /// [`EventStore::append`](strata_core::EventStore::append) of this client does the same
    /// with the store's error type.
    pub async fn append_raw(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<Appended<'static>, ClientError> {
        let request = self
            .request(reqwest::Method::POST, &paths::stream_path(stream))
            .header("content-type", "application/json")
            .body(append_body(expected, events));
        let body = self.send(request).await?;
        serde_json::from_slice(&body).map_err(|source| ClientError::UnexpectedAnswer { source })
    }

    /// Sends several appends in one request (`POST /streams`): each `(stream, expected,
    /// events)` atomic on its own, the batch not; the server's answer, one result per append
    /// in order. [`Client::append_batch`] does the same with the store's error types.
    pub async fn append_batch_raw(
        &self,
        appends: &[(&str, ExpectedVersion, &[EventData])],
    ) -> Result<BatchAppended<'static>, ClientError> {
        let request = self
            .request(reqwest::Method::POST, "/streams")
            .header("content-type", "application/json")
            .body(batch_append_body(appends));
        let body = self.send(request).await?;
        serde_json::from_slice(&body).map_err(|source| ClientError::UnexpectedAnswer { source })
    }

    /// Opens a server-sent-event subscription at `path` (see
    /// [`paths::subscription_path`]), resuming after `last_event_id` when given.
    pub async fn sse(
        &self,
        path: &str,
        last_event_id: Option<u64>,
    ) -> Result<SseStream, ClientError> {
        let mut r = self
            .request(reqwest::Method::GET, path)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            r = r.header("last-event-id", id.to_string());
        }
        let res = r.send().await.map_err(|source| self.transport(source))?;
        let status = res.status();
        if !status.is_success() {
            let body = read_body(res, &self.base).await?;
            return Err(ClientError::problem(status.as_u16(), &body));
        }
        Ok(SseStream::new(
            Box::pin(res.bytes_stream()),
            self.base.clone(),
        ))
    }

    /// Follows the subscription at `path` (see [`paths::subscription_path`]) as events,
    /// reconnecting with `Last-Event-ID` after a dropped connection or a `lagged` notice, so
    /// the caller sees each event once, in order. `after` is where to start (the last id
    /// already seen); `None` starts where `path` says.
    pub fn follow(&self, path: String, after: Option<u64>) -> Follow {
        Follow::new(self.clone(), path, after)
    }
}

/// The body of `res`, at most [`ANSWER_MAX_BYTES`].
async fn read_body(mut res: reqwest::Response, url: &str) -> Result<Vec<u8>, ClientError> {
    let too_large = ClientError::AnswerTooLarge {
        limit_bytes: ANSWER_MAX_BYTES as u64,
    };
    let announced = res.content_length().unwrap_or(0);
    if announced > ANSWER_MAX_BYTES as u64 {
        return Err(too_large);
    }
    let mut out = Vec::with_capacity(announced as usize);
    while let Some(chunk) = res.chunk().await.map_err(|source| ClientError::Transport {
        url: url.to_owned(),
        source,
    })? {
        if out.len() + chunk.len() > ANSWER_MAX_BYTES {
            return Err(too_large);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
