//! The README's "Using it from Rust": open the embedded store, append, read back.

use strata::{EventData, EventStore, ExpectedVersion, ReadStreamOptions, StreamId, Uuid};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A data directory of its own: the quick start's server holds ./strata-data.
    let store = strata_log::LogStore::open("./my-app-data")?;
    // A new account each run; NoStream refuses to open one that exists.
    let account = StreamId::new(format!("account-{}", Uuid::new_v4()))?;
    let opened = EventData::json("AccountOpened", &serde_json::json!({"initialBalance": 100}))?;
    store
        .append(&account, ExpectedVersion::NoStream, vec![opened])
        .await?;
    for event in store
        .read_stream(&account, ReadStreamOptions::forward())
        .await?
    {
        println!(
            "{} {} {}",
            event.stream_id, event.stream_version, event.event_type
        );
    }
    Ok(())
}
