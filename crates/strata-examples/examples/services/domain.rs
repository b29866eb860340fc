//! Two aggregates whose decisions need facts from outside the stream, and one that makes a
//! uniqueness rule airtight.
//!
//! - [`Account`]: a currency account. A deposit in a foreign currency asks the exchange-rate
//!   service for the rate, and every event records the time from the services' clock. The
//!   rate and the time are *recorded in the event*: replaying never asks again.
//! - [`User`]: a registration. The email must be unique; the email directory (a read model)
//!   says whether it is taken.
//! - [`EmailClaim`]: the remedy for the directory's caveat, below.
//!
//! # The caveat of a uniqueness check outside the stream
//!
//! The directory's answer and the append are not atomic. The store's optimistic concurrency
//! guards one stream (`user-7`), not every user: two registrations of the same address for two
//! different users can both hear "free" and both be stored. The check catches the everyday
//! case (an address registered a minute ago) and gives a friendly refusal, but not a race.
//!
//! When a duplicate must never happen, make the address itself the consistency boundary: one
//! stream per address (`emailclaim-ada@example.com`), claimed with an append that expects no
//! stream. The store lets exactly one claim append; the other conflicts, catches up, and is
//! refused. Claim first, then register (and release the claim if the registration is given
//! up). When a rare duplicate is tolerable, detect it instead — a projection that sees two
//! owners for one address — and resolve it after the fact (ask the later user to change it).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata::{
    Aggregate, AggregateState, Clock, DomainEvent, HandleError, HandleWithServices, Timestamp,
};

use crate::services::{
    Currency, DirectoryUnavailable, EmailDirectory, ExchangeRates, Rate, RatesUnavailable,
};

/// A currency account: its balance is kept in its own currency, in cents.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub owner: String,
    pub currency: Option<Currency>,
    pub balance_cents: i64,
    pub opened_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    #[serde(rename_all = "camelCase")]
    AccountOpened {
        owner: String,
        currency: Currency,
        at: Timestamp,
    },
    /// A deposit in the account's own currency.
    #[serde(rename_all = "camelCase")]
    MoneyDeposited { amount_cents: i64, at: Timestamp },
    /// A deposit in another currency: what came in, the rate it was converted at, and what
    /// was credited. The rate is a fact of the past now; a replay never asks for it again.
    #[serde(rename_all = "camelCase")]
    ForeignMoneyDeposited {
        amount_cents: i64,
        currency: Currency,
        rate: Rate,
        credited_cents: i64,
        at: Timestamp,
    },
}

impl DomainEvent for AccountEvent {}

/// No time, no rate: those come from the services.
#[derive(Debug, Clone)]
pub enum AccountCommand {
    Open {
        owner: String,
        currency: Currency,
    },
    Deposit {
        amount_cents: i64,
    },
    DepositForeign {
        amount_cents: i64,
        currency: Currency,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("an amount must be positive; got {amount_cents} cents")]
    NotPositive { amount_cents: i64 },
    #[error("no exchange rate is quoted from {from} to {to}")]
    NotQuoted { from: Currency, to: Currency },
    #[error("the amount does not fit the balance")]
    TooLarge,
}

/// What the account's handlers consult.
#[derive(Clone)]
pub struct AccountServices {
    pub clock: Arc<dyn Clock>,
    pub rates: Arc<dyn ExchangeRates>,
}

impl AggregateState for Account {
    type Event = AccountEvent;
    type Command = AccountCommand;
    type Error = AccountError;
    const CATEGORY: &'static str = "account";

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::AccountOpened {
                owner,
                currency,
                at,
            } => {
                self.owner = owner.clone();
                self.currency = Some(*currency);
                self.opened_at = Some(*at);
            }
            AccountEvent::MoneyDeposited { amount_cents, .. } => {
                self.balance_cents += amount_cents;
            }
            AccountEvent::ForeignMoneyDeposited { credited_cents, .. } => {
                self.balance_cents += credited_cents;
            }
        }
    }
}

impl Account {
    /// Whether crediting `cents` is allowed: positive, and the balance stays representable.
    fn check_credit(&self, cents: i64) -> Result<(), AccountError> {
        if cents <= 0 {
            return Err(AccountError::NotPositive {
                amount_cents: cents,
            });
        }
        self.balance_cents
            .checked_add(cents)
            .map(|_| ())
            .ok_or(AccountError::TooLarge)
    }
}

impl HandleWithServices for Account {
    type Services = AccountServices;
    type ServiceError = RatesUnavailable;

    async fn handle_with(
        &self,
        command: AccountCommand,
        services: &AccountServices,
    ) -> Result<Vec<AccountEvent>, HandleError<AccountError, RatesUnavailable>> {
        let at = services.clock.now();
        let Some(own) = self.currency else {
            return match command {
                AccountCommand::Open { owner, currency } => Ok(vec![AccountEvent::AccountOpened {
                    owner,
                    currency,
                    at,
                }]),
                _ => Err(AccountError::NotOpen.into()),
            };
        };
        let (amount_cents, currency) = match command {
            AccountCommand::Open { .. } => return Err(AccountError::AlreadyOpen.into()),
            AccountCommand::Deposit { amount_cents } => (amount_cents, own),
            AccountCommand::DepositForeign {
                amount_cents,
                currency,
            } => (amount_cents, currency),
        };
        if currency == own {
            self.check_credit(amount_cents)?;
            return Ok(vec![AccountEvent::MoneyDeposited { amount_cents, at }]);
        }
        // Refuse what needs no rate before asking for one.
        if amount_cents <= 0 {
            return Err(AccountError::NotPositive { amount_cents }.into());
        }
        let rate = services
            .rates
            .rate(currency, own)
            .await
            .map_err(HandleError::Service)?
            .ok_or(AccountError::NotQuoted {
                from: currency,
                to: own,
            })?;
        let credited_cents = rate.convert(amount_cents).ok_or(AccountError::TooLarge)?;
        self.check_credit(credited_cents)?;
        Ok(vec![AccountEvent::ForeignMoneyDeposited {
            amount_cents,
            currency,
            rate,
            credited_cents,
            at,
        }])
    }
}

/// A registered user, whose email address must be unique.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub username: String,
    pub email: Option<String>,
    pub registered_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    #[serde(rename_all = "camelCase")]
    UserRegistered {
        username: String,
        email: String,
        at: Timestamp,
    },
    #[serde(rename_all = "camelCase")]
    EmailChanged {
        from: String,
        to: String,
        at: Timestamp,
    },
}

impl DomainEvent for UserEvent {}

#[derive(Debug, Clone)]
pub enum UserCommand {
    Register { username: String, email: String },
    ChangeEmail { email: String },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UserError {
    #[error("the user is already registered")]
    AlreadyRegistered,
    #[error("the user is not registered")]
    NotRegistered,
    #[error("{email:?} is not an email address")]
    InvalidEmail { email: String },
    #[error("{email} is taken")]
    EmailTaken { email: String },
}

/// What the user's handlers consult.
#[derive(Clone)]
pub struct UserServices {
    pub clock: Arc<dyn Clock>,
    pub directory: Arc<dyn EmailDirectory>,
}

/// An address as it is compared and stored: trimmed and lowercased, one `@` between two
/// non-empty parts, no whitespace.
pub fn normalize_email(email: &str) -> Result<String, UserError> {
    let normalized = email.trim().to_lowercase();
    let valid = match normalized.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !normalized.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if valid {
        Ok(normalized)
    } else {
        Err(UserError::InvalidEmail {
            email: email.to_owned(),
        })
    }
}

impl AggregateState for User {
    type Event = UserEvent;
    type Command = UserCommand;
    type Error = UserError;
    const CATEGORY: &'static str = "user";

    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::UserRegistered {
                username,
                email,
                at,
            } => {
                self.username = username.clone();
                self.email = Some(email.clone());
                self.registered_at = Some(*at);
            }
            UserEvent::EmailChanged { to, .. } => self.email = Some(to.clone()),
        }
    }
}

impl HandleWithServices for User {
    type Services = UserServices;
    type ServiceError = DirectoryUnavailable;

    async fn handle_with(
        &self,
        command: UserCommand,
        services: &UserServices,
    ) -> Result<Vec<UserEvent>, HandleError<UserError, DirectoryUnavailable>> {
        let (email, current) = match (&command, &self.email) {
            (UserCommand::Register { .. }, Some(_)) => {
                return Err(UserError::AlreadyRegistered.into())
            }
            (UserCommand::ChangeEmail { .. }, None) => return Err(UserError::NotRegistered.into()),
            (UserCommand::Register { email, .. }, None) => (normalize_email(email)?, None),
            (UserCommand::ChangeEmail { email }, Some(current)) => {
                (normalize_email(email)?, Some(current))
            }
        };
        if current == Some(&email) {
            return Ok(vec![]);
        }
        // Not atomic with the append: see the caveat at the top of this file.
        let owner = services
            .directory
            .owner_of(&email)
            .await
            .map_err(HandleError::Service)?;
        if owner.is_some() {
            return Err(UserError::EmailTaken { email }.into());
        }
        let at = services.clock.now();
        Ok(vec![match (command, current) {
            (UserCommand::Register { username, .. }, _) => UserEvent::UserRegistered {
                username,
                email,
                at,
            },
            (UserCommand::ChangeEmail { .. }, from) => UserEvent::EmailChanged {
                from: from.cloned().unwrap_or_default(),
                to: email,
                at,
            },
        }])
    }
}

/// One address, claimed by at most one user: the stream `emailclaim-<address>` is the
/// consistency boundary a uniqueness rule needs. A pure aggregate: the store's optimistic
/// concurrency does the work.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailClaim {
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EmailClaimEvent {
    EmailClaimed { user: String },
}

impl DomainEvent for EmailClaimEvent {}

/// Claim the address for this user.
#[derive(Debug, Clone)]
pub struct Claim {
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the address is claimed by another user")]
pub struct AlreadyClaimed;

impl Aggregate for EmailClaim {
    type Event = EmailClaimEvent;
    type Command = Claim;
    type Error = AlreadyClaimed;
    const CATEGORY: &'static str = "emailclaim";

    fn handle(&self, Claim { user }: Claim) -> Result<Vec<EmailClaimEvent>, AlreadyClaimed> {
        match &self.owner {
            None => Ok(vec![EmailClaimEvent::EmailClaimed { user }]),
            // Claiming again for the same user changes nothing: a retry is safe.
            Some(owner) if *owner == user => Ok(vec![]),
            Some(_) => Err(AlreadyClaimed),
        }
    }

    fn apply(&mut self, EmailClaimEvent::EmailClaimed { user }: &EmailClaimEvent) {
        self.owner = Some(user.clone());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashSet;
    use std::sync::Mutex;

    use chrono::TimeDelta;
    use strata::testing::AggregateTest;
    use strata::{async_trait, ExecuteError, FixedClock, Repository};
    use strata_testkit::MemoryStore;
    use tokio::sync::Barrier;

    use super::*;
    use crate::services::{EmailIndex, RateTable};

    fn noon() -> Timestamp {
        "2024-01-15T12:00:00Z".parse().unwrap()
    }

    const EUR_USD: Rate = Rate {
        per_million: 1_085_000,
    };

    /// A fixed clock at noon and a rate table quoting EUR → USD at 1.085.
    fn account_services() -> (Arc<FixedClock>, Arc<RateTable>, AccountServices) {
        let clock = Arc::new(FixedClock::new(noon()));
        let rates = Arc::new(RateTable::default());
        rates.quote(Currency::Eur, Currency::Usd, EUR_USD);
        let services = AccountServices {
            clock: clock.clone(),
            rates: rates.clone(),
        };
        (clock, rates, services)
    }

    fn opened_in_usd() -> AccountEvent {
        AccountEvent::AccountOpened {
            owner: "Ada".into(),
            currency: Currency::Usd,
            at: noon(),
        }
    }

    #[tokio::test]
    async fn opening_records_the_clocks_time() {
        let (_, _, services) = account_services();
        let account = AggregateTest::<Account>::new()
            .when_with(
                AccountCommand::Open {
                    owner: "Ada".into(),
                    currency: Currency::Usd,
                },
                &services,
            )
            .await
            .unwrap()
            .then_expect_events([opened_in_usd()]);
        assert_eq!(account.opened_at, Some(noon()));
    }

    #[tokio::test]
    async fn a_foreign_deposit_records_the_rate_the_credit_and_the_time() {
        let (clock, _, services) = account_services();
        clock.advance(TimeDelta::minutes(5)).unwrap();
        let account = AggregateTest::<Account>::given([opened_in_usd()])
            .when_with(
                AccountCommand::DepositForeign {
                    amount_cents: 50_00,
                    currency: Currency::Eur,
                },
                &services,
            )
            .await
            .unwrap()
            .then_expect_events([AccountEvent::ForeignMoneyDeposited {
                amount_cents: 50_00,
                currency: Currency::Eur,
                rate: EUR_USD,
                credited_cents: 54_25,
                at: noon() + TimeDelta::minutes(5),
            }]);
        assert_eq!(account.balance_cents, 54_25);
    }

    #[tokio::test]
    async fn a_deposit_in_the_accounts_own_currency_asks_for_no_rate() {
        let (_, rates, services) = account_services();
        rates.set_down(true);
        for command in [
            AccountCommand::Deposit {
                amount_cents: 10_00,
            },
            AccountCommand::DepositForeign {
                amount_cents: 10_00,
                currency: Currency::Usd,
            },
        ] {
            AggregateTest::<Account>::given([opened_in_usd()])
                .when_with(command, &services)
                .await
                .expect("no service is asked, so none can fail")
                .then_expect_events([AccountEvent::MoneyDeposited {
                    amount_cents: 10_00,
                    at: noon(),
                }]);
        }
    }

    #[tokio::test]
    async fn an_unquoted_currency_is_refused_and_an_outage_is_a_service_error() {
        let (_, rates, services) = account_services();
        AggregateTest::<Account>::given([opened_in_usd()])
            .when_with(
                AccountCommand::DepositForeign {
                    amount_cents: 20_00,
                    currency: Currency::Chf,
                },
                &services,
            )
            .await
            .unwrap()
            .then_expect_error(AccountError::NotQuoted {
                from: Currency::Chf,
                to: Currency::Usd,
            });

        rates.set_down(true);
        let outage = AggregateTest::<Account>::given([opened_in_usd()])
            .when_with(
                AccountCommand::DepositForeign {
                    amount_cents: 20_00,
                    currency: Currency::Eur,
                },
                &services,
            )
            .await;
        let Err(error) = outage else {
            panic!("a rate service that is down must not decide");
        };
        assert_eq!(error.reason, "the rate table is switched off");
    }

    #[tokio::test]
    async fn refusals_that_need_no_rate_come_first() {
        let (_, rates, services) = account_services();
        rates.set_down(true);
        AggregateTest::<Account>::new()
            .when_with(
                AccountCommand::DepositForeign {
                    amount_cents: 1,
                    currency: Currency::Eur,
                },
                &services,
            )
            .await
            .unwrap()
            .then_expect_error(AccountError::NotOpen);
        AggregateTest::<Account>::given([opened_in_usd()])
            .when_with(
                AccountCommand::DepositForeign {
                    amount_cents: -5,
                    currency: Currency::Eur,
                },
                &services,
            )
            .await
            .unwrap()
            .then_expect_error(AccountError::NotPositive { amount_cents: -5 });
    }

    #[test]
    fn conversion_rounds_half_up_and_refuses_overflow() {
        assert_eq!(EUR_USD.convert(50_00), Some(54_25));
        assert_eq!(EUR_USD.convert(1), Some(1)); // 1.085 cents
        assert_eq!(
            Rate {
                per_million: 500_000
            }
            .convert(1),
            Some(1)
        ); // 0.5 → 1
        assert_eq!(
            Rate {
                per_million: 499_999
            }
            .convert(1),
            Some(0)
        );
        assert_eq!(
            Rate {
                per_million: 2_000_000
            }
            .convert(i64::MAX),
            None
        );
        assert_eq!(EUR_USD.to_string(), "1.085000");
    }

    #[tokio::test]
    async fn through_the_repository_the_fixed_time_and_the_rate_reach_the_store() {
        let (clock, rates, services) = account_services();
        let accounts = Repository::<Account, _>::with_services(MemoryStore::new(), services);
        accounts
            .execute(
                "7",
                AccountCommand::Open {
                    owner: "Ada".into(),
                    currency: Currency::Usd,
                },
            )
            .await
            .unwrap();
        clock.advance(TimeDelta::hours(1)).unwrap();
        let done = accounts
            .execute(
                "7",
                AccountCommand::DepositForeign {
                    amount_cents: 50_00,
                    currency: Currency::Eur,
                },
            )
            .await
            .unwrap();
        assert_eq!(done.balance_cents, 54_25);

        let stored = accounts.read_events("7", 0, 10).await.unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].event, opened_in_usd());
        assert_eq!(
            stored[1].event,
            AccountEvent::ForeignMoneyDeposited {
                amount_cents: 50_00,
                currency: Currency::Eur,
                rate: EUR_USD,
                credited_cents: 54_25,
                at: noon() + TimeDelta::hours(1),
            }
        );
        // A replay reads the recorded credit: neither a new rate nor an outage changes what
        // happened.
        rates.quote(
            Currency::Eur,
            Currency::Usd,
            Rate {
                per_million: 2_000_000,
            },
        );
        rates.set_down(true);
        accounts.evict("7");
        assert_eq!(accounts.load("7").await.unwrap().balance_cents, 54_25);
    }

    #[tokio::test]
    async fn an_outage_through_the_repository_is_execute_error_service() {
        let (_, rates, services) = account_services();
        let store = MemoryStore::new();
        let accounts = Repository::<Account, _>::with_services(store, services);
        accounts
            .execute(
                "7",
                AccountCommand::Open {
                    owner: "Ada".into(),
                    currency: Currency::Usd,
                },
            )
            .await
            .unwrap();
        rates.set_down(true);
        let error = accounts
            .execute(
                "7",
                AccountCommand::DepositForeign {
                    amount_cents: 1_00,
                    currency: Currency::Eur,
                },
            )
            .await
            .unwrap_err();
        match error {
            ExecuteError::Service { stream, source } => {
                assert_eq!(stream.as_str(), "account-7");
                assert_eq!(source.reason, "the rate table is switched off");
            }
            other => panic!("expected a service error, got {other:?}"),
        }
        assert_eq!(accounts.load("7").await.unwrap().version, Some(0));
    }

    /// A directory answering from a set of addresses.
    #[derive(Default)]
    struct TakenAddresses(Mutex<HashSet<String>>);

    #[async_trait]
    impl EmailDirectory for TakenAddresses {
        async fn owner_of(&self, email: &str) -> Result<Option<String>, DirectoryUnavailable> {
            let taken = self.0.lock().unwrap().contains(email);
            Ok(taken.then(|| "someone".to_owned()))
        }
    }

    fn user_services(directory: Arc<dyn EmailDirectory>) -> UserServices {
        UserServices {
            clock: Arc::new(FixedClock::new(noon())),
            directory,
        }
    }

    #[tokio::test]
    async fn registration_asks_the_directory_and_records_the_time() {
        let taken = Arc::new(TakenAddresses::default());
        taken.0.lock().unwrap().insert("ada@example.com".into());
        let services = user_services(taken);
        AggregateTest::<User>::new()
            .when_with(
                UserCommand::Register {
                    username: "countess".into(),
                    email: "Ada@Example.com".into(),
                },
                &services,
            )
            .await
            .unwrap()
            .then_expect_error(UserError::EmailTaken {
                email: "ada@example.com".into(),
            });
        let user = AggregateTest::<User>::new()
            .when_with(
                UserCommand::Register {
                    username: "grace".into(),
                    email: "grace@example.com".into(),
                },
                &services,
            )
            .await
            .unwrap()
            .then_expect_events([UserEvent::UserRegistered {
                username: "grace".into(),
                email: "grace@example.com".into(),
                at: noon(),
            }]);
        assert_eq!(user.registered_at, Some(noon()));
        AggregateTest::<User>::new()
            .when_with(
                UserCommand::Register {
                    username: "x".into(),
                    email: "not an address".into(),
                },
                &services,
            )
            .await
            .unwrap()
            .then_expect_error(UserError::InvalidEmail {
                email: "not an address".into(),
            });
    }

    #[tokio::test]
    async fn the_email_index_sees_registrations_and_changes_in_the_store() {
        let store = MemoryStore::new();
        let users = Repository::<User, _>::with_services(
            store.clone(),
            user_services(Arc::new(EmailIndex::new(store.clone()))),
        );
        let register = |username: &str, email: &str| UserCommand::Register {
            username: username.into(),
            email: email.into(),
        };
        users
            .execute("1", register("ada", "ada@example.com"))
            .await
            .unwrap();
        let refused = users
            .execute("2", register("countess", "ADA@example.com"))
            .await
            .unwrap_err();
        assert!(matches!(
            refused.rejection(),
            Some(UserError::EmailTaken { email }) if email == "ada@example.com"
        ));
        // Once user 1 moves to another address, the old one is free again.
        users
            .execute(
                "1",
                UserCommand::ChangeEmail {
                    email: "lovelace@example.com".into(),
                },
            )
            .await
            .unwrap();
        let done = users
            .execute("2", register("countess", "ada@example.com"))
            .await
            .unwrap();
        assert_eq!(done.email.as_deref(), Some("ada@example.com"));
        let directory = EmailIndex::new(store);
        assert_eq!(
            directory.owner_of("lovelace@example.com").await.unwrap(),
            Some("1".into())
        );
        assert_eq!(
            directory.owner_of("ada@example.com").await.unwrap(),
            Some("2".into())
        );
    }

    /// Answers from the index, then waits until `parties` questions have been answered: every
    /// racing registration hears the answer before any of them appends.
    struct AnswerThenWait<S> {
        index: EmailIndex<S>,
        barrier: Barrier,
    }

    #[async_trait]
    impl<S: strata::EventStore> EmailDirectory for AnswerThenWait<S> {
        async fn owner_of(&self, email: &str) -> Result<Option<String>, DirectoryUnavailable> {
            let answer = self.index.owner_of(email).await;
            self.barrier.wait().await;
            answer
        }
    }

    /// The caveat, shown: the directory's answer is not atomic with the append, so two racing
    /// registrations of one address both pass. Claiming the address in its own stream lets
    /// exactly one through.
    #[tokio::test]
    async fn a_check_outside_the_stream_lets_a_race_through_and_a_claim_stream_does_not() {
        let store = MemoryStore::new();
        let directory = Arc::new(AnswerThenWait {
            index: EmailIndex::new(store.clone()),
            barrier: Barrier::new(2),
        });
        let users = Repository::<User, _>::with_services(store.clone(), user_services(directory));
        let register = |username: &str| UserCommand::Register {
            username: username.into(),
            email: "hopper@example.com".into(),
        };
        let (first, second) = tokio::join!(
            users.execute("3", register("grace")),
            users.execute("4", register("amazing-grace")),
        );
        assert!(first.is_ok() && second.is_ok(), "both heard `free`");
        assert_eq!(
            users.load("3").await.unwrap().email,
            users.load("4").await.unwrap().email,
            "the duplicate the check could not prevent"
        );

        let claims = Repository::<EmailClaim, _>::new(store);
        let address = normalize_email("hopper@example.com").unwrap();
        let (first, second) = tokio::join!(
            claims.execute(&address, Claim { user: "3".into() }),
            claims.execute(&address, Claim { user: "4".into() }),
        );
        let winners = [&first, &second].iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "exactly one claim appends");
        let loser = if first.is_ok() { second } else { first };
        assert!(matches!(loser, Err(ExecuteError::Rejected(AlreadyClaimed))));
        // The winner may claim again (a retry): nothing changes.
        let owner = claims.load(&address).await.unwrap().owner.clone().unwrap();
        let again = claims
            .execute(&address, Claim { user: owner })
            .await
            .unwrap();
        assert!(again.events.is_empty());
    }
}
