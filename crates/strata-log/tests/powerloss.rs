//! Power-loss tests: the embedded store runs on [`PowerLossVfs`], which models the page cache
//! (writes since a file's last `fdatasync`, and directory entries since its directory's last
//! fsync, may be lost, kept or torn at 512-byte sectors at a crash).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use strata_core::{EventData, EventStore, ExpectedVersion, Position, StreamId};
use strata_log::io::{PowerLossVfs, SyncMutation, SyncSite};
use strata_log::{LogConfig, LogStore};

/// A directory for a run's files: on tmpfs when there is one. The simulator models what the
/// disk keeps, so the real files need no durability, and creating and removing files on a
/// journaled file system is several times slower.
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("strata-powerloss")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// A fresh store in a directory it creates (two levels), an acknowledged append, then power
/// loss keeping only what was synced. Returns the head after reopening.
fn new_directory_scenario(mutation: Option<SyncMutation>) -> Option<Position> {
    let root = scratch_dir();
    let vfs = PowerLossVfs::new(root.path()).unwrap();
    vfs.set_mutation(mutation);
    let dir = root.path().join("var").join("data");
    let config = LogConfig {
        map_reads: false,
        vfs: Arc::new(vfs.clone()),
        ..LogConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = LogStore::open_with(&dir, config.clone()).unwrap();
        let stream = StreamId::new("account-1").unwrap();
        let e = EventData::json("Opened", &serde_json::json!({})).unwrap();
        store
            .append(&stream, ExpectedVersion::NoStream, vec![e])
            .await
            .unwrap();
        vfs.crash();
        drop(store);
        vfs.restart_keeping_only_synced().unwrap();
        let store = LogStore::open_with(&dir, config).unwrap();
        store.head().await.unwrap()
    })
}

/// The directories a store creates are durable before anything in them is acknowledged:
/// their entries in their parents are fsynced.
#[test]
fn an_append_to_a_new_data_directory_survives_power_loss() {
    assert_eq!(
        new_directory_scenario(None),
        Some(Position(0)),
        "the acknowledged append was lost with its directory"
    );
    // And the same scenario catches the fsync's removal.
    assert_eq!(
        new_directory_scenario(Some(SyncMutation::Skip(SyncSite::DirectoryCreated))),
        None
    );
}
