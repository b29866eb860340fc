//! The bank's store, sealing the customers' personal data (docs/gdpr.md).

use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use strata::Repository;
use strata_log::LogStore;
use strata_shred::{
    DirKeys, EncryptionSchema, Keyring, MasterKey, PersonalData, Shredded, SubjectSource,
};

use crate::domain::{AccountCommand, AccountEvent, BankAccount};

/// `AccountOpened`'s owner and email are the customer's personal data.
impl PersonalData for AccountEvent {
    fn personal_data() -> Vec<EncryptionSchema> {
        vec![EncryptionSchema::new(
            "AccountOpened",
            SubjectSource::Pointer("/customerId".into()),
        )
        .field("/owner")
        .field("/email")]
    }
}

/// The master key that wraps the customers' keys: from `BANK_MASTER_KEY`, else one made for
/// this run. It never sits beside the data.
pub fn demo_master_key() -> Result<MasterKey, Box<dyn Error>> {
    Ok(match std::env::var_os("BANK_MASTER_KEY") {
        Some(_) => MasterKey::from_env("BANK_MASTER_KEY")?,
        None => MasterKey::from_hex(&MasterKey::generate_hex(), "a key made for this run")?,
    })
}

/// The accounts, on the embedded store in `dir`: personal fields sealed (the customers' keys
/// in `dir/keys`, wrapped by `master`), snapshots sealed too.
pub async fn open_accounts(
    dir: &Path,
    master: MasterKey,
) -> Result<Repository<BankAccount, Shredded>, Box<dyn Error>> {
    let store = LogStore::open(dir)?;
    let keys = Keyring::open(DirKeys::open(dir.join("keys"))?.shared(), master).await?;
    let sealed = Shredded::open(Arc::new(store.clone()), keys)
        .await?
        .with_snapshots(Arc::new(store));
    // Registers the schemas the events declare (once: later starts find them in force).
    sealed.register_personal_data::<AccountEvent>().await?;
    Ok(Repository::new(sealed))
}

/// An opening: the customer `c-<name>` with an email of their own.
pub fn open(owner: &str, initial_balance: i64) -> AccountCommand {
    let id = owner.to_lowercase();
    AccountCommand::Open {
        customer_id: format!("c-{id}"),
        owner: owner.into(),
        email: format!("{id}@example.org"),
        initial_balance,
    }
}
