//! What the CLI's integration tests share: the binary, a running `strata serve`, and a run of
//! a client command. Each test file uses some of it.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The `strata` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// A `strata serve` process, killed when dropped.
pub struct Server {
    child: Child,
    /// Where it serves, as it said (`http://…` or `https://…`).
    pub url: String,
}

impl Server {
    /// Starts `command` (a `strata … serve`) and waits for the line that says where it serves.
    pub fn spawn(mut command: Command) -> Server {
        let mut child = command
            .env("STRATA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned();
        Server { child, url }
    }

    /// Its address, without the scheme.
    pub fn addr(&self) -> &str {
        self.url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"))
            .unwrap_or(&self.url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args`, none of its client settings taken from the environment:
/// (success, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("STRATA_SERVER")
        .env_remove("STRATA_DATA")
        .env_remove("STRATA_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
