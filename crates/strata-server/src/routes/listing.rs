//! Listings: streams and categories with counts.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use strata_core::{limits, ListOptions};
use strata_wire::{paths, ListPage};

use super::{caller, paged_response};
use crate::auth::forbidden;
use crate::config::Action;
use crate::error::ApiError;
use crate::query::Query;
use crate::AppState;

fn options(q: &Query) -> Result<ListOptions, ApiError> {
    let mut o = ListOptions::default().limit(q.limit(100, limits::LIST_PAGE_MAX_ENTRIES)?);
    o.after = q.one("after")?.map(str::to_owned);
    o.prefix = q.nonempty("prefix")?.map(str::to_owned);
    for (name, v) in [("after", &o.after), ("prefix", &o.prefix)] {
        if v.as_ref()
            .is_some_and(|v| v.len() > limits::STREAM_ID_MAX_BYTES)
        {
            return Err(ApiError::invalid(
                name,
                format!("is longer than {} bytes", limits::STREAM_ID_MAX_BYTES),
            ));
        }
    }
    Ok(o)
}

/// The link to the page after one read with `o` that ended at `next`.
fn next_link(
    path: fn(&ListOptions) -> String,
    o: &ListOptions,
    next: Option<&String>,
) -> Option<String> {
    next.map(|after| {
        path(&ListOptions {
            after: Some(after.clone()),
            ..o.clone()
        })
    })
}

/// `GET /streams`
pub(crate) async fn streams(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    let q = Query::parse(raw.as_deref(), &["prefix", "after", "limit"])?;
    let o = options(&q)?;
    if !who.can_all(Action::Read, o.prefix.as_deref()) {
        return Err(forbidden(
            &who,
            Action::Read,
            "the list of streams without a prefix inside the token's stream prefixes",
        ));
    }
    let page = st.store().list_streams(o.clone()).await?;
    let next = next_link(paths::streams_path, &o, page.next.as_ref());
    let out = ListPage {
        items: page.items,
        next_after: page.next,
        next: next.clone(),
    };
    Ok(paged_response(&out, next.as_deref()))
}

/// `GET /categories`
pub(crate) async fn categories(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers)?;
    let q = Query::parse(raw.as_deref(), &["prefix", "after", "limit"])?;
    let o = options(&q)?;
    if !who.can_all(Action::Read, None) {
        return Err(forbidden(&who, Action::Read, "the list of categories"));
    }
    let page = st.store().list_categories(o.clone()).await?;
    let next = next_link(paths::categories_path, &o, page.next.as_ref());
    let out = ListPage {
        items: page.items,
        next_after: page.next,
        next: next.clone(),
    };
    Ok(paged_response(&out, next.as_deref()))
}
