//! An order lifecycle, placed → paid → shipped → delivered, event-sourced on Strata's
//! embedded store. Invalid transitions are refused with an error saying why.
//!
//! Run it with `cargo run --release -p strata-examples --example orders` (optionally followed by a directory to
//! keep the data in; by default a temporary directory is used).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod domain;
mod read_models;

use std::error::Error;

use domain::{Order, OrderCommand, OrderLine};
use strata::{CommandEnvelope, DomainEvent, ExecuteError, Repository};
use strata_log::LogStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let temp = strata_examples::ScratchDir::new("orders")?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    println!("Strata orders example: an order's lifecycle as events on the embedded store");
    println!("Data directory: {}\n", dir.display());
    let orders = Repository::<Order, _>::new(LogStore::open(&dir)?);

    let lines = vec![
        OrderLine {
            sku: "BOOK-DDIA".into(),
            quantity: 1,
            unit_price_cents: 4_200,
        },
        OrderLine {
            sku: "MUG-STRATA".into(),
            quantity: 2,
            unit_price_cents: 900,
        },
    ];

    println!("1. Order 1001 goes the whole way. One checkout = one correlation id on every event.");
    let checkout = |command| CommandEnvelope::new(command).correlation_id("checkout-77");
    let steps = [
        OrderCommand::Place {
            customer: "customer-ada".into(),
            lines: lines.clone(),
        },
        OrderCommand::Pay {
            amount_cents: 6_000,
            payment_ref: "pay-5531".into(),
        },
        OrderCommand::Ship {
            carrier: "PostNL".into(),
            tracking: "3SABC123".into(),
        },
        OrderCommand::Deliver,
    ];
    for command in steps {
        run(&orders, "1001", checkout(command)).await?;
    }
    println!();

    println!("2. Order 1002: steps out of order are refused, and nothing is recorded for them.");
    run(
        &orders,
        "1002",
        OrderCommand::Pay {
            amount_cents: 6_000,
            payment_ref: "pay-0".into(),
        },
    )
    .await?;
    run(
        &orders,
        "1002",
        OrderCommand::Place {
            customer: "customer-bob".into(),
            lines,
        },
    )
    .await?;
    run(
        &orders,
        "1002",
        OrderCommand::Ship {
            carrier: "PostNL".into(),
            tracking: "3SXYZ".into(),
        },
    )
    .await?;
    run(&orders, "1002", OrderCommand::Deliver).await?;
    run(
        &orders,
        "1002",
        OrderCommand::Pay {
            amount_cents: 5_000,
            payment_ref: "pay-6000".into(),
        },
    )
    .await?;
    run(
        &orders,
        "1002",
        OrderCommand::Pay {
            amount_cents: 6_000,
            payment_ref: "pay-6001".into(),
        },
    )
    .await?;
    run(
        &orders,
        "1002",
        OrderCommand::Pay {
            amount_cents: 6_000,
            payment_ref: "pay-6002".into(),
        },
    )
    .await?;
    run(
        &orders,
        "1002",
        OrderCommand::Cancel {
            reason: "customer changed their mind".into(),
        },
    )
    .await?;
    run(
        &orders,
        "1002",
        OrderCommand::Ship {
            carrier: "PostNL".into(),
            tracking: "3SXYZ".into(),
        },
    )
    .await?;
    println!();

    println!("3. What each order's stream holds:");
    for id in ["1001", "1002"] {
        let order = orders.load(id).await?;
        println!(
            "   order-{id}: status {}, total {} cents, {} events",
            order.status,
            order.total_cents,
            order.version.map_or(0, |v| v + 1)
        );
        for e in orders.read_events(id, 0, 100).await? {
            let payload = e.event.encode().map(|d| d.data.to_string())?;
            println!(
                "     version {} | {:<15} {} | correlation {}",
                e.stream_version,
                e.event_type,
                payload,
                e.metadata.correlation_id().unwrap_or("-")
            );
        }
    }
    read_models::demo(&dir).await?;
    println!("\nDone.");
    Ok(())
}

/// Executes one command and says what happened.
async fn run(
    orders: &Repository<Order, LogStore>,
    id: &str,
    command: impl Into<CommandEnvelope<OrderCommand>>,
) -> Result<(), Box<dyn Error>> {
    let command = command.into();
    let action = describe(&command.command);
    match orders.execute(id, command).await {
        Ok(done) => {
            for event in &done.events {
                let stored = event.encode()?;
                println!(
                    "   order-{id}: {action:<36} -> {} (version {}); now {}",
                    stored.event_type,
                    done.version.unwrap_or_default(),
                    done.status
                );
            }
            Ok(())
        }
        Err(ExecuteError::Rejected(reason)) => {
            println!("   order-{id}: {action:<36} -> refused: {reason}");
            Ok(())
        }
        Err(other) => Err(other.into()),
    }
}

/// A command in words.
fn describe(command: &OrderCommand) -> String {
    match command {
        OrderCommand::Place { customer, lines } => {
            let items: u32 = lines.iter().map(|l| l.quantity).sum();
            format!("place {items} items for {customer}")
        }
        OrderCommand::Pay {
            amount_cents,
            payment_ref,
        } => format!("pay {amount_cents} cents ({payment_ref})"),
        OrderCommand::Ship { carrier, tracking } => format!("ship with {carrier} ({tracking})"),
        OrderCommand::Deliver => "deliver".to_owned(),
        OrderCommand::Cancel { reason } => format!("cancel ({reason})"),
    }
}
