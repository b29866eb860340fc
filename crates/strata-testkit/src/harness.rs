//! What the crash and erasure tests share: a test run as a child process until it is killed,
//! and a search of every byte a store wrote.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The number of kill cycles: environment variable `var` when set to a number, else `default`.
pub fn cycles(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `entry`, a `#[test]` of the calling test binary, as a child process with `env` set;
/// lets it run for `run_for`, kills it with SIGKILL, and returns the lines it had printed on
/// its standard output. The child's standard error is dropped.
///
/// # Panics
///
/// When the child cannot be started, killed or waited for: the test cannot go on.
pub fn run_child_then_kill(entry: &str, env: &[(&str, &OsStr)], run_for: Duration) -> Vec<String> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args(["--exact", entry, "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the child test starts");
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    std::thread::sleep(run_for);
    child.kill().expect("SIGKILL");
    child.wait().expect("the killed child is reaped");
    reader.join().expect("the reader thread")
}

/// The files under `dir` (at any depth) whose bytes hold `needle`: what a test of erasure
/// searches, with a control run where the same search must find something.
///
/// # Panics
///
/// When a directory or file under `dir` cannot be read.
pub fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("a readable directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if std::fs::read(&path)
                .expect("a readable file")
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(path);
            }
        }
    }
    hits.sort();
    hits
}
