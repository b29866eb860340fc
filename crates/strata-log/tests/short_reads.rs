//! Segment files whose `read_at` returns short, mid-file, at arbitrary points (as a file
//! read partly from an archived segment's stub does): every answer is the one full reads
//! give, and a damaged length field behind a short read is checked before it is used.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use strata_core::{EventData, EventStore, ExpectedVersion, ReadAllOptions, StreamId};
use strata_log::io::{LogFile, StdVfs, Vfs};
use strata_log::{LogConfig, LogStore};

struct ShortFile {
    inner: Arc<dyn LogFile>,
    seed: AtomicU64,
    max: usize,
}
impl LogFile for ShortFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        // xorshift: 1..=max bytes per call
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        let n = buf.len().min(1 + (x as usize % self.max));
        self.inner.read_at(&mut buf[..n], offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}
struct ShortVfs(usize);
impl Vfs for ShortVfs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>> {
        let inner = StdVfs.open(path, create)?;
        if path.extension().is_some_and(|e| e == "seg") {
            return Ok(Arc::new(ShortFile {
                inner,
                seed: AtomicU64::new(0x9E3779B97F4A7C15 ^ path.as_os_str().len() as u64),
                max: self.0,
            }));
        }
        Ok(inner)
    }
    fn sync_dir(&self, p: &Path) -> io::Result<()> {
        StdVfs.sync_dir(p)
    }
    fn rename(&self, a: &Path, b: &Path) -> io::Result<()> {
        StdVfs.rename(a, b)
    }
    fn remove(&self, p: &Path) -> io::Result<()> {
        StdVfs.remove(p)
    }
    fn create_dir(&self, p: &Path) -> io::Result<()> {
        StdVfs.create_dir(p)
    }
}

fn streams() -> Vec<StreamId> {
    (0..5)
        .map(|s| StreamId::new(format!("acct-{s}")).unwrap())
        .collect()
}

/// Reads of at most 1, 5, 37, 63, 64, 65, 300 and 5,000 bytes a call: every answer (a
/// reopen's recovery included) is the one full reads give.
#[tokio::test]
async fn short_preads_answer_as_full_ones() {
    let dir = tempfile::tempdir().unwrap();
    let plain = LogConfig {
        segment_max_bytes: 64 * 1024,
        ..LogConfig::default()
    };
    let store = LogStore::open_with(dir.path(), plain.clone()).unwrap();
    let mut k = 0usize;
    for round in 0..60 {
        for s in streams() {
            k += 1;
            let pad = [1usize, 3, 7, 60, 200, 700, 3000, 9000][k % 8];
            let events: Vec<_> = (0..1 + k % 3)
                .map(|i| {
                    EventData::json(
                        "E",
                        &serde_json::json!({"r": round, "i": i, "p": "x".repeat(pad)}),
                    )
                    .unwrap()
                })
                .collect();
            store
                .append(&s, ExpectedVersion::Any, events)
                .await
                .unwrap();
        }
    }
    let expected = strata_testkit::every_answer(&store, &streams()).await;
    let back = store
        .read_all(ReadAllOptions::backward().limit(10_000))
        .await
        .unwrap();
    store.close().await.unwrap();
    for max in [1usize, 5, 37, 63, 64, 65, 300, 5000] {
        let cfg = LogConfig {
            vfs: Arc::new(ShortVfs(max)),
            map_reads: false,
            ..plain.clone()
        };
        let store =
            LogStore::open_with(dir.path(), cfg).unwrap_or_else(|e| panic!("open max {max}: {e}"));
        assert_eq!(
            strata_testkit::every_answer(&store, &streams()).await,
            expected,
            "max {max}"
        );
        let b = store
            .read_all(ReadAllOptions::backward().limit(10_000))
            .await
            .unwrap();
        assert_eq!(b.events, back.events, "max {max}");
        store.close().await.unwrap();
    }
}

fn max_rss_kb() -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// A record whose length field is damaged (parts do not add up to it): a window that stops
/// short before its header makes the reader trust the field and allocate that many bytes.
#[tokio::test]
async fn a_damaged_length_field_behind_a_short_window_is_not_trusted() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let plain = LogConfig {
        segment_max_bytes: 64 * 1024,
        ..LogConfig::default()
    };
    let store = LogStore::open_with(dir.path(), plain.clone()).unwrap();
    for i in 0..20 {
        store
            .append(
                &streams()[0],
                ExpectedVersion::Any,
                vec![EventData::json("E", &serde_json::json!({"i": i})).unwrap()],
            )
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    let cfg = LogConfig {
        vfs: Arc::new(ShortVfs(37)),
        map_reads: false,
        ..plain.clone()
    };
    let store = LogStore::open_with(dir.path(), cfg).unwrap();
    // Segment 0, first record at byte 64: its length field now says 1 GiB (bit rot under
    // an open store).
    let seg = dir.path().join("segments").join("00000000000000000000.seg");
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&(1u32 << 30).to_le_bytes(), 64).unwrap();
    drop(f);
    let rss_before = max_rss_kb();
    let r = store
        .read_stream(&streams()[0], strata_core::ReadStreamOptions::forward())
        .await;
    let rss_after = max_rss_kb();
    eprintln!("read: {:?}", r.as_ref().map(|p| p.len()));
    eprintln!("peak RSS {rss_before} kB -> {rss_after} kB");
    assert!(r.is_err());
    assert!(
        rss_after - rss_before < 100 * 1024,
        "a damaged length field made the read allocate {} MiB",
        (rss_after - rss_before) / 1024
    );
}
