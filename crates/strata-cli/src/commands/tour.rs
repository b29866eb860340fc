//! `strata tour`: the mission's bank account, told through the store's API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use strata_core::{
    AppendError, EventData, EventStore, ExpectedVersion, Metadata, ReadStreamOptions,
    RecordedEvent, StreamId, SubscribeFrom, SubscriptionTarget, Uuid,
};

use crate::output::Printer;

fn balance(events: &[RecordedEvent]) -> Result<i64> {
    let mut balance = 0i64;
    for e in events {
        let d: serde_json::Value = e.data_as()?;
        match e.event_type.as_str() {
            "AccountOpened" => balance = d["initialBalance"].as_i64().unwrap_or(0),
            "MoneyDeposited" => balance += d["amount"].as_i64().unwrap_or(0),
            "MoneyWithdrawn" => balance -= d["amount"].as_i64().unwrap_or(0),
            _ => {}
        }
    }
    Ok(balance)
}

fn ev(kind: &str, data: serde_json::Value) -> Result<EventData> {
    Ok(EventData::json(kind, &data)?.with_metadata(
        Metadata::new()
            .with_user_id("user-456")
            .with_correlation_id("req-789"),
    ))
}

async fn free_account_id(store: &dyn EventStore) -> Result<StreamId> {
    for n in 0u32.. {
        let id = if n == 0 {
            "account-123".to_owned()
        } else {
            format!("account-123-{n}")
        };
        let id = StreamId::new(id)?;
        if !store.stream_info(&id).await?.exists {
            return Ok(id);
        }
    }
    unreachable!("some account id is free")
}

/// The commands to try next, each one that works where the tour ran: through the server it ran
/// on (so not `verify`, which needs the data directory to itself), or on the data directory.
fn next_steps(account: &StreamId, server: Option<&str>) -> String {
    let common = format!(
        "strata read {account} · strata read '$all' --category account · strata streams · strata info {account}"
    );
    match server {
        Some(url) => format!(
            "\nNext (with --server {url}, or STRATA_SERVER={url}): {common} · strata projections"
        ),
        None => format!("\nNext: {common} · strata verify"),
    }
}

/// The tour on `store`, which is in `location`; `server` is the server's URL when the store is
/// one.
pub async fn run(
    store: Arc<dyn EventStore>,
    location: &str,
    server: Option<&str>,
    p: &Printer,
) -> Result<()> {
    let say = |s: &str| {
        if !p.is_json() {
            println!("{s}");
        }
    };
    let account = free_account_id(&*store).await?;
    say(&format!(
        "Strata tour: the bank account from the mission, in {location}\n"
    ));
    say(&format!("1. Open {account} with 100, deposit 200, withdraw 150. Each append is durable (fdatasync) before it is acknowledged."));
    let r = store
        .append(
            &account,
            ExpectedVersion::NoStream,
            vec![ev("AccountOpened", json!({"initialBalance": 100}))?],
        )
        .await?;
    p.appended(&account, &r);
    let r = store
        .append(
            &account,
            ExpectedVersion::Exact(0),
            vec![ev(
                "MoneyDeposited",
                json!({"amount": 200, "currency": "USD"}),
            )?],
        )
        .await?;
    p.appended(&account, &r);
    let before_withdrawal = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let r = store
        .append(
            &account,
            ExpectedVersion::Exact(1),
            vec![ev(
                "MoneyWithdrawn",
                json!({"amount": 150, "currency": "USD"}),
            )?],
        )
        .await?;
    p.appended(&account, &r);

    say("\n2. The events, as stored:");
    let events = store
        .read_stream(&account, ReadStreamOptions::forward())
        .await?;
    for e in &events {
        p.event(e);
    }
    say(&format!(
        "   Current balance = replay(events) = 100 + 200 - 150 = {}",
        balance(&events)?
    ));

    say("\n3. Optimistic concurrency: a second writer still believes the account is at version 0.");
    match store
        .append(
            &account,
            ExpectedVersion::Exact(0),
            vec![ev("MoneyWithdrawn", json!({"amount": 1000}))?],
        )
        .await
    {
        Err(e @ AppendError::WrongExpectedVersion { .. }) => {
            say(&format!("   refused, nothing written: {e}"))
        }
        other => anyhow::bail!("expected a version conflict, got {other:?}"),
    }

    say("\n4. Idempotent retry: the same deposit (same event id) sent twice is stored once.");
    let id = Uuid::now_v7();
    let deposit = ev("MoneyDeposited", json!({"amount": 50}))?.with_id(id);
    let first = store
        .append(&account, ExpectedVersion::Exact(2), vec![deposit.clone()])
        .await?;
    let retry = store
        .append(&account, ExpectedVersion::Exact(2), vec![deposit])
        .await?;
    say(&format!(
        "   first answer: version {} at position {}; retry answer: version {} at position {}",
        first.stream_version,
        first.last_position(),
        retry.stream_version,
        retry.last_position()
    ));
    let events = store
        .read_stream(&account, ReadStreamOptions::forward())
        .await?;
    say(&format!(
        "   the stream holds {} events; balance now {}",
        events.len(),
        balance(&events)?
    ));

    say("\n5. Temporal query: what was the balance just before the withdrawal?");
    let at = store
        .position_at(before_withdrawal)
        .await?
        .context("nothing recorded before the withdrawal")?;
    let then = store
        .read_stream(&account, ReadStreamOptions::forward().max_position(at))
        .await?;
    say(&format!(
        "   as of {}: {} events, balance {}",
        before_withdrawal.format("%H:%M:%S%.3f"),
        then.len(),
        balance(&then)?
    ));

    say("\n6. A live subscription: it catches up from storage, then turns live.");
    let mut sub = store
        .subscribe(
            SubscriptionTarget::Stream(account.clone()),
            SubscribeFrom::Start,
        )
        .await?;
    for _ in 0..events.len() {
        let e = sub.next().await?;
        say(&format!(
            "   caught up: {}@{} {}",
            e.stream_id, e.stream_version, e.event_type
        ));
    }
    let writer = store.clone();
    let acc = account.clone();
    let live = tokio::spawn(async move {
        writer
            .append(
                &acc,
                ExpectedVersion::Exact(3),
                vec![ev("MoneyDeposited", json!({"amount": 25}))?],
            )
            .await
            .map_err(anyhow::Error::from)
    });
    let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .context("the live event did not arrive")??;
    live.await??;
    say(&format!(
        "   live:       {}@{} {} {}",
        e.stream_id,
        e.stream_version,
        e.event_type,
        String::from_utf8_lossy(&e.data)
    ));
    let events = store
        .read_stream(&account, ReadStreamOptions::forward())
        .await?;
    say(&format!(
        "\nFinal balance of {account}: {}",
        balance(&events)?
    ));
    if p.is_json() {
        println!(
            "{}",
            json!({"account": account.as_str(), "events": events.len(), "balance": balance(&events)?})
        );
    }
    say(&next_steps(&account, server));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_steps_through_a_server_never_suggest_verify() {
        let account = StreamId::new("account-123").expect("a valid id");
        let remote = next_steps(&account, Some("http://127.0.0.1:2113"));
        assert!(!remote.contains("verify"), "{remote}");
        assert!(
            remote.contains("--server http://127.0.0.1:2113"),
            "{remote}"
        );
        assert!(next_steps(&account, None).contains("strata verify"));
    }
}
