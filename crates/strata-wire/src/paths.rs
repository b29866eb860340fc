//! The paths (with their query strings) of the API's resources, as a client requests them and
//! as the server writes them into `next` links. Every name in a path is percent-encoded with
//! [`encode`].

use strata_core::{
    Direction, ExpectedVersion, Filter, ListOptions, ReadAllOptions, ReadStreamOptions,
    SubscribeFrom, SubscriptionTarget, Timestamp,
};

use crate::query::encode;

/// The path of `GET /all/head`.
pub const HEAD_PATH: &str = "/all/head";

/// The path of the projection list, `GET /projections`.
pub const PROJECTIONS_PATH: &str = "/projections";

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Forward => "forward",
        Direction::Backward => "backward",
    }
}

/// A stream's resource, `/streams/{stream}`: `POST` appends to it.
///
/// ```
/// assert_eq!(strata_wire::paths::stream_path("order/7"), "/streams/order%2F7");
/// ```
pub fn stream_path(stream: &str) -> String {
    format!("/streams/{}", encode(stream))
}

/// A stream's metadata, `/streams/{stream}/metadata`: `GET` reads it, `PUT` replaces it.
pub fn stream_metadata_path(stream: &str) -> String {
    format!("/streams/{}/metadata", encode(stream))
}

/// `DELETE /streams/{stream}`: a soft delete, or a tombstone, at `expected`.
///
/// ```
/// use strata_core::ExpectedVersion;
/// assert_eq!(
///     strata_wire::paths::delete_stream_path("account-1", ExpectedVersion::Exact(4), true),
///     "/streams/account-1?expectedVersion=4&tombstone=true"
/// );
/// ```
pub fn delete_stream_path(stream: &str, expected: ExpectedVersion, tombstone: bool) -> String {
    let mut p = format!(
        "/streams/{}?expectedVersion={}",
        encode(stream),
        expected_query(expected)
    );
    if tombstone {
        p.push_str("&tombstone=true");
    }
    p
}

/// `POST /streams/{stream}/truncate?before={before}`.
pub fn truncate_stream_path(stream: &str, before: u64) -> String {
    format!("/streams/{}/truncate?before={before}", encode(stream))
}

/// `PUT /streams/{stream}/metadata?expectedVersion=...`.
pub fn set_stream_metadata_path(stream: &str, expected: ExpectedVersion) -> String {
    format!(
        "{}?expectedVersion={}",
        stream_metadata_path(stream),
        expected_query(expected)
    )
}

/// An expected version as a query value: `any`, `no_stream`, `stream_exists` or the number.
pub fn expected_query(expected: ExpectedVersion) -> String {
    match expected {
        ExpectedVersion::Any => "any".to_owned(),
        ExpectedVersion::NoStream => "no_stream".to_owned(),
        ExpectedVersion::StreamExists => "stream_exists".to_owned(),
        ExpectedVersion::Exact(v) => v.to_string(),
    }
}

/// A stream's summary, `/streams/{stream}/info`.
pub fn stream_info_path(stream: &str) -> String {
    format!("/streams/{}/info", encode(stream))
}

/// A page of a stream: `from_version`, `direction`, `limit` and `max_position` of `o`.
///
/// ```
/// use strata_core::ReadStreamOptions;
/// let o = ReadStreamOptions::backward().from_version(9).limit(20);
/// assert_eq!(
///     strata_wire::paths::read_stream_path("account-1", &o),
///     "/streams/account-1?direction=backward&from=9&limit=20"
/// );
/// ```
pub fn read_stream_path(stream: &str, o: &ReadStreamOptions) -> String {
    let mut p = format!(
        "/streams/{}?direction={}",
        encode(stream),
        direction(o.direction)
    );
    if let Some(f) = o.from_version {
        p.push_str(&format!("&from={f}"));
    }
    p.push_str(&format!("&limit={}", o.limit));
    if let Some(m) = o.max_position {
        p.push_str(&format!("&maxPosition={}", m.0));
    }
    p
}

/// A page of `$all`: `from`, `direction`, `limit`, the filter and `max_position` of `o`.
///
/// ```
/// use strata_core::{Filter, Position, ReadAllOptions};
/// let o = ReadAllOptions::forward()
///     .from(Position(100))
///     .limit(50)
///     .filter(Filter::default().event_types(["Deposited"]).stream_prefix("account-"));
/// assert_eq!(
///     strata_wire::paths::read_all_path(&o),
///     "/all?direction=forward&from=100&limit=50&eventType=Deposited&prefix=account-"
/// );
/// ```
pub fn read_all_path(o: &ReadAllOptions) -> String {
    let mut p = format!("/all?direction={}", direction(o.direction));
    if let Some(f) = o.from {
        p.push_str(&format!("&from={}", f.0));
    }
    p.push_str(&format!("&limit={}{}", o.limit, filter_query(&o.filter)));
    if let Some(m) = o.max_position {
        p.push_str(&format!("&maxPosition={}", m.0));
    }
    p
}

/// A page of the stream listing, `/streams?...`. An empty prefix is left out, as in
/// [`filter_query`].
pub fn streams_path(o: &ListOptions) -> String {
    list_path("/streams", o)
}

/// A page of the category listing, `/categories?...`.
pub fn categories_path(o: &ListOptions) -> String {
    list_path("/categories", o)
}

fn list_path(base: &str, o: &ListOptions) -> String {
    let mut p = format!("{base}?");
    if let Some(a) = &o.after {
        p.push_str(&format!("after={}&", encode(a)));
    }
    p.push_str(&format!("limit={}", o.limit));
    if let Some(x) = o.prefix.as_ref().filter(|x| !x.is_empty()) {
        p.push_str(&format!("&prefix={}", encode(x)));
    }
    p
}

/// The position at a time, `/all/position-at?time=...` (RFC 3339, microseconds).
pub fn position_at_path(at: Timestamp) -> String {
    let t = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    format!("/all/position-at?time={}", encode(&t))
}

/// The filter's query parameters (`&eventType=...&category=...&prefix=...`), each with its
/// leading `&`; empty for the empty filter. An empty prefix, which every stream has, is left
/// out (the server refuses `prefix=`).
pub fn filter_query(f: &Filter) -> String {
    let mut q = String::new();
    for t in &f.event_types {
        q.push_str(&format!("&eventType={}", encode(t)));
    }
    for c in &f.categories {
        q.push_str(&format!("&category={}", encode(c)));
    }
    if let Some(p) = f.stream_prefix.as_ref().filter(|p| !p.is_empty()) {
        q.push_str(&format!("&prefix={}", encode(p)));
    }
    q
}

/// The subscription (server-sent events) of `target`, starting at `from`. A position or
/// version to resume after becomes `after=N`; a reconnecting client sends `Last-Event-ID`
/// instead, which the server prefers.
///
/// ```
/// use strata_core::{Filter, StreamId, SubscribeFrom, SubscriptionTarget};
/// use strata_wire::paths::subscription_path;
/// let all = SubscriptionTarget::All(Filter::default().categories(["account"]));
/// assert_eq!(
///     subscription_path(&all, SubscribeFrom::Start),
///     "/subscriptions/all?from=start&category=account"
/// );
/// let one = SubscriptionTarget::Stream(StreamId::new("account-1").unwrap());
/// assert_eq!(
///     subscription_path(&one, SubscribeFrom::AfterVersion(4)),
///     "/subscriptions/streams/account-1?after=4"
/// );
/// ```
pub fn subscription_path(target: &SubscriptionTarget, from: SubscribeFrom) -> String {
    let from = match from {
        SubscribeFrom::Start => "from=start".to_owned(),
        SubscribeFrom::End => "from=end".to_owned(),
        SubscribeFrom::AfterPosition(p) => format!("after={}", p.0),
        SubscribeFrom::AfterVersion(v) => format!("after={v}"),
    };
    match target {
        SubscriptionTarget::Stream(s) => {
            format!("/subscriptions/streams/{}?{from}", encode(s.as_str()))
        }
        SubscriptionTarget::All(f) => format!("/subscriptions/all?{from}{}", filter_query(f)),
    }
}

/// The path of a projection's resource, `/projections/{name}`, with `name` percent-encoded;
/// append `/pause`, `/resume`, `/reset` or `/rebuild` for an operation.
///
/// ```
/// assert_eq!(strata_wire::paths::projection_path("by type"), "/projections/by%20type");
/// ```
pub fn projection_path(name: &str) -> String {
    format!("{PROJECTIONS_PATH}/{}", encode(name))
}

/// The scavenge resource: `POST` starts one, `GET` reports the latest.
pub const SCAVENGE_PATH: &str = "/admin/scavenge";

/// The encryption schemas, `GET /encryption/schemas`.
pub const SCHEMAS_PATH: &str = "/encryption/schemas";

/// One event type's encryption schema, `PUT /encryption/schemas/{eventType}` registers it.
///
/// ```
/// assert_eq!(
///     strata_wire::paths::schema_path("Customer Registered"),
///     "/encryption/schemas/Customer%20Registered"
/// );
/// ```
pub fn schema_path(event_type: &str) -> String {
    format!("{SCHEMAS_PATH}/{}", encode(event_type))
}

/// A data subject, `DELETE /subjects/{subject}` forgets them.
///
/// ```
/// assert_eq!(strata_wire::paths::subject_path("customer/42"), "/subjects/customer%2F42");
/// ```
pub fn subject_path(subject: &str) -> String {
    format!("/subjects/{}", encode(subject))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::Position;

    #[test]
    fn list_paths_carry_every_option() {
        let mut o = ListOptions::default().limit(7);
        assert_eq!(streams_path(&o), "/streams?limit=7");
        o.after = Some("a b".to_owned());
        o.prefix = Some("acc/".to_owned());
        assert_eq!(
            streams_path(&o),
            "/streams?after=a%20b&limit=7&prefix=acc%2F"
        );
        assert_eq!(
            categories_path(&o),
            "/categories?after=a%20b&limit=7&prefix=acc%2F"
        );
        o.prefix = Some(String::new());
        assert_eq!(streams_path(&o), "/streams?after=a%20b&limit=7");
    }

    #[test]
    fn an_empty_prefix_is_no_filter() {
        let f = Filter::default().stream_prefix("");
        assert_eq!(filter_query(&f), "");
        let f = Filter::default().event_types([""]).stream_prefix("a");
        // An empty event type is the caller's error: it is sent, for the server to refuse.
        assert_eq!(filter_query(&f), "&eventType=&prefix=a");
    }

    #[test]
    fn read_paths_carry_every_option() {
        let o = ReadStreamOptions::forward()
            .limit(3)
            .max_position(Position(8));
        assert_eq!(
            read_stream_path("s 1", &o),
            "/streams/s%201?direction=forward&limit=3&maxPosition=8"
        );
        let o = ReadAllOptions::backward()
            .limit(2)
            .filter(
                Filter::default()
                    .event_types(["A", "B&C"])
                    .categories(["x"]),
            )
            .max_position(Position(5));
        assert_eq!(
            read_all_path(&o),
            "/all?direction=backward&limit=2&eventType=A&eventType=B%26C&category=x&maxPosition=5"
        );
        assert_eq!(
            position_at_path(strata_core::timestamp_from_micros(1)),
            "/all/position-at?time=1970-01-01T00%3A00%3A00.000001Z"
        );
    }
}
