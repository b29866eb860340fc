//! `$all`, the global order: filtered, paged reads; the head; positions by time.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use strata_core::{Direction, Filter, Position, ReadAllOptions};
use strata_wire::{paths, AllPage, EventJson, Head, PositionAt};

use super::streams::{cut_to_bytes, direction, max_position};
use super::{caller, json_response, paged_response};
use crate::auth::{forbidden, Principal};
use crate::config::Action;
use crate::error::ApiError;
use crate::limits;
use crate::query::Query;
use crate::AppState;

/// The filter of a `$all` read or subscription from `eventType`, `category` and `prefix`.
pub(crate) fn filter(q: &Query) -> Result<Filter, ApiError> {
    let mut f = Filter::default()
        .event_types(q.all("eventType"))
        .categories(q.all("category"));
    f.stream_prefix = q.nonempty("prefix")?.map(str::to_owned);
    if f.event_types.iter().any(String::is_empty) {
        return Err(ApiError::invalid("eventType", "must not be empty"));
    }
    f.validate().map_err(|e| match e {
        strata_core::ReadError::Limit(l) => ApiError::invalid("filter", l.to_string()),
        other => other.into(),
    })?;
    Ok(f)
}

/// Checks `action` on `$all` with `filter`.
pub(crate) fn check_all(who: &Principal, action: Action, filter: &Filter) -> Result<(), ApiError> {
    if who.can_all(action, filter.stream_prefix.as_deref()) {
        Ok(())
    } else {
        Err(forbidden(
            who,
            action,
            "$all without a prefix filter inside the token's stream prefixes",
        ))
    }
}

/// `GET /all`
pub(crate) async fn read(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    let q = Query::parse(
        raw.as_deref(),
        &[
            "direction",
            "from",
            "limit",
            "eventType",
            "category",
            "prefix",
            "maxPosition",
            "asOf",
        ],
    )?;
    let f = filter(&q)?;
    check_all(&who, Action::Read, &f)?;
    let dir = direction(&q)?;
    let limit = q.limit(
        limits::SERVER_PAGE_DEFAULT_EVENTS.min(st.config().page_max_events as usize),
        st.config().page_max_events as usize,
    )?;
    let mut o = match dir {
        Direction::Forward => ReadAllOptions::forward(),
        Direction::Backward => ReadAllOptions::backward(),
    }
    .limit(limit)
    .filter(f);
    if let Some(from) = q.u64("from")? {
        o = o.from(Position(from));
    }
    let max = max_position(&st, &q).await?;
    if let Some(m) = max {
        // Before every event: nothing to show, as of position 0 with an empty page.
        let Some(m) = m else {
            let page = AllPage::<EventJson> {
                direction: dir,
                events: Vec::new(),
                next_position: None,
                is_end: true,
                next: None,
            };
            return Ok(json_response(&page));
        };
        o = o.max_position(m);
    }
    let mut page = st.store().read_all(o.clone()).await?;
    let cut = cut_to_bytes(&mut page.events);
    let mut next_position = page.next.map(|p| p.0);
    if cut {
        page.is_end = false;
        next_position = page.events.last().and_then(|e| match dir {
            Direction::Forward => e.position.0.checked_add(1),
            Direction::Backward => e.position.0.checked_sub(1),
        });
    }
    // The same read from the next position (`asOf` became `maxPosition`).
    let next = next_position.map(|from| paths::read_all_path(&o.from(Position(from))));
    let out = AllPage {
        direction: dir,
        events: page.events.iter().map(EventJson::new).collect(),
        next_position,
        is_end: page.is_end,
        next: next.clone(),
    };
    Ok(paged_response(&out, next.as_deref()))
}

fn check_any_read(who: &Principal) -> Result<(), ApiError> {
    // Positions alone reveal nothing a token's own events do not carry: any read right will do.
    if who.can_all(Action::Read, None) || who.has_any(Action::Read) {
        Ok(())
    } else {
        Err(forbidden(who, Action::Read, "positions"))
    }
}

/// `GET /all/head`
pub(crate) async fn head(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    check_any_read(&who)?;
    Query::parse(raw.as_deref(), &[])?;
    let head = st.store().head().await?;
    Ok(json_response(&Head {
        head: head.map(|p| p.0),
    }))
}

/// `GET /all/position-at?time=`
pub(crate) async fn position_at(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    check_any_read(&who)?;
    let q = Query::parse(raw.as_deref(), &["time"])?;
    let Some(t) = q.timestamp("time")? else {
        return Err(ApiError::invalid("time", "is required"));
    };
    let p = st.store().position_at(t).await?;
    Ok(json_response(&PositionAt {
        position: p.map(|p| p.0),
    }))
}
