//! The mission's bank account as an event-sourced aggregate.
//!
//! Events: `AccountOpened`, `MoneyDeposited`, `MoneyWithdrawn`, `AccountClosed`.
//! Rules: amounts must be positive, no overdraft, nothing happens to a closed account, and an
//! account can only be closed once it is empty.
//!
//! The customer's name and email are personal data: `sealed.rs` names them, and the store
//! seals them under the customer's key (docs/gdpr.md). Once the customer is forgotten they read
//! as `None`; the money still adds up.

use serde::{Deserialize, Serialize};
use strata::{Aggregate, DomainEvent};

/// Where an account is in its life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// No `AccountOpened` yet.
    #[default]
    NotOpened,
    /// Open for business.
    Open,
    /// Closed for good.
    Closed,
}

/// The state rebuilt from the events: `balance = replay(events)`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct BankAccount {
    pub status: Status,
    pub customer_id: String,
    /// The owner's name; `None` once the customer is forgotten.
    pub owner: Option<String>,
    pub balance: u64,
}

/// What happened to an account. The variant names are the stored event types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// `owner` and `email` are personal data of the customer `customer_id`: `None` when read
    /// after the customer was forgotten.
    #[serde(rename_all = "camelCase")]
    AccountOpened {
        customer_id: String,
        owner: Option<String>,
        email: Option<String>,
        initial_balance: u64,
    },
    MoneyDeposited {
        amount: u64,
    },
    MoneyWithdrawn {
        amount: u64,
    },
    AccountClosed {},
}

impl DomainEvent for AccountEvent {}

/// What a teller can ask. Amounts arrive from outside, so they are signed and checked.
#[derive(Debug, Clone)]
pub enum AccountCommand {
    Open {
        customer_id: String,
        owner: String,
        email: String,
        initial_balance: i64,
    },
    Deposit {
        amount: i64,
    },
    Withdraw {
        amount: i64,
    },
    Close,
}

/// Why a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("amounts must be positive; got {0}")]
    AmountNotPositive(i64),
    #[error("an opening balance cannot be negative; got {0}")]
    NegativeOpeningBalance(i64),
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account has not been opened")]
    NotOpened,
    #[error("the account is closed")]
    Closed,
    #[error("insufficient funds: the balance is {balance}, the withdrawal is {requested}")]
    InsufficientFunds { balance: u64, requested: u64 },
    #[error("the account still holds {balance}; withdraw it before closing")]
    NotEmpty { balance: u64 },
    #[error("the balance would overflow")]
    Overflow,
}

impl BankAccount {
    fn ensure_open(&self) -> Result<(), AccountError> {
        match self.status {
            Status::Open => Ok(()),
            Status::NotOpened => Err(AccountError::NotOpened),
            Status::Closed => Err(AccountError::Closed),
        }
    }
}

fn positive(amount: i64) -> Result<u64, AccountError> {
    u64::try_from(amount)
        .ok()
        .filter(|a| *a > 0)
        .ok_or(AccountError::AmountNotPositive(amount))
}

impl Aggregate for BankAccount {
    type Event = AccountEvent;
    type Command = AccountCommand;
    type Error = AccountError;
    const CATEGORY: &'static str = "account";

    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open {
                customer_id,
                owner,
                email,
                initial_balance,
            } => {
                match self.status {
                    Status::NotOpened => {}
                    Status::Open => return Err(AccountError::AlreadyOpen),
                    Status::Closed => return Err(AccountError::Closed),
                }
                let initial_balance = u64::try_from(initial_balance)
                    .map_err(|_| AccountError::NegativeOpeningBalance(initial_balance))?;
                Ok(vec![AccountEvent::AccountOpened {
                    customer_id,
                    owner: Some(owner),
                    email: Some(email),
                    initial_balance,
                }])
            }
            AccountCommand::Deposit { amount } => {
                self.ensure_open()?;
                let amount = positive(amount)?;
                self.balance
                    .checked_add(amount)
                    .ok_or(AccountError::Overflow)?;
                Ok(vec![AccountEvent::MoneyDeposited { amount }])
            }
            AccountCommand::Withdraw { amount } => {
                self.ensure_open()?;
                let amount = positive(amount)?;
                if amount > self.balance {
                    return Err(AccountError::InsufficientFunds {
                        balance: self.balance,
                        requested: amount,
                    });
                }
                Ok(vec![AccountEvent::MoneyWithdrawn { amount }])
            }
            AccountCommand::Close => {
                self.ensure_open()?;
                if self.balance > 0 {
                    return Err(AccountError::NotEmpty {
                        balance: self.balance,
                    });
                }
                Ok(vec![AccountEvent::AccountClosed {}])
            }
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::AccountOpened {
                customer_id,
                owner,
                initial_balance,
                ..
            } => {
                self.status = Status::Open;
                self.customer_id = customer_id.clone();
                self.owner = owner.clone();
                self.balance = *initial_balance;
            }
            AccountEvent::MoneyDeposited { amount } => {
                self.balance = self.balance.saturating_add(*amount)
            }
            AccountEvent::MoneyWithdrawn { amount } => {
                self.balance = self.balance.saturating_sub(*amount)
            }
            AccountEvent::AccountClosed {} => self.status = Status::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use strata::testing::AggregateTest;
    use strata::Repository;

    use super::AccountCommand::*;
    use super::AccountEvent::*;
    use super::*;

    fn opened(initial_balance: u64) -> AccountEvent {
        AccountOpened {
            customer_id: "c-alice".into(),
            owner: Some("Alice".into()),
            email: Some("alice@example.org".into()),
            initial_balance,
        }
    }

    fn open(owner: &str, initial_balance: i64) -> AccountCommand {
        Open {
            customer_id: format!("c-{}", owner.to_lowercase()),
            owner: owner.into(),
            email: format!("{}@example.org", owner.to_lowercase()),
            initial_balance,
        }
    }

    #[test]
    fn the_missions_account_replays_to_150() {
        let account =
            AggregateTest::<BankAccount>::given([opened(100), MoneyDeposited { amount: 200 }])
                .when(Withdraw { amount: 150 })
                .then_expect_events([MoneyWithdrawn { amount: 150 }]);
        assert_eq!(account.balance, 150);
    }

    #[test]
    fn opening() {
        AggregateTest::<BankAccount>::new()
            .when(open("Alice", 100))
            .then_expect_events([opened(100)]);
        AggregateTest::<BankAccount>::given([opened(0)])
            .when(open("Bob", 1))
            .then_expect_error(AccountError::AlreadyOpen);
        AggregateTest::<BankAccount>::new()
            .when(open("Alice", -1))
            .then_expect_error(AccountError::NegativeOpeningBalance(-1));
    }

    #[test]
    fn amounts_must_be_positive() {
        for amount in [0, -5, i64::MIN] {
            AggregateTest::<BankAccount>::given([opened(100)])
                .when(Deposit { amount })
                .then_expect_error(AccountError::AmountNotPositive(amount));
            AggregateTest::<BankAccount>::given([opened(100)])
                .when(Withdraw { amount })
                .then_expect_error(AccountError::AmountNotPositive(amount));
        }
    }

    #[test]
    fn no_overdraft() {
        AggregateTest::<BankAccount>::given([opened(100), MoneyWithdrawn { amount: 60 }])
            .when(Withdraw { amount: 41 })
            .then_expect_error(AccountError::InsufficientFunds {
                balance: 40,
                requested: 41,
            });
        let empty =
            AggregateTest::<BankAccount>::given([opened(100), MoneyWithdrawn { amount: 60 }])
                .when(Withdraw { amount: 40 })
                .then_expect_events([MoneyWithdrawn { amount: 40 }]);
        assert_eq!(empty.balance, 0);
    }

    #[test]
    fn a_closed_account_takes_no_deposit() {
        AggregateTest::<BankAccount>::given([opened(0), AccountClosed {}])
            .when(Deposit { amount: 10 })
            .then_expect_error(AccountError::Closed);
        AggregateTest::<BankAccount>::given([opened(0), AccountClosed {}])
            .when(Close)
            .then_expect_error(AccountError::Closed);
        AggregateTest::<BankAccount>::new()
            .when(Deposit { amount: 10 })
            .then_expect_error(AccountError::NotOpened);
    }

    #[test]
    fn closing_needs_an_empty_account() {
        AggregateTest::<BankAccount>::given([opened(5)])
            .when(Close)
            .then_expect_error(AccountError::NotEmpty { balance: 5 });
        let closed = AggregateTest::<BankAccount>::given([opened(5), MoneyWithdrawn { amount: 5 }])
            .when(Close)
            .then_expect_events([AccountClosed {}]);
        assert_eq!(closed.status, Status::Closed);
    }

    #[test]
    fn deposits_cannot_overflow() {
        AggregateTest::<BankAccount>::given([opened(u64::MAX - 1)])
            .when(Deposit { amount: 2 })
            .then_expect_error(AccountError::Overflow);
    }

    #[test]
    fn events_are_stored_under_the_missions_names() {
        let e = opened(100).encode().unwrap();
        assert_eq!(e.event_type, "AccountOpened");
        assert_eq!(
            e.data,
            serde_json::json!({
                "customerId": "c-alice",
                "owner": "Alice",
                "email": "alice@example.org",
                "initialBalance": 100
            })
        );
        assert_eq!(
            MoneyDeposited { amount: 200 }.encode().unwrap().event_type,
            "MoneyDeposited"
        );
    }

    #[tokio::test]
    async fn balance_as_of_a_past_moment() {
        let dir = strata_examples::ScratchDir::new("bank").unwrap();
        let store = strata_log::LogStore::open(dir.path()).unwrap();
        let accounts = Repository::<BankAccount, _>::new(store);
        accounts.execute("123", open("Alice", 100)).await.unwrap();
        accounts
            .execute("123", Deposit { amount: 200 })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let after_deposit = chrono::Utc::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = accounts
            .execute("123", Withdraw { amount: 150 })
            .await
            .unwrap();
        assert_eq!(now.balance, 150);
        let then = accounts.load_as_of("123", after_deposit).await.unwrap();
        assert_eq!((then.balance, then.version), (300, Some(1)));
        let first = accounts.load_at_version("123", 0).await.unwrap();
        assert_eq!(first.balance, 100);
    }

    /// The customer's name and email are sealed in the events and in the snapshots; once
    /// the customer is forgotten no byte of the data directory holds them, the account still
    /// loads with its balance, and its owner reads as `None`.
    #[tokio::test]
    async fn a_forgotten_customer_leaves_a_balance_and_no_name() {
        let dir = strata_examples::ScratchDir::new("bank-forget").unwrap();
        let accounts =
            crate::sealed::open_accounts(dir.path(), crate::sealed::demo_master_key().unwrap())
                .await
                .unwrap()
                .with_snapshot_interval(2);
        let name = "Zebulon-Sentinel-5c1e";
        let mut open = open(name, 10);
        if let Open { customer_id, .. } = &mut open {
            *customer_id = "c-zeb".into();
        }
        accounts.execute("9", open).await.unwrap();
        for _ in 0..3 {
            accounts.execute("9", Deposit { amount: 5 }).await.unwrap();
        }
        let cold = || Repository::<BankAccount, _>::new(accounts.store().as_ref().clone());
        let before = cold().load("9").await.unwrap();
        assert_eq!(before.owner.as_deref(), Some(name));
        assert!(before.snapshot_version.is_some(), "loaded from a snapshot");
        let email = format!("{}@example.org", name.to_lowercase());
        let holding = |dir: &std::path::Path| {
            let mut files = strata_testkit::harness::files_holding(dir, name.as_bytes());
            files.extend(strata_testkit::harness::files_holding(
                dir,
                email.as_bytes(),
            ));
            files
        };
        assert_eq!(holding(dir.path()), Vec::<std::path::PathBuf>::new());

        accounts.store().forget("c-zeb").await.unwrap();
        let after = cold().load("9").await.unwrap();
        assert_eq!(after.owner, None);
        assert_eq!(after.balance, 25);
        assert_eq!(
            after.snapshot_version, None,
            "the snapshot is sealed for good"
        );
        assert_eq!(holding(dir.path()), Vec::<std::path::PathBuf>::new());
    }
}
