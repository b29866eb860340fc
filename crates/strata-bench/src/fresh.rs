//! Measures taken in a fresh process: the `strata-bench` program runs itself again with a
//! subcommand (`open-measure`, `scan-measure`) that opens a store, measures, and prints one
//! JSON document. A fresh process has none of the writing process's maps, page tables or
//! caches, only the kernel's page cache, so its figures are a restarted reader's.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, ExitStatus};

/// Why a measure in a fresh process failed.
#[derive(Debug, thiserror::Error)]
pub enum FreshError {
    /// The program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// It ran and failed.
    #[error("`strata-bench {what}` failed ({status}): {stderr}")]
    Failed {
        /// The subcommand.
        what: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// It printed something other than its measure.
    #[error("`strata-bench {what}` printed something other than its measure: {source}")]
    BadMeasure {
        /// The subcommand.
        what: String,
        /// Why it did not parse.
        source: serde_json::Error,
    },
}

/// Runs `program` (the `strata-bench` executable) with `args` (a subcommand first) and parses
/// the JSON document it prints.
pub fn measure<T: serde::de::DeserializeOwned>(
    program: &Path,
    args: &[&OsStr],
) -> Result<T, FreshError> {
    let what = args
        .first()
        .map_or_else(String::new, |a| a.to_string_lossy().into_owned());
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| FreshError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(FreshError::Failed {
            what,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|source| FreshError::BadMeasure { what, source })
}
