//! The bank's read side (the mission's three projections): account balances (inline),
//! transaction history and a monthly summary per account (async), all in SQLite next to the
//! data directory. Queries read only these tables.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata::projection::{
    Envelope, HandlerError, ProjectedStore, ProjectionError, Projections, ReadModel, Sql, Sqlite,
    SqliteReadModels, Typed,
};
use strata::{Filter, Repository};

use crate::domain::{AccountCommand, AccountEvent, BankAccount};

/// Amounts are stored as SQLite integers.
fn signed(amount: u64) -> Result<i64, HandlerError> {
    i64::try_from(amount).map_err(|_| HandlerError::new("amount beyond i64"))
}

/// `account_balances(account_id, customer_id, balance, last_updated)`: the mission's balance
/// table. Its handler matches on the aggregate's own event enum: the events arrive decoded and
/// upcast, with their envelope (stream, position, recorded-at). It keeps the customer's id,
/// not their name: personal data stays sealed in the events, so a forget has nothing to chase
/// here (a read model that copies it deletes it on `$subjectForgotten`: docs/gdpr.md).
pub struct AccountBalances;

impl ReadModel<Sqlite> for AccountBalances {
    type Event = AccountEvent;
    fn name(&self) -> &str {
        "account_balances"
    }
    fn filter(&self) -> Filter {
        Filter::default().categories(["account"])
    }
    fn tables(&self) -> &[&'static str] {
        &["account_balances"]
    }
    fn setup<'a>(&'a self, sql: &'a Sql<'a>) -> Result<(), HandlerError> {
        sql.execute_batch(
            "CREATE TABLE {account_balances} (
                 account_id TEXT PRIMARY KEY, customer_id TEXT, balance INTEGER NOT NULL,
                 last_updated TEXT NOT NULL)",
        )
    }
    fn apply<'a>(
        &'a self,
        sql: &'a Sql<'a>,
        e: &'a Envelope<'a, AccountEvent>,
    ) -> Result<(), HandlerError> {
        let at = e.recorded_at.to_rfc3339();
        let id = e.stream_key();
        let change = match &e.event {
            AccountEvent::AccountOpened {
                customer_id,
                initial_balance,
                ..
            } => {
                sql.execute(
                    // Idempotent by construction (an upsert), though the checkpoint already
                    // guarantees each event is applied once.
                    "INSERT INTO {account_balances} VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (account_id) DO UPDATE SET customer_id = ?2, balance = ?3,
                     last_updated = ?4",
                    rusqlite::params![id, customer_id, signed(*initial_balance)?, at],
                )?;
                return Ok(());
            }
            AccountEvent::MoneyDeposited { amount } => signed(*amount)?,
            AccountEvent::MoneyWithdrawn { amount } => -signed(*amount)?,
            AccountEvent::AccountClosed {} => return Ok(()),
        };
        sql.execute(
            "UPDATE {account_balances} SET balance = balance + ?2, last_updated = ?3
             WHERE account_id = ?1",
            rusqlite::params![id, change, at],
        )?;
        Ok(())
    }
}

/// `transactions(position, account_id, kind, amount, recorded_at)`: every movement of money.
pub struct TransactionHistory;

impl ReadModel<Sqlite> for TransactionHistory {
    type Event = AccountEvent;
    fn name(&self) -> &str {
        "transaction_history"
    }
    fn filter(&self) -> Filter {
        Filter::default().categories(["account"]).event_types([
            "AccountOpened",
            "MoneyDeposited",
            "MoneyWithdrawn",
        ])
    }
    fn tables(&self) -> &[&'static str] {
        &["transactions"]
    }
    fn setup<'a>(&'a self, sql: &'a Sql<'a>) -> Result<(), HandlerError> {
        sql.execute_batch(
            "CREATE TABLE {transactions} (
                 position INTEGER PRIMARY KEY, account_id TEXT NOT NULL, kind TEXT NOT NULL,
                 amount INTEGER NOT NULL, recorded_at TEXT NOT NULL);
             CREATE INDEX {transactions}_by_account ON {transactions} (account_id, position);",
        )
    }
    fn apply<'a>(
        &'a self,
        sql: &'a Sql<'a>,
        e: &'a Envelope<'a, AccountEvent>,
    ) -> Result<(), HandlerError> {
        let amount = match &e.event {
            AccountEvent::AccountOpened {
                initial_balance, ..
            } => signed(*initial_balance)?,
            AccountEvent::MoneyDeposited { amount } => signed(*amount)?,
            AccountEvent::MoneyWithdrawn { amount } => -signed(*amount)?,
            AccountEvent::AccountClosed {} => return Ok(()),
        };
        sql.execute(
            "INSERT OR REPLACE INTO {transactions} VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![
                i64::try_from(e.position.0).unwrap_or(i64::MAX),
                e.stream_key(),
                e.event_type,
                amount,
                e.recorded_at.to_rfc3339()
            ],
        )?;
        Ok(())
    }
}

/// `monthly_summary(account_id, month, deposits, withdrawals, transactions)`.
pub struct MonthlySummary;

impl ReadModel<Sqlite> for MonthlySummary {
    type Event = AccountEvent;
    fn name(&self) -> &str {
        "monthly_summary"
    }
    fn filter(&self) -> Filter {
        Filter::default()
            .categories(["account"])
            .event_types(["MoneyDeposited", "MoneyWithdrawn"])
    }
    fn tables(&self) -> &[&'static str] {
        &["monthly_summary"]
    }
    fn setup<'a>(&'a self, sql: &'a Sql<'a>) -> Result<(), HandlerError> {
        sql.execute_batch(
            "CREATE TABLE {monthly_summary} (
                 account_id TEXT NOT NULL, month TEXT NOT NULL, deposits INTEGER NOT NULL,
                 withdrawals INTEGER NOT NULL, transactions INTEGER NOT NULL,
                 PRIMARY KEY (account_id, month))",
        )
    }
    fn apply<'a>(
        &'a self,
        sql: &'a Sql<'a>,
        e: &'a Envelope<'a, AccountEvent>,
    ) -> Result<(), HandlerError> {
        let (deposit, withdrawal) = match &e.event {
            AccountEvent::MoneyDeposited { amount } => (signed(*amount)?, 0),
            AccountEvent::MoneyWithdrawn { amount } => (0, signed(*amount)?),
            _ => return Ok(()),
        };
        sql.execute(
            "INSERT INTO {monthly_summary} VALUES (?1, ?2, ?3, ?4, 1)
             ON CONFLICT (account_id, month) DO UPDATE SET deposits = deposits + ?3,
             withdrawals = withdrawals + ?4, transactions = transactions + 1",
            rusqlite::params![
                e.stream_key(),
                e.recorded_at.format("%Y-%m").to_string(),
                deposit,
                withdrawal
            ],
        )?;
        Ok(())
    }
}

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
        accounts
            .execute(id, crate::sealed::open(owner, 100))
            .await?;
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
