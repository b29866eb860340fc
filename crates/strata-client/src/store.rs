//! [`EventStore`] over HTTP, so code written against the trait works against a server.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use strata_core::scavenge::{ProgressFn, ScavengeError, ScavengeProgress, ScavengeReport};
use strata_core::{
    limits, AccessDenied, ActualVersion, AllPage, AppendError, AppendResult, BackendError,
    CategorySummary, Direction, EventData, EventStore, ExpectedVersion, InvalidInput, LimitError,
    ListOptions, Page, Position, ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent,
    StreamId, StreamInfo, StreamMetadata, StreamMetadataRecord, StreamSummary, SubscribeFrom,
    Subscription, SubscriptionTarget, Timestamp,
};
use strata_wire::{
    paths, Appended, BatchResult, ErrorCode, EventJson, Head, ListPage, MetadataAnswer, PositionAt,
    ScavengeState, ScavengeStatus, StreamPage,
};
use tokio::sync::watch;

use crate::error::chain;
use crate::{Client, ClientError};

/// The server's page limit for reads this client asks for.
const PAGE: usize = limits::SERVER_PAGE_MAX_EVENTS;

fn append_error(stream: &StreamId, expected: ExpectedVersion, e: ClientError) -> AppendError {
    match e {
        ClientError::Problem {
            code: Some(code),
            detail,
            doc,
            ..
        } => match code {
            ErrorCode::WrongExpectedVersion => AppendError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual: ActualVersion(doc["actual"].as_u64()),
            },
            ErrorCode::EventIdConflict => AppendError::EventIdConflict {
                event_id: doc["eventId"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_default(),
                stream: stream.clone(),
            },
            ErrorCode::InvalidRequest => AppendError::InvalidInput(invalid(&doc, &detail)),
            ErrorCode::StreamTombstoned => AppendError::StreamTombstoned {
                stream: stream.clone(),
            },
            ErrorCode::StreamNotFound => AppendError::StreamNotFound(stream.clone()),
            ErrorCode::PayloadTooLarge => match limit(&doc) {
                Some(l) => AppendError::Limit(l),
                None => AppendError::InvalidInput(InvalidInput::new("request", detail)),
            },
            ErrorCode::Unavailable => AppendError::Unavailable(detail.into()),
            ErrorCode::Unauthorized => AppendError::Denied(AccessDenied::Unauthenticated(detail)),
            ErrorCode::Forbidden => AppendError::Denied(AccessDenied::Forbidden(detail)),
            other => AppendError::Unavailable(format!("{other}: {detail}").into()),
        },
        e @ (ClientError::UnexpectedAnswer { .. } | ClientError::UnreadableEvent { .. }) => {
            AppendError::Storage(BackendError::with_source(chain(&e), e))
        }
        other => match denied(&other) {
            Some(d) => AppendError::Denied(d),
            None => AppendError::Unavailable(BackendError::with_source(other.summary(), other)),
        },
    }
}

/// A 401 or 403 that came without a problem document (a proxy's answer, say).
fn denied(e: &ClientError) -> Option<AccessDenied> {
    let ClientError::Problem { detail, status, .. } = e else {
        return None;
    };
    let detail = if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        detail.clone()
    };
    if e.is_unauthorized() {
        Some(AccessDenied::Unauthenticated(detail))
    } else if e.is_forbidden() {
        Some(AccessDenied::Forbidden(detail))
    } else {
        None
    }
}

fn invalid(doc: &Value, detail: &str) -> InvalidInput {
    match (doc["field"].as_str(), doc["reason"].as_str()) {
        (Some(f), Some(r)) => InvalidInput::new(f, r),
        _ => InvalidInput::new("request", detail),
    }
}

fn limit(doc: &Value) -> Option<LimitError> {
    Some(LimitError {
        what: doc["what"].as_str()?.to_owned(),
        max: doc["limit"].as_u64()?,
        actual: doc["actual"].as_u64()?,
    })
}

fn read_error(e: ClientError) -> ReadError {
    match e {
        ClientError::Problem {
            code: Some(code),
            detail,
            doc,
            ..
        } => match code {
            ErrorCode::StreamNotFound => match doc["streamId"].as_str().map(StreamId::new) {
                Some(Ok(s)) => ReadError::StreamNotFound(s),
                _ => ReadError::Unavailable(detail.into()),
            },
            ErrorCode::StreamTombstoned => match doc["streamId"].as_str().map(StreamId::new) {
                Some(Ok(s)) => ReadError::StreamTombstoned(s),
                _ => ReadError::Unavailable(detail.into()),
            },
            ErrorCode::InvalidRequest => ReadError::InvalidInput(invalid(&doc, &detail)),
            ErrorCode::Unavailable => ReadError::Unavailable(detail.into()),
            ErrorCode::Unauthorized => ReadError::Denied(AccessDenied::Unauthenticated(detail)),
            ErrorCode::Forbidden => ReadError::Denied(AccessDenied::Forbidden(detail)),
            other => ReadError::Unavailable(format!("{other}: {detail}").into()),
        },
        e @ (ClientError::UnexpectedAnswer { .. } | ClientError::UnreadableEvent { .. }) => {
            ReadError::Storage(BackendError::with_source(chain(&e), e))
        }
        other => match denied(&other) {
            Some(d) => ReadError::Denied(d),
            None => ReadError::Unavailable(BackendError::with_source(other.summary(), other)),
        },
    }
}

fn recorded(events: Vec<EventJson<'static>>) -> Result<Vec<RecordedEvent>, ReadError> {
    events
        .into_iter()
        .map(|e| {
            e.into_recorded()
                .map_err(|source| read_error(ClientError::UnreadableEvent { source }))
        })
        .collect()
}

fn appended(a: Appended<'static>) -> AppendResult {
    AppendResult {
        stream_version: a.version,
        positions: a.positions.into_owned(),
        replayed: a.replayed,
    }
}

impl Client {
    /// A lifecycle change of `stream` (delete, tombstone, truncate): `method path`, answered
    /// with where its event was appended.
    async fn lifecycle(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        method: reqwest::Method,
        path: String,
    ) -> Result<AppendResult, AppendError> {
        let answer: Appended<'static> = self
            .call(method, &path, None)
            .await
            .map_err(|e| append_error(stream, expected, e))?;
        self.changes.send_modify(|n| *n += 1);
        Ok(appended(answer))
    }
}

/// One append of [`Client::append_batch`]: the stream, the version it must be at, the events.
pub type BatchAppend<'a> = (&'a StreamId, ExpectedVersion, &'a [EventData]);

impl Client {
    /// Appends to several streams in one request: each append is atomic and checked against
    /// its own expected version, and has its own result, in order; the batch as a whole is
    /// not atomic (one append's conflict leaves the others written). Appends to one stream
    /// run in the order given, so a later one may expect the version an earlier one leaves.
    ///
    /// The outer error is for the request as a whole, when nothing was written: bad input or
    /// an append's limit (checked here first, as [`EventStore::append`] does), a batch over
    /// the server's limits, a refused token, or a server that could not be reached. A producer of many small appends pays one round trip
    /// per batch instead of one per append.
    ///
    /// ```no_run
    /// # async fn f(client: strata_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use strata_core::{EventData, ExpectedVersion, StreamId};
    /// let (a, b) = (StreamId::new("account-1")?, StreamId::new("account-2")?);
    /// let deposit = [EventData::json("MoneyDeposited", &serde_json::json!({"amount": 5}))?];
    /// let results = client
    ///     .append_batch(&[(&a, ExpectedVersion::Any, &deposit), (&b, ExpectedVersion::Exact(3), &deposit)])
    ///     .await?;
    /// for (stream, result) in [&a, &b].into_iter().zip(results) {
    ///     match result {
    ///         Ok(done) => println!("{stream} is at version {}", done.stream_version),
    ///         Err(refused) => println!("{stream}: {refused}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn append_batch(
        &self,
        appends: &[BatchAppend<'_>],
    ) -> Result<Vec<Result<AppendResult, AppendError>>, AppendError> {
        let Some(&(first, first_expected, _)) = appends.first() else {
            return Err(AppendError::InvalidInput(InvalidInput::new(
                "appends",
                "must hold at least one append",
            )));
        };
        for (_, _, events) in appends {
            strata_core::validate_append(events)?;
        }
        let raw: Vec<(&str, ExpectedVersion, &[EventData])> = appends
            .iter()
            .map(|(stream, expected, events)| (stream.as_str(), *expected, *events))
            .collect();
        let answer = self
            .append_batch_raw(&raw)
            .await
            .map_err(|e| append_error(first, first_expected, e))?;
        let aligned = answer.results.len() == appends.len()
            && answer
                .results
                .iter()
                .zip(appends)
                .all(|(r, (stream, _, _))| {
                    let answered = match r {
                        BatchResult::Appended(a) => &a.stream_id,
                        BatchResult::Failed { stream_id, .. } => stream_id,
                    };
                    answered == stream.as_str()
                });
        if !aligned {
            return Err(AppendError::Storage(
                format!(
                    "the server's {} results do not answer this batch's {} appends in order",
                    answer.results.len(),
                    appends.len()
                )
                .into(),
            ));
        }
        self.changes.send_modify(|n| *n += 1);
        Ok(answer
            .results
            .into_iter()
            .zip(appends)
            .map(|(result, (stream, expected, _))| match result {
                BatchResult::Appended(a) => Ok(AppendResult {
                    stream_version: a.version,
                    positions: a.positions.into_owned(),
                    replayed: a.replayed,
                }),
                BatchResult::Failed { error, .. } => {
                    let status = error["status"].as_u64().unwrap_or(500) as u16;
                    Err(append_error(
                        stream,
                        *expected,
                        ClientError::from_problem_doc(status, error),
                    ))
                }
            })
            .collect())
    }
}

#[async_trait]
impl EventStore for Client {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, AppendError> {
        // The store's own checks, so that bad input and limits are the same typed errors as
        // from any store, rather than the server's refusal of the request.
        strata_core::validate_append(&events)?;
        strata_core::lifecycle::check_reserved(stream, &events)?;
        let answer = self
            .append_raw(stream.as_str(), expected, &events)
            .await
            .map_err(|e| append_error(stream, expected, e))?;
        self.changes.send_modify(|n| *n += 1);
        Ok(AppendResult {
            stream_version: answer.version,
            positions: answer.positions.into_owned(),
            replayed: answer.replayed,
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        options.validate()?;
        let mut out = Vec::new();
        let mut page_options = options.clone();
        while out.len() < options.limit {
            page_options.limit = (options.limit - out.len()).min(PAGE);
            let path = paths::read_stream_path(stream.as_str(), &page_options);
            let page: StreamPage<'static, EventJson<'static>> =
                self.get(&path).await.map_err(read_error)?;
            let events = recorded(page.events)?;
            let more = page.next.is_some();
            page_options.from_version = events.last().and_then(|e| match options.direction {
                Direction::Forward => e.stream_version.checked_add(1),
                Direction::Backward => e.stream_version.checked_sub(1),
            });
            let got = events.len();
            out.extend(events);
            if !more || got == 0 || page_options.from_version.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<AllPage, ReadError> {
        options.validate()?;
        let mut out = Vec::new();
        let mut page = AllPage {
            events: Vec::new(),
            next: options.from,
            is_end: false,
        };
        if options.limit == 0 {
            return Ok(page);
        }
        let mut page_options = options.clone();
        loop {
            page_options.limit = (options.limit - out.len()).clamp(1, PAGE);
            let answer: strata_wire::AllPage<EventJson<'static>> = self
                .get(&paths::read_all_path(&page_options))
                .await
                .map_err(read_error)?;
            out.extend(recorded(answer.events)?);
            page.next = answer.next_position.map(Position);
            page.is_end = answer.is_end;
            page_options.from = page.next;
            if page.is_end || page.next.is_none() || out.len() >= options.limit {
                break;
            }
        }
        page.events = out;
        Ok(page)
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo, ReadError> {
        self.get(&paths::stream_info_path(stream.as_str()))
            .await
            .map_err(read_error)
    }

    async fn list_streams(&self, options: ListOptions) -> Result<Page<StreamSummary>, ReadError> {
        options.validate()?;
        let page: ListPage<StreamSummary> = self
            .get(&paths::streams_path(&options))
            .await
            .map_err(read_error)?;
        Ok(Page {
            items: page.items,
            next: page.next_after,
        })
    }

    async fn list_categories(
        &self,
        options: ListOptions,
    ) -> Result<Page<CategorySummary>, ReadError> {
        options.validate()?;
        let page: ListPage<CategorySummary> = self
            .get(&paths::categories_path(&options))
            .await
            .map_err(read_error)?;
        Ok(Page {
            items: page.items,
            next: page.next_after,
        })
    }

    /// Starts a scavenge on the server (`POST /admin/scavenge`, which needs the admin role)
    /// and follows it (`GET /admin/scavenge`) until it ends, reporting each look to `progress`.
    async fn scavenge(&self, progress: ProgressFn<'_>) -> Result<ScavengeReport, ScavengeError> {
        let started = std::time::Instant::now();
        let mut status: ScavengeStatus = match self
            .call(reqwest::Method::POST, paths::SCAVENGE_PATH, None)
            .await
        {
            Ok(status) => status,
            Err(ClientError::Problem {
                code: Some(ErrorCode::ScavengeInProgress),
                ..
            }) => return Err(ScavengeError::AlreadyRunning),
            Err(ClientError::Problem {
                code: Some(ErrorCode::ScavengeUnsupported),
                ..
            }) => return Err(ScavengeError::Unsupported),
            Err(e) => return Err(read_error(e).into()),
        };
        let ours = status.started_at;
        let mut wait_ms = crate::limits::SCAVENGE_POLL_MIN_MS;
        loop {
            // Another server behind the same address, a restart, or a later run: this one's
            // outcome is not known.
            if status.state == ScavengeState::Idle || status.started_at != ours {
                return Err(ReadError::Unavailable(
                    "the server no longer reports the scavenge this client started (another \
                     server answered, it restarted, or another scavenge started since)"
                        .into(),
                )
                .into());
            }
            let seen = ScavengeProgress {
                streams_examined: status.streams_examined,
                streams_total: status.streams_total,
                events_removed: status.events_removed,
            };
            progress(seen);
            match status.state {
                ScavengeState::Done => {
                    return Ok(ScavengeReport {
                        progress: seen,
                        elapsed: started.elapsed(),
                    })
                }
                ScavengeState::Failed => {
                    let why = status
                        .error
                        .unwrap_or_else(|| "the scavenge failed".to_owned());
                    return Err(ReadError::Storage(why.into()).into());
                }
                _ => {}
            }
            tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
            wait_ms = (wait_ms * 2).min(crate::limits::SCAVENGE_POLL_MAX_MS);
            status = self.get(paths::SCAVENGE_PATH).await.map_err(read_error)?;
        }
    }

    async fn stream_metadata(&self, stream: &StreamId) -> Result<StreamMetadataRecord, ReadError> {
        let answer: MetadataAnswer = self
            .get(&paths::stream_metadata_path(stream.as_str()))
            .await
            .map_err(read_error)?;
        Ok(StreamMetadataRecord {
            metadata: answer.metadata,
            version: answer.version,
        })
    }

    async fn set_stream_metadata(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<AppendResult, AppendError> {
        let answer: MetadataAnswer = self
            .call(
                reqwest::Method::PUT,
                &paths::set_stream_metadata_path(stream.as_str(), expected),
                Some(metadata.to_json()),
            )
            .await
            .map_err(|e| append_error(&stream.metastream(), expected, e))?;
        self.changes.send_modify(|n| *n += 1);
        Ok(AppendResult {
            stream_version: answer.version.unwrap_or_default(),
            positions: answer.position.map(Position).into_iter().collect(),
            replayed: false,
        })
    }

    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, AppendError> {
        let path = paths::delete_stream_path(stream.as_str(), expected, false);
        self.lifecycle(stream, expected, reqwest::Method::DELETE, path)
            .await
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, AppendError> {
        let path = paths::delete_stream_path(stream.as_str(), expected, true);
        self.lifecycle(stream, expected, reqwest::Method::DELETE, path)
            .await
    }

    async fn truncate_stream(
        &self,
        stream: &StreamId,
        before: u64,
    ) -> Result<AppendResult, AppendError> {
        let path = paths::truncate_stream_path(stream.as_str(), before);
        self.lifecycle(stream, ExpectedVersion::Any, reqwest::Method::POST, path)
            .await
    }

    async fn position_at(&self, at: Timestamp) -> Result<Option<Position>, ReadError> {
        let answer: PositionAt = self
            .get(&paths::position_at_path(at))
            .await
            .map_err(read_error)?;
        Ok(answer.position.map(Position))
    }

    async fn head(&self) -> Result<Option<Position>, ReadError> {
        let answer: Head = self.get(paths::HEAD_PATH).await.map_err(read_error)?;
        Ok(answer.head.map(Position))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn subscribe(
        &self,
        target: SubscriptionTarget,
        from: SubscribeFrom,
    ) -> Result<Subscription, ReadError> {
        Subscription::start(Arc::new(self.clone()), target, from).await
    }
}
