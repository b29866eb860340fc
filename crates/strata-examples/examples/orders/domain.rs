//! An order's lifecycle: placed → paid → shipped → delivered (or cancelled before shipping).
//! Every command is checked against the order's status; an invalid transition is refused with
//! an error that says what the order's status is and what it would need to be.

use std::fmt;

use serde::{Deserialize, Serialize};
use strata::{Aggregate, DomainEvent};

/// Where an order is in its life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    #[default]
    NotPlaced,
    Placed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OrderStatus::NotPlaced => "not placed",
            OrderStatus::Placed => "placed",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
        })
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: u64,
}

/// The state rebuilt from the events.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub status: OrderStatus,
    pub customer: String,
    pub total_cents: u64,
    pub tracking: Option<String>,
}

/// What happened to an order. The variant names are the stored event types, so they keep
/// their `Order` prefix (the names other systems read in the log).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    #[serde(rename_all = "camelCase")]
    OrderPlaced {
        customer: String,
        lines: Vec<OrderLine>,
        total_cents: u64,
    },
    #[serde(rename_all = "camelCase")]
    OrderPaid {
        amount_cents: u64,
        payment_ref: String,
    },
    #[serde(rename_all = "camelCase")]
    OrderShipped {
        carrier: String,
        tracking: String,
    },
    OrderDelivered {},
    OrderCancelled {
        reason: String,
    },
}

impl DomainEvent for OrderEvent {}

/// What can be asked of an order.
#[derive(Debug, Clone)]
pub enum OrderCommand {
    Place {
        customer: String,
        lines: Vec<OrderLine>,
    },
    Pay {
        amount_cents: u64,
        payment_ref: String,
    },
    Ship {
        carrier: String,
        tracking: String,
    },
    Deliver,
    Cancel {
        reason: String,
    },
}

impl OrderCommand {
    fn action(&self) -> &'static str {
        match self {
            OrderCommand::Place { .. } => "place",
            OrderCommand::Pay { .. } => "pay",
            OrderCommand::Ship { .. } => "ship",
            OrderCommand::Deliver => "deliver",
            OrderCommand::Cancel { .. } => "cancel",
        }
    }
}

/// Why a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("cannot {action} an order that is {status}: {hint}")]
    InvalidTransition {
        action: &'static str,
        status: OrderStatus,
        hint: &'static str,
    },
    #[error("an order needs at least one line")]
    NoLines,
    #[error("line {index} has quantity 0")]
    ZeroQuantity { index: usize },
    #[error("the order total overflows")]
    TotalOverflow,
    #[error(
        "the payment of {paid_cents} cents does not match the order total of {total_cents} cents"
    )]
    WrongAmount { total_cents: u64, paid_cents: u64 },
    #[error("{0} must not be empty")]
    Missing(&'static str),
}

fn hint(action: &str, status: OrderStatus) -> &'static str {
    use OrderStatus::*;
    match (action, status) {
        (_, NotPlaced) => "place it first",
        (_, Cancelled) => "it was cancelled",
        (_, Delivered) => "it has already been delivered",
        ("place", _) => "it already exists",
        ("pay", _) => "it has already been paid",
        ("ship", Placed) => "it must be paid first",
        ("ship", _) => "it has already been shipped",
        ("deliver", Placed | Paid) => "it must be shipped first",
        ("cancel", Shipped) => "it is already on its way",
        _ => "this step does not follow from there",
    }
}

impl Order {
    fn refuse(&self, command: &OrderCommand) -> OrderError {
        let action = command.action();
        OrderError::InvalidTransition {
            action,
            status: self.status,
            hint: hint(action, self.status),
        }
    }
}

fn non_empty(what: &'static str, value: &str) -> Result<(), OrderError> {
    if value.trim().is_empty() {
        Err(OrderError::Missing(what))
    } else {
        Ok(())
    }
}

impl Aggregate for Order {
    type Event = OrderEvent;
    type Command = OrderCommand;
    type Error = OrderError;
    const CATEGORY: &'static str = "order";

    fn handle(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        use OrderStatus::*;
        match (&command, self.status) {
            (OrderCommand::Place { customer, lines }, NotPlaced) => {
                non_empty("customer", customer)?;
                if lines.is_empty() {
                    return Err(OrderError::NoLines);
                }
                let mut total_cents = 0u64;
                for (index, line) in lines.iter().enumerate() {
                    if line.quantity == 0 {
                        return Err(OrderError::ZeroQuantity { index });
                    }
                    total_cents = line
                        .unit_price_cents
                        .checked_mul(u64::from(line.quantity))
                        .and_then(|l| l.checked_add(total_cents))
                        .ok_or(OrderError::TotalOverflow)?;
                }
                Ok(vec![OrderEvent::OrderPlaced {
                    customer: customer.clone(),
                    lines: lines.clone(),
                    total_cents,
                }])
            }
            (
                OrderCommand::Pay {
                    amount_cents,
                    payment_ref,
                },
                Placed,
            ) => {
                non_empty("payment reference", payment_ref)?;
                if *amount_cents != self.total_cents {
                    return Err(OrderError::WrongAmount {
                        total_cents: self.total_cents,
                        paid_cents: *amount_cents,
                    });
                }
                Ok(vec![OrderEvent::OrderPaid {
                    amount_cents: *amount_cents,
                    payment_ref: payment_ref.clone(),
                }])
            }
            (OrderCommand::Ship { carrier, tracking }, Paid) => {
                non_empty("carrier", carrier)?;
                non_empty("tracking number", tracking)?;
                Ok(vec![OrderEvent::OrderShipped {
                    carrier: carrier.clone(),
                    tracking: tracking.clone(),
                }])
            }
            (OrderCommand::Deliver, Shipped) => Ok(vec![OrderEvent::OrderDelivered {}]),
            (OrderCommand::Cancel { reason }, Placed | Paid) => {
                non_empty("reason", reason)?;
                Ok(vec![OrderEvent::OrderCancelled {
                    reason: reason.clone(),
                }])
            }
            _ => Err(self.refuse(&command)),
        }
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::OrderPlaced {
                customer,
                total_cents,
                ..
            } => {
                self.status = OrderStatus::Placed;
                self.customer = customer.clone();
                self.total_cents = *total_cents;
            }
            OrderEvent::OrderPaid { .. } => self.status = OrderStatus::Paid,
            OrderEvent::OrderShipped { tracking, .. } => {
                self.status = OrderStatus::Shipped;
                self.tracking = Some(tracking.clone());
            }
            OrderEvent::OrderDelivered {} => self.status = OrderStatus::Delivered,
            OrderEvent::OrderCancelled { .. } => self.status = OrderStatus::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use strata::testing::AggregateTest;
    use strata::Repository;

    use super::OrderCommand::*;
    use super::OrderEvent::*;
    use super::*;

    fn line() -> OrderLine {
        OrderLine {
            sku: "BOOK-1".into(),
            quantity: 2,
            unit_price_cents: 1250,
        }
    }
    fn placed() -> OrderEvent {
        OrderPlaced {
            customer: "c-1".into(),
            lines: vec![line()],
            total_cents: 2500,
        }
    }
    fn paid() -> OrderEvent {
        OrderPaid {
            amount_cents: 2500,
            payment_ref: "pay-1".into(),
        }
    }
    fn shipped() -> OrderEvent {
        OrderShipped {
            carrier: "DHL".into(),
            tracking: "TRK1".into(),
        }
    }
    fn pay() -> OrderCommand {
        Pay {
            amount_cents: 2500,
            payment_ref: "pay-1".into(),
        }
    }
    fn ship() -> OrderCommand {
        Ship {
            carrier: "DHL".into(),
            tracking: "TRK1".into(),
        }
    }
    fn invalid(action: &'static str, status: OrderStatus, hint: &'static str) -> OrderError {
        OrderError::InvalidTransition {
            action,
            status,
            hint,
        }
    }

    #[test]
    fn the_happy_path() {
        AggregateTest::<Order>::new()
            .when(Place {
                customer: "c-1".into(),
                lines: vec![line()],
            })
            .then_expect_events([placed()]);
        AggregateTest::<Order>::given([placed()])
            .when(pay())
            .then_expect_events([paid()]);
        AggregateTest::<Order>::given([placed(), paid()])
            .when(ship())
            .then_expect_events([shipped()]);
        let done = AggregateTest::<Order>::given([placed(), paid(), shipped()])
            .when(Deliver)
            .then_expect_events([OrderDelivered {}]);
        assert_eq!(done.status, OrderStatus::Delivered);
        assert_eq!(done.tracking.as_deref(), Some("TRK1"));
    }

    #[test]
    fn steps_out_of_order_are_refused_with_a_clear_reason() {
        use OrderStatus::*;
        AggregateTest::<Order>::given([placed()])
            .when(ship())
            .then_expect_error(invalid("ship", Placed, "it must be paid first"));
        AggregateTest::<Order>::given([placed()])
            .when(Deliver)
            .then_expect_error(invalid("deliver", Placed, "it must be shipped first"));
        AggregateTest::<Order>::given([placed(), paid()])
            .when(pay())
            .then_expect_error(invalid("pay", Paid, "it has already been paid"));
        AggregateTest::<Order>::given([placed(), paid(), shipped()])
            .when(Cancel {
                reason: "changed my mind".into(),
            })
            .then_expect_error(invalid("cancel", Shipped, "it is already on its way"));
        AggregateTest::<Order>::new()
            .when(pay())
            .then_expect_error(invalid("pay", NotPlaced, "place it first"));
        AggregateTest::<Order>::given([placed(), paid(), shipped(), OrderDelivered {}])
            .when(Deliver)
            .then_expect_error(invalid(
                "deliver",
                Delivered,
                "it has already been delivered",
            ));
        let err = AggregateTest::<Order>::given([placed()])
            .when(ship())
            .then_expect_error_matching(|_| true);
        assert_eq!(
            err.to_string(),
            "cannot ship an order that is placed: it must be paid first"
        );
    }

    #[test]
    fn a_cancelled_order_stays_cancelled() {
        let cancelled = OrderCancelled {
            reason: "out of stock".into(),
        };
        AggregateTest::<Order>::given([placed(), paid()])
            .when(Cancel {
                reason: "out of stock".into(),
            })
            .then_expect_events([cancelled.clone()]);
        AggregateTest::<Order>::given([placed(), cancelled])
            .when(pay())
            .then_expect_error(invalid("pay", OrderStatus::Cancelled, "it was cancelled"));
    }

    #[test]
    fn orders_and_payments_are_validated() {
        AggregateTest::<Order>::new()
            .when(Place {
                customer: "c-1".into(),
                lines: vec![],
            })
            .then_expect_error(OrderError::NoLines);
        AggregateTest::<Order>::new()
            .when(Place {
                customer: "c-1".into(),
                lines: vec![OrderLine {
                    quantity: 0,
                    ..line()
                }],
            })
            .then_expect_error(OrderError::ZeroQuantity { index: 0 });
        AggregateTest::<Order>::new()
            .when(Place {
                customer: " ".into(),
                lines: vec![line()],
            })
            .then_expect_error(OrderError::Missing("customer"));
        AggregateTest::<Order>::new()
            .when(Place {
                customer: "c".into(),
                lines: vec![OrderLine {
                    quantity: 2,
                    unit_price_cents: u64::MAX,
                    sku: "X".into(),
                }],
            })
            .then_expect_error(OrderError::TotalOverflow);
        AggregateTest::<Order>::given([placed()])
            .when(Pay {
                amount_cents: 100,
                payment_ref: "p".into(),
            })
            .then_expect_error(OrderError::WrongAmount {
                total_cents: 2500,
                paid_cents: 100,
            });
    }

    #[tokio::test]
    async fn the_lifecycle_on_the_embedded_store() {
        let dir = strata_examples::ScratchDir::new("orders").unwrap();
        let store = strata_log::LogStore::open(dir.path()).unwrap();
        let orders = Repository::<Order, _>::new(store);
        orders
            .execute(
                "1",
                Place {
                    customer: "c-1".into(),
                    lines: vec![line()],
                },
            )
            .await
            .unwrap();
        let err = orders.execute("1", ship()).await.unwrap_err();
        assert_eq!(
            err.rejection(),
            Some(&invalid(
                "ship",
                OrderStatus::Placed,
                "it must be paid first"
            ))
        );
        for command in [pay(), ship(), Deliver] {
            orders.execute("1", command).await.unwrap();
        }
        let order = orders.load("1").await.unwrap();
        assert_eq!(
            (order.status, order.version),
            (OrderStatus::Delivered, Some(3))
        );
        let history = orders.read_events("1", 0, 10).await.unwrap();
        let types: Vec<_> = history.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            types,
            ["OrderPlaced", "OrderPaid", "OrderShipped", "OrderDelivered"]
        );
    }
}
