//! The bank's read side (the mission's three projections): account balances (inline),
//! transaction history and a monthly summary per account (async), all in SQLite next to the
//! data directory. Queries read only these tables; `cqrs.rs` runs them.

use strata::projection::{Envelope, HandlerError, ReadModel, Sql, Sqlite};
use strata::Filter;

use crate::domain::AccountEvent;

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
