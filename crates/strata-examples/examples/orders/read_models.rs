//! The orders' read side: orders by status with counts (async), and spend per customer
//! (inline), in SQLite next to the data directory.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata::projection::{
    Envelope, HandlerError, ProjectedStore, Projections, ReadModel, Sql, Sqlite, SqliteReadModels,
    Typed,
};
use strata::{Filter, Repository};
use strata_log::LogStore;

use crate::domain::{Order, OrderCommand, OrderEvent, OrderLine};

fn cents(total: u64) -> Result<i64, HandlerError> {
    i64::try_from(total).map_err(|_| HandlerError::new("total beyond i64"))
}

/// `orders(order_id, customer, status, total_cents)` and `order_status_counts(status, orders)`.
pub struct OrdersByStatus;

impl ReadModel<Sqlite> for OrdersByStatus {
    type Event = OrderEvent;
    fn name(&self) -> &str {
        "orders_by_status"
    }
    fn filter(&self) -> Filter {
        Filter::default().categories(["order"])
    }
    fn tables(&self) -> &[&'static str] {
        &["orders", "order_status_counts"]
    }
    fn setup<'a>(&'a self, sql: &'a Sql<'a>) -> Result<(), HandlerError> {
        sql.execute_batch(
            "CREATE TABLE {orders} (order_id TEXT PRIMARY KEY, customer TEXT NOT NULL,
                                    status TEXT NOT NULL, total_cents INTEGER NOT NULL);
             CREATE INDEX {orders}_by_status ON {orders} (status);
             CREATE TABLE {order_status_counts} (status TEXT PRIMARY KEY,
                                                 orders INTEGER NOT NULL);",
        )
    }
    fn apply<'a>(
        &'a self,
        sql: &'a Sql<'a>,
        e: &'a Envelope<'a, OrderEvent>,
    ) -> Result<(), HandlerError> {
        let id = e.stream_key();
        let new_status = match &e.event {
            OrderEvent::OrderPlaced {
                customer,
                total_cents,
                ..
            } => {
                sql.execute(
                    "INSERT INTO {orders} VALUES (?1, ?2, 'placed', ?3)",
                    rusqlite::params![id, customer, cents(*total_cents)?],
                )?;
                return bump(sql, "placed", 1);
            }
            OrderEvent::OrderPaid { .. } => "paid",
            OrderEvent::OrderShipped { .. } => "shipped",
            OrderEvent::OrderDelivered {} => "delivered",
            OrderEvent::OrderCancelled { .. } => "cancelled",
        };
        let old: Option<String> = sql.query_row(
            "SELECT status FROM {orders} WHERE order_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        let Some(old) = old else {
            return Err(HandlerError::new(format!(
                "order {id} changed before it was placed"
            )));
        };
        sql.execute(
            "UPDATE {orders} SET status = ?2 WHERE order_id = ?1",
            [id, new_status],
        )?;
        bump(sql, &old, -1)?;
        bump(sql, new_status, 1)
    }
}

fn bump(sql: &Sql<'_>, status: &str, by: i64) -> Result<(), HandlerError> {
    sql.execute(
        "INSERT INTO {order_status_counts} VALUES (?1, ?2)
         ON CONFLICT (status) DO UPDATE SET orders = orders + ?2",
        rusqlite::params![status, by],
    )?;
    Ok(())
}

/// `customer_spend(customer, orders, total_cents)`: what each customer has ordered.
pub struct CustomerSpend;

impl ReadModel<Sqlite> for CustomerSpend {
    type Event = OrderEvent;
    fn name(&self) -> &str {
        "customer_spend"
    }
    fn filter(&self) -> Filter {
        Filter::default()
            .categories(["order"])
            .event_types(["OrderPlaced"])
    }
    fn tables(&self) -> &[&'static str] {
        &["customer_spend"]
    }
    fn setup<'a>(&'a self, sql: &'a Sql<'a>) -> Result<(), HandlerError> {
        sql.execute_batch(
            "CREATE TABLE {customer_spend} (customer TEXT PRIMARY KEY, orders INTEGER NOT NULL,
                                            total_cents INTEGER NOT NULL)",
        )
    }
    fn apply<'a>(
        &'a self,
        sql: &'a Sql<'a>,
        e: &'a Envelope<'a, OrderEvent>,
    ) -> Result<(), HandlerError> {
        let OrderEvent::OrderPlaced {
            customer,
            total_cents,
            ..
        } = &e.event
        else {
            return Ok(());
        };
        sql.execute(
            "INSERT INTO {customer_spend} VALUES (?1, 1, ?2) ON CONFLICT (customer)
             DO UPDATE SET orders = orders + 1, total_cents = total_cents + ?2",
            rusqlite::params![customer, cents(*total_cents)?],
        )?;
        Ok(())
    }
}

/// The read side in action, on its own store under `dir`.
pub async fn demo(dir: &Path) -> Result<(), Box<dyn Error>> {
    let data = dir.join("orders-cqrs");
    let store = LogStore::open(&data)?;
    let models = SqliteReadModels::next_to(&data)?;
    println!("\nRead models (CQRS): {}", models.path().display());
    let projections = Projections::new(Arc::new(store.clone()), models.clone());
    projections.inline(Typed::new(CustomerSpend)).await?;
    projections.spawn(Typed::new(OrdersByStatus)).await?;
    let orders =
        Repository::<Order, _>::new(ProjectedStore::new(store.clone(), projections.clone()));
    let query = models.connect()?;

    println!("1. Twelve orders move through their lifecycle.");
    let mut last = None;
    for n in 0..12u64 {
        let id = format!("{}", 2000 + n);
        let placed = orders
            .execute(
                &id,
                OrderCommand::Place {
                    customer: format!("customer-{}", n % 3),
                    lines: vec![OrderLine {
                        sku: "MUG-STRATA".into(),
                        quantity: 1,
                        unit_price_cents: 900,
                    }],
                },
            )
            .await?;
        last = placed.position;
        let steps: Vec<OrderCommand> = match n % 4 {
            0 => vec![],
            1 => vec![OrderCommand::Pay {
                amount_cents: 900,
                payment_ref: format!("pay-{n}"),
            }],
            2 => vec![
                OrderCommand::Pay {
                    amount_cents: 900,
                    payment_ref: format!("pay-{n}"),
                },
                OrderCommand::Ship {
                    carrier: "PostNL".into(),
                    tracking: format!("3S{n}"),
                },
                OrderCommand::Deliver,
            ],
            _ => vec![OrderCommand::Cancel {
                reason: "changed my mind".into(),
            }],
        };
        for step in steps {
            last = orders.execute(&id, step).await?.position;
        }
    }
    println!("   inline customer_spend, queried with no wait:");
    let mut stmt = query
        .prepare("SELECT customer, orders, total_cents FROM customer_spend ORDER BY customer")?;
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })? {
        let (customer, n, cents) = row?;
        println!("   {customer}: {n} orders, {cents} cents");
    }

    println!("2. Orders by status (async): wait for the last command's position, then query.");
    projections
        .wait_for(
            "orders_by_status",
            last.unwrap_or_default(),
            Duration::from_secs(5),
        )
        .await?;
    print_counts(&query)?;

    println!("3. Rebuild orders_by_status from event 0; queries keep the old copy until the swap.");
    let checkpoint = projections
        .rebuild("orders_by_status", |p| {
            println!(
                "   rebuild: {} events applied, {} positions left, {:.0} events/s",
                p.applied_events, p.remaining_events, p.events_per_second
            );
        })
        .await?;
    let at = checkpoint.map_or_else(|| "none".to_owned(), |p| p.to_string());
    println!("   swapped in at checkpoint {at}");
    print_counts(&query)?;
    projections.shutdown().await;
    Ok(())
}

fn print_counts(query: &rusqlite::Connection) -> Result<(), Box<dyn Error>> {
    let mut stmt =
        query.prepare("SELECT status, orders FROM order_status_counts ORDER BY status")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (status, n) = row?;
        println!("   {status:<10} {n}");
    }
    Ok(())
}
