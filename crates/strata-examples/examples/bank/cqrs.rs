//! The bank's read side in action (CQRS): its three projections over the sealed store.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata::projection::{ProjectedStore, ProjectionError, Projections, SqliteReadModels, Typed};
use strata::{ExecuteError, Repository};

use crate::domain::{AccountCommand, AccountError, BankAccount};
use crate::read_models::{AccountBalances, MonthlySummary, TransactionHistory};

/// The read side in action, on its own store under `dir`.
pub async fn demo(dir: &Path) -> Result<(), Box<dyn Error>> {
    let data = dir.join("bank-cqrs");
    let models = SqliteReadModels::next_to(&data)?;
    // The accounts' store, sealed as in the first part.
    let store = crate::sealed::open_accounts(&data, crate::sealed::demo_master_key()?)
        .await?
        .store()
        .as_ref()
        .clone();
    println!("\nRead models (CQRS): {}", models.path().display());
    let projections = Projections::new(Arc::new(store.clone()), models.clone());
    // Inline: current when the command returns. Async: background tasks with checkpoints.
    projections.inline(Typed::new(AccountBalances)).await?;
    projections.spawn(Typed::new(TransactionHistory)).await?;
    projections.spawn(Typed::new(MonthlySummary)).await?;
    let accounts =
        Repository::<BankAccount, _>::new(ProjectedStore::new(store.clone(), projections.clone()));
    let query = models.connect()?;

    println!("1. Commands through the repository; the inline balance needs no wait.");
    for (id, owner) in [("123", "Alice"), ("456", "Bob")] {
        // Open already in a directory of an earlier run (given with BANK_MASTER_KEY).
        match accounts.execute(id, crate::sealed::open(owner, 100)).await {
            Ok(_) | Err(ExecuteError::Rejected(AccountError::AlreadyOpen)) => {}
            Err(e) => return Err(e.into()),
        }
        accounts
            .execute(id, AccountCommand::Deposit { amount: 200 })
            .await?;
    }
    let done = accounts
        .execute("123", AccountCommand::Withdraw { amount: 150 })
        .await?;
    let balance: i64 = query.query_row(
        "SELECT balance FROM account_balances WHERE account_id = '123'",
        [],
        |r| r.get(0),
    )?;
    println!("   account 123 balance right after the withdrawal: {balance}");

    println!("2. Read your own write on an async projection: wait for the command's position.");
    let position = done.position.unwrap_or_default();
    projections
        .wait_for("transaction_history", position, Duration::from_secs(5))
        .await?;
    let mut stmt = query.prepare(
        "SELECT position, kind, amount FROM transactions WHERE account_id = ?1 ORDER BY position",
    )?;
    let rows = stmt.query_map(["123"], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (p, kind, amount) = row?;
        println!("   position {p:>3} {kind:<15} {amount:>5}");
    }

    println!("3. A paused projection: the wait times out with a typed error, not stale data.");
    projections.pause("monthly_summary").await?;
    let done = accounts
        .execute("456", AccountCommand::Deposit { amount: 25 })
        .await?;
    match projections
        .wait_for(
            "monthly_summary",
            done.position.unwrap_or_default(),
            Duration::from_millis(100),
        )
        .await
    {
        Err(e @ ProjectionError::NotYetConsistent { .. }) => println!("   {e}"),
        other => println!("   unexpected: {other:?}"),
    }
    projections.resume("monthly_summary").await?;
    projections
        .wait_for(
            "monthly_summary",
            done.position.unwrap_or_default(),
            Duration::from_secs(5),
        )
        .await?;
    let mut stmt = query.prepare(
        "SELECT account_id, month, deposits, withdrawals, transactions FROM monthly_summary
         ORDER BY account_id, month",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (id, month, dep, wd, n) = row?;
        println!("   account {id} {month}: deposits {dep}, withdrawals {wd}, {n} transactions");
    }

    println!("4. Rebuild the monthly summary from event 0 (blue/green; queries keep working).");
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "   {bar:30} {pos}/{len} positions, {msg}",
    )?);
    let checkpoint = projections
        .rebuild("monthly_summary", |p| {
            bar.set_length(p.head.map_or(0, |h| h.0 + 1));
            bar.set_position(p.position.map_or(0, |c| c.0 + 1));
            bar.set_message(format!(
                "{:.0} events/s, {} left",
                p.events_per_second, p.remaining_events
            ));
        })
        .await?;
    bar.finish();
    let at = |p: Option<strata::Position>| p.map_or_else(|| "none".to_owned(), |p| p.to_string());
    println!("   swapped in at checkpoint {}", at(checkpoint));

    println!("5. Projection status:");
    for info in projections.list().await? {
        println!(
            "   {:<20} {} {} checkpoint {}, lag {} events / {:.3} s",
            info.name,
            info.mode,
            info.status,
            at(info.checkpoint),
            info.lag_events,
            info.lag_seconds
        );
    }
    projections.shutdown().await;
    Ok(())
}
