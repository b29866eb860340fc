//! What a newcomer meets in the first hour with the `strata` binary: the messages that tell
//! them what to do next, and the mistakes the README's path must not lead into.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

mod support;

use support::{run_cli, Server, BIN};

/// Starts `strata serve` on `data` and waits for its "serving ... on URL" line.
fn start(data: &Path, extra: &[&str]) -> Server {
    let mut serve = Command::new(BIN);
    serve
        .arg("--data")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("STRATA_SERVER");
    Server::spawn(serve)
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
    // The address is taken: say how to reach what may be serving there.
    assert!(err.contains(&format!("--server http://{addr}")), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn errors_say_what_was_wrong_and_what_to_do() {
    // Nothing listens: one line naming the URL and what to start. The port stays bound (not
    // listening) for the whole test, so no other test's server can take it meanwhile.
    let free = tokio::net::TcpSocket::new_v4().unwrap();
    free.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", free.local_addr().unwrap());
    let (ok, _, err) = run_cli(&["--server", &url, "read", "account-42"]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("nothing answers at {url}")), "{err}");
    assert!(err.contains("strata serve"), "{err}");
    let (ok, _, err) = run_cli(&["--server", &url, "projections"]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("nothing answers at {url}")), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let d = d.to_str().unwrap();
    let (ok, _, err) = run_cli(&["--data", d, "read", "account-42", "--limit", "0"]);
    assert!(!ok);
    assert!(err.contains("at least 1"), "{err}");
    // `all` without its `$`: the answer says how to read the global order.
    let (ok, _, err) = run_cli(&["--data", d, "read", "all"]);
    assert!(!ok);
    assert!(err.contains("'$all'"), "{err}");
    // A date is a time: its first instant, UTC, and the command says so.
    let (ok, _, err) = run_cli(&[
        "--data",
        d,
        "append",
        "account-42",
        "AccountOpened",
        "{}",
        "--expected",
        "no_stream",
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = run_cli(&["--data", d, "read", "account-42", "--as-of", "2026-12-02"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("as of 2026-12-02T00:00:00Z (the start of 2026-12-02, UTC)"),
        "{err}"
    );
    assert!(!out.contains("Some("), "{out}");
}

#[test]
fn a_server_that_wants_a_token_is_not_called_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, _) = run_cli(&["--json", "token", "new", "--role", "reader"]);
    assert!(ok);
    let made: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let token = made["token"].as_str().unwrap().to_owned();
    let sha = made["sha256"].as_str().unwrap();
    let cfg = dir.path().join("strata.toml");
    std::fs::write(
        &cfg,
        format!("[[tokens]]\nname = \"r\"\nsha256 = \"{sha}\"\nrole = \"reader\"\n"),
    )
    .unwrap();
    let server = start(
        &dir.path().join("data"),
        &["--no-projections", "--config", cfg.to_str().unwrap()],
    );
    for args in [
        vec!["read", "account-42"],
        vec!["append", "account-42", "X", "{}"],
        vec!["projections"],
    ] {
        let mut a = vec!["--server", server.url.as_str()];
        a.extend_from_slice(&args);
        let (ok, _, err) = run_cli(&a);
        assert!(!ok);
        assert!(!err.contains("unavailable"), "{args:?}: {err}");
        assert!(err.contains("--token"), "{args:?}: {err}");
    }
    // A reader's token may not append: forbidden, said so.
    let (ok, _, err) = run_cli(&[
        "--server",
        &server.url,
        "--token",
        &token,
        "append",
        "account-42",
        "X",
        "{}",
    ]);
    assert!(!ok);
    assert!(!err.contains("unavailable"), "{err}");
    assert!(err.contains("forbidden"), "{err}");
}

#[test]
fn projections_listed_without_a_server_are_not_called_running() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    {
        let server = start(&data, &[]);
        let (ok, _, err) = run_cli(&["--server", &server.url, "append", "account-1", "A", "{}"]);
        assert!(ok, "{err}");
    }
    let (ok, out, err) = run_cli(&["--data", d, "projections"]);
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("event-type-counts"))
        .unwrap_or_else(|| panic!("{out}"));
    let status: Vec<&str> = row.split_whitespace().skip(2).take(3).collect();
    assert_eq!(status, ["stopped", "(was", "running)"], "{row}");
    assert!(out.contains("not running"), "{out}");
    // For scripts, one word, and what was recorded beside it.
    let (ok, out, err) = run_cli(&["--data", d, "--json", "projections"]);
    assert!(ok, "{err}");
    let doc: serde_json::Value = out
        .lines()
        .find(|l| l.contains("event-type-counts"))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(doc["status"], "stopped", "{doc}");
    assert_eq!(doc["recordedStatus"], "running", "{doc}");
    assert_eq!(doc["rebuildStarted"], false, "{doc}");
}
