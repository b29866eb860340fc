//! What a newcomer meets in the first hour with the `strata` binary: the messages that tell
//! them what to do next, and the mistakes the README's path must not lead into.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `strata serve` on `data` and waits for its "serving ... on URL" line.
fn start(data: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .arg("--data")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("STRATA_LOG", "warn")
        .env_remove("STRATA_SERVER")
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
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    Server { child, url }
}

/// Runs the binary: (success, stdout, stderr).
fn run_cli(args: &[&str]) -> (bool, String, String) {
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

#[test]
fn a_client_command_on_a_served_directory_points_to_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, &["--no-projections"]);
    let (ok, _, err) = run_cli(&["--data", data.to_str().unwrap(), "read", "account-42"]);
    assert!(!ok);
    assert!(err.contains("in use by another Strata process"), "{err}");
    assert!(err.contains("--server URL"), "{err}");
    // The tour through the server suggests nothing that needs the server stopped.
    let (ok, out, err) = run_cli(&["--server", &server.url, "tour"]);
    assert!(ok, "{err}");
    let next = out
        .lines()
        .find(|l| l.starts_with("Next"))
        .expect("a Next line");
    assert!(!next.contains("verify"), "{next}");
    assert!(next.contains(&format!("--server {}", server.url)), "{next}");
}

#[test]
fn a_server_that_cannot_listen_leaves_no_files_behind() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("other-data");
    let (ok, _, err) = run_cli(&["--data", data.to_str().unwrap(), "serve", "--listen", &addr]);
    assert!(!ok);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
