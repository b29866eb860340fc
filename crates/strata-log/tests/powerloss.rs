//! Power-loss tests: the embedded store runs on [`PowerLossVfs`], which models the page cache
//! (writes since a file's last `fdatasync`, and directory entries since its directory's last
//! fsync, may be lost, kept or torn at 512-byte sectors at a crash).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use strata_core::{
    EventData, EventStore, ExpectedVersion, Position, Snapshot, SnapshotStore, StreamId,
};
use strata_log::io::{PowerLossVfs, SyncMutation, SyncSite};
use strata_log::{LogConfig, LogStore};

const SCHEMA: u32 = 1;

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

/// A fresh store: snapshots of two streams saved, one stream's deleted (an fdatasync, which
/// makes the other's save durable too), then power loss keeping only what was synced.
/// Returns what loads for the other stream after reopening.
fn snapshot_file_scenario(mutation: Option<SyncMutation>) -> Option<Vec<u8>> {
    let root = scratch_dir();
    let vfs = PowerLossVfs::new(root.path()).unwrap();
    vfs.set_mutation(mutation);
    let dir = root.path().join("data");
    let config = LogConfig {
        map_reads: false,
        vfs: Arc::new(vfs.clone()),
        ..LogConfig::default()
    };
    let snapshot = |stream: &str, data: &[u8]| Snapshot {
        stream_id: StreamId::new(stream).unwrap(),
        stream_version: 0,
        schema_version: SCHEMA,
        data: data.to_vec(),
        taken_at: strata_core::timestamp_from_micros(0),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = LogStore::open_with(&dir, config.clone()).unwrap();
        store
            .save_snapshot(snapshot("account-1", b"{\"kept\":true}"))
            .await
            .unwrap();
        store
            .save_snapshot(snapshot("account-2", b"{}"))
            .await
            .unwrap();
        let account_2 = StreamId::new("account-2").unwrap();
        assert_eq!(store.delete_snapshots(&account_2).await.unwrap(), 1);
        vfs.crash();
        drop(store);
        vfs.restart_keeping_only_synced().unwrap();
        let store = LogStore::open_with(&dir, config).unwrap();
        let account_1 = StreamId::new("account-1").unwrap();
        store
            .load_snapshot(&account_1, SCHEMA, None)
            .await
            .unwrap()
            .map(|s| s.data)
    })
}

/// The snapshot file's directory entry is durable before a delete's fdatasync promises that
/// the saves before it are.
#[test]
fn snapshot_saves_made_durable_by_a_delete_survive_power_loss() {
    assert_eq!(
        snapshot_file_scenario(None),
        Some(b"{\"kept\":true}".to_vec()),
        "a save made durable by a delete was lost with the snapshot file"
    );
    assert_eq!(
        snapshot_file_scenario(Some(SyncMutation::Skip(SyncSite::SnapshotCreated))),
        None
    );
}
