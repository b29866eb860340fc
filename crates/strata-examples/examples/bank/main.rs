//! The mission's bank account, event-sourced on Strata's embedded store.
//!
//! Run it with `cargo run --release -p strata-examples --example bank` (optionally followed by a directory to
//! keep the data in; by default a temporary directory is used and removed at the end).
//!
//! It opens an account, deposits and withdraws, shows the business rules refusing bad
//! commands, prints the stored events with their metadata, answers "what was the balance
//! as of ...?", shows snapshots keeping loads short, and forgets a customer (GDPR): the
//! customers' names and emails are sealed under a key per customer, and forgetting one
//! destroys the key. Set `BANK_MASTER_KEY` (64 hex digits, `strata keygen`) to reopen a
//! data directory of your own; without it, a key is made for the run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod domain;
// The read side (CQRS): read models in SQLite, and a run of them.
mod cqrs;
mod read_models;
// The store that seals the customers' personal data.
mod sealed;

use std::error::Error;
use std::time::Duration;

use domain::{AccountCommand, BankAccount};
use sealed::{demo_master_key, open, open_accounts};
use strata::{CommandEnvelope, ExecuteError, ReadStreamOptions, Repository};
use strata_shred::Shredded;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let temp = strata_examples::ScratchDir::new("bank")?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    println!("Strata bank example: event-sourced accounts on the embedded store");
    println!("Data directory: {}\n", dir.display());

    // Snapshot every 100 events (the default, spelled out here).
    let accounts = open_accounts(&dir, demo_master_key()?)
        .await?
        .with_snapshot_interval(100);

    println!("1. The mission's account: opened with 100, then +200, then -150.");
    // Every command carries who asked and which request it belongs to; the events inherit it.
    let teller = |command| {
        CommandEnvelope::new(command)
            .user_id("teller-7")
            .correlation_id("branch-visit-42")
    };
    run(&accounts, "123", teller(open("Alice", 100))).await?;
    run(
        &accounts,
        "123",
        teller(AccountCommand::Deposit { amount: 200 }),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after_deposit = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    run(
        &accounts,
        "123",
        teller(AccountCommand::Withdraw { amount: 150 }),
    )
    .await?;
    let account = accounts.load("123").await?;
    // The repository keeps the state it last saw: say where this balance came from.
    let source = if account.from_cache {
        format!(
            "the repository's cache, at version {}",
            account.version.map_or("none".to_owned(), |v| v.to_string())
        )
    } else {
        format!("replay({} events)", account.events_replayed)
    };
    println!(
        "   Current balance = 100 + 200 - 150 = {} (from {source})\n",
        account.balance
    );

    println!("2. Business rules refuse bad commands (nothing is written when they do).");
    for command in [
        AccountCommand::Withdraw { amount: 1000 },
        AccountCommand::Deposit { amount: -5 },
        AccountCommand::Withdraw { amount: 0 },
        AccountCommand::Close,
        open("Mallory", 1_000_000),
    ] {
        run(&accounts, "123", teller(command)).await?;
    }
    run(
        &accounts,
        "123",
        teller(AccountCommand::Withdraw { amount: 150 }),
    )
    .await?;
    run(&accounts, "123", teller(AccountCommand::Close)).await?;
    run(
        &accounts,
        "123",
        teller(AccountCommand::Deposit { amount: 10 }),
    )
    .await?;
    run(
        &accounts,
        "999",
        teller(AccountCommand::Deposit { amount: 10 }),
    )
    .await?;
    println!();

    println!("3. What is stored: the complete history of account-123, oldest first.");
    for e in accounts.read_events("123", 0, 100).await? {
        println!(
            "   version {} | position {} | {} UTC | {}",
            e.stream_version,
            e.position,
            e.recorded_at.format("%H:%M:%S%.3f"),
            describe(&e.event),
        );
        println!(
            "     metadata: correlation {}, causation {} (the command), user {}",
            e.metadata.correlation_id().unwrap_or("-"),
            e.metadata.causation_id().unwrap_or("-"),
            e.metadata.user_id().unwrap_or("-"),
        );
    }
    println!();

    println!("4. Temporal query: what was the balance as of a past moment?");
    let then = accounts.load_as_of("123", after_deposit).await?;
    println!(
        "   As of {} UTC (after the deposit, before the withdrawal): balance {} (version {})",
        after_deposit.format("%H:%M:%S%.3f"),
        then.balance,
        version(then.version)
    );
    let first = accounts.load_at_version("123", 0).await?;
    println!("   At version 0 (just opened): balance {}", first.balance);
    let now = accounts.load("123").await?;
    println!(
        "   Now: balance {}, status {:?} (version {})\n",
        now.balance,
        now.status,
        version(now.version)
    );

    println!("5. Snapshots: account-456 gets 250 deposits; a snapshot is taken every 100 events.");
    run(&accounts, "456", open("Bob", 0)).await?;
    for _ in 0..250 {
        let done = accounts
            .execute("456", AccountCommand::Deposit { amount: 1 })
            .await?;
        if let Some(v) = done.snapshot_version {
            println!("   snapshot written at version {v}");
        }
    }
    // A fresh repository has nothing cached: it loads the way a restarted service would.
    let cold = Repository::<BankAccount, _>::new(accounts.store().as_ref().clone());
    let bob = cold.load("456").await?;
    println!(
        "   Loading account-456 cold (version {}): started from the snapshot at version {} and \
         replayed only {} events; balance {}",
        version(bob.version),
        version(bob.snapshot_version),
        bob.events_replayed,
        bob.balance
    );
    let past = cold.load_at_version("456", 150).await?;
    println!(
        "   Loading it at version 150: from the snapshot at version {}, replayed {} events; \
         balance {}",
        version(past.snapshot_version),
        past.events_replayed,
        past.balance
    );

    println!("\n6. Forgetting a customer (GDPR): Bob's name and email are sealed under his key.");
    let stored = accounts
        .store()
        .inner()
        .read_stream(&"account-456".parse()?, ReadStreamOptions::forward())
        .await?;
    println!("   As stored: {}", String::from_utf8_lossy(&stored[0].data));
    let report = accounts.store().forget("c-bob").await?;
    let outcome = match report.outcome {
        strata_shred::ForgetOutcome::Forgotten => "his key is destroyed",
        strata_shred::ForgetOutcome::AlreadyForgotten => "he was already forgotten",
        strata_shred::ForgetOutcome::NeverSeen => "he had nothing sealed",
    };
    println!(
        "   Forgot customer c-bob: {outcome}; $subjectForgotten at position {} tells read models",
        report.position
    );
    let cold = Repository::<BankAccount, _>::new(accounts.store().as_ref().clone());
    let bob = cold.load("456").await?;
    println!(
        "   Loading account-456 now: owner {}, balance {} (replayed {} events: the snapshot \
         was sealed under Bob's key too)",
        bob.owner.as_deref().unwrap_or("(forgotten)"),
        bob.balance,
        bob.events_replayed
    );
    cqrs::demo(&dir).await?;
    println!("\nDone. Every state above was rebuilt from events; nothing was updated in place.");
    Ok(())
}

/// Executes one command and says what happened.
async fn run(
    accounts: &Repository<BankAccount, Shredded>,
    id: &str,
    command: impl Into<CommandEnvelope<AccountCommand>>,
) -> Result<(), Box<dyn Error>> {
    let command = command.into();
    let described = format!("{:?}", command.command);
    match accounts.execute(id, command).await {
        Ok(done) => {
            for event in &done.events {
                println!(
                    "   account-{id}: {described:<38} -> recorded {} (version {}, position {}); \
                     balance {}",
                    describe(event),
                    version(done.version),
                    done.position.unwrap_or_default(),
                    done.balance
                );
            }
            Ok(())
        }
        Err(ExecuteError::Rejected(reason)) => {
            println!("   account-{id}: {described:<38} -> refused: {reason}");
            Ok(())
        }
        Err(other) => Err(other.into()),
    }
}

/// An event as it is stored: its type and its JSON payload.
fn describe(event: &domain::AccountEvent) -> String {
    use strata::DomainEvent;
    match event.encode() {
        Ok(e) => format!("{} {}", e.event_type, e.data),
        Err(e) => format!("{event:?} (not encodable: {e})"),
    }
}

fn version(v: Option<u64>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}
