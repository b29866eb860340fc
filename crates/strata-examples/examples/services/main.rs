//! Command handlers that consult services — a clock, exchange rates, an email directory — on
//! Strata's embedded store.
//!
//! Run it with `cargo run --release -p strata-examples --example services` (optionally followed by a directory to
//! keep the data in; by default a temporary directory is used).
//!
//! The commands carry only what the caller knows. The time comes from the services' clock,
//! the exchange rate from a rate service, and "is this email taken?" from a read model; the
//! repository holds the services and passes them to every handler (again on a retry). The
//! events record the answers, so a replay never asks again. The tests in `domain.rs` fix the
//! clock and stub the services.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Amounts are in cents and written `50_00` (50.00): the grouping shows the decimal point.
#![allow(clippy::inconsistent_digit_grouping)]

mod domain;
mod services;

use std::error::Error;
use std::sync::Arc;

use domain::{
    normalize_email, Account, AccountCommand, AccountServices, Claim, EmailClaim, User,
    UserCommand, UserServices,
};
use services::{Currency, EmailIndex, Rate, RateTable};
use strata::{
    Clock, EventStore, ExecuteError, HandleWithServices, Repository, SnapshotStore, SystemClock,
};
use strata_log::LogStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let temp = strata_examples::ScratchDir::new("services")?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    println!("Strata services example: handlers that ask a clock, a rate service, a directory");
    println!("Data directory: {}\n", dir.display());
    let store = LogStore::open(&dir)?;

    // The services, built once and held by the repositories. In production the rate table
    // would be a client of a rates provider; tests pass a fixed clock and stubs instead.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let rates = Arc::new(RateTable::default());
    rates
        .quote(
            Currency::Eur,
            Currency::Usd,
            Rate {
                per_million: 1_085_000,
            },
        )
        .quote(
            Currency::Gbp,
            Currency::Usd,
            Rate {
                per_million: 1_270_000,
            },
        );
    let accounts = Repository::<Account, _>::with_services(
        store.clone(),
        AccountServices {
            clock: clock.clone(),
            rates: rates.clone(),
        },
    );

    println!("1. A USD account takes deposits in USD and in EUR; the time and the rate come from");
    println!("   the services, and the events record them:");
    use AccountCommand::*;
    let open = Open {
        owner: "Ada".into(),
        currency: Currency::Usd,
    };
    run(&accounts, "7", open).await?;
    run(
        &accounts,
        "7",
        Deposit {
            amount_cents: 100_00,
        },
    )
    .await?;
    let eur = DepositForeign {
        amount_cents: 50_00,
        currency: Currency::Eur,
    };
    run(&accounts, "7", eur.clone()).await?;
    let account = accounts.load("7").await?;
    println!(
        "   Balance: {}.{:02} USD (100.00 + 50.00 EUR at 1.085)\n",
        account.balance_cents / 100,
        account.balance_cents % 100
    );

    println!("2. A currency without a quote is refused; a rate service that is down is not a");
    println!("   refusal but a service error, and nothing is written either way:");
    let chf = DepositForeign {
        amount_cents: 20_00,
        currency: Currency::Chf,
    };
    run(&accounts, "7", chf).await?;
    rates.set_down(true);
    run(&accounts, "7", eur.clone()).await?;
    rates.set_down(false);
    run(&accounts, "7", eur).await?;
    println!();

    println!("3. The stored events: a replay reads the rate and the time, never asks for them.");
    for event in accounts.read_events("7", 0, 100).await? {
        let data = accounts.codec().encode(&event.event)?;
        println!(
            "   v{} {:<21} {}",
            event.stream_version,
            data.event_type,
            String::from_utf8_lossy(&data.data)
        );
    }
    println!();

    println!("4. Registration: the email must be unique, and a read model of the user events");
    println!("   (caught up before each answer) says whether it is taken:");
    let users = Repository::<User, _>::with_services(
        store.clone(),
        UserServices {
            clock: clock.clone(),
            directory: Arc::new(EmailIndex::new(store.clone())),
        },
    );
    let register = |username: &str, email: &str| UserCommand::Register {
        username: username.into(),
        email: email.into(),
    };
    run(&users, "1", register("ada", " Ada@Example.com ")).await?;
    run(&users, "2", register("countess", "ada@example.com")).await?;
    run(&users, "2", register("grace", "grace@example.com")).await?;
    let change = UserCommand::ChangeEmail {
        email: "ADA@example.com".into(),
    };
    run(&users, "2", change).await?;
    println!();

    println!("5. The caveat: the directory's answer and the append are not atomic, so two racing");
    println!("   registrations of one address could both pass. Where that must never happen, the");
    println!("   address gets a stream of its own, claimed expecting no stream; of two racing");
    println!("   claims the store lets exactly one append:");
    let claims = Repository::<EmailClaim, _>::new(store.clone());
    let address = normalize_email("hopper@example.com")?;
    let (third, fourth) = tokio::join!(
        claims.execute(&address, Claim { user: "3".into() }),
        claims.execute(&address, Claim { user: "4".into() }),
    );
    for (user, outcome) in [("3", third), ("4", fourth)] {
        match outcome {
            Ok(done) => println!(
                "   user {user}: claimed emailclaim-{address} (attempts: {})",
                done.attempts
            ),
            Err(ExecuteError::Rejected(refusal)) => println!("   user {user}: refused: {refusal}"),
            Err(other) => return Err(other.into()),
        }
    }
    println!("\nDone.");
    Ok(())
}

/// Executes one command and says what happened.
async fn run<A, S>(
    repository: &Repository<A, S>,
    id: &str,
    command: A::Command,
) -> Result<(), Box<dyn Error>>
where
    A: HandleWithServices,
    S: EventStore + SnapshotStore,
{
    let described = format!("{command:?}");
    let category = <A as strata::AggregateState>::CATEGORY;
    match repository.execute(id, command).await {
        Ok(done) if done.events.is_empty() => {
            println!("   {category}-{id}: {described} -> nothing to do");
        }
        Ok(done) => {
            for event in &done.events {
                let data = repository.codec().encode(event)?;
                println!(
                    "   {category}-{id}: {described}\n      -> {} {}",
                    data.event_type,
                    String::from_utf8_lossy(&data.data)
                );
            }
        }
        Err(ExecuteError::Rejected(refusal)) => {
            println!("   {category}-{id}: {described}\n      -> refused: {refusal}");
        }
        Err(ExecuteError::Service { source, .. }) => {
            println!(
                "   {category}-{id}: {described}\n      -> not decided: {source} (try again later)"
            );
        }
        Err(other) => return Err(other.into()),
    }
    Ok(())
}
