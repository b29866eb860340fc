//! Whole small systems built with Strata, as examples: `cargo run --release -p strata-examples
//! --example bank` (also `orders`, `users`, `services`, `projections_rebuild`, `quickstart`).
//! The examples are the point; the library holds only what they share.

#![forbid(unsafe_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory under the system's temporary directory, removed with everything in it
/// when dropped: where an example keeps its store when not given a directory.
///
/// The examples use this rather than the `tempfile` crate, whose dependencies would resolve
/// to other features than the `strata` command's and make running an example after building
/// the command compile half of it again (`tests/one_build.rs`).
///
/// ```
/// let scratch = strata_examples::ScratchDir::new("doc")?;
/// std::fs::write(scratch.path().join("file"), b"x")?;
/// let path = scratch.path().to_path_buf();
/// drop(scratch);
/// assert!(!path.exists());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `strata-<label>-<process id>-<n>` under [`std::env::temp_dir`]; `n` counts the
    /// directories this process made, and an existing directory is never reused.
    pub fn new(label: &str) -> io::Result<ScratchDir> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("strata-{label}-{}-{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(ScratchDir { path }),
                // Left over by an earlier process with the same id: take the next name.
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort, as for any temporary directory: a failure leaves it to the system.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
