//! `strata archive`, `strata restore` and `strata verify --archive` on the real binary: a
//! store archived to a directory comes back into a new one with the same events; a damaged
//! archive exits 2 and names the object; a restore into a store that has data is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::run_cli;

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Runs the binary: (exit code, stdout, stderr).
fn strata(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env_remove("STRATA_SERVER")
        .env_remove("STRATA_DATA")
        .env_remove("STRATA_DATABASE_URL")
        .env_remove("STRATA_ARCHIVE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_store_archived_from_the_command_line_restores_into_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (data, copies, restored) = (
        dir.path().join("data"),
        dir.path().join("archive"),
        dir.path().join("restored"),
    );
    let (data, copies, restored) = (
        data.to_str().unwrap(),
        copies.to_str().unwrap(),
        restored.to_str().unwrap(),
    );
    for n in 0..5 {
        let body = format!("{{\"n\":{n}}}");
        let (ok, _, err) = run_cli(&["--data", data, "append", "order-1", "Placed", &body]);
        assert!(ok, "{err}");
    }
    // Nothing is sealed yet: nothing to archive.
    let (ok, out, err) = run_cli(&["--data", data, "--json", "archive", "--to", copies]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["segmentsArchived"], 0);
    let (ok, out, err) = run_cli(&[
        "--data", data, "--json", "archive", "--to", copies, "--seal",
    ]);
    assert!(ok, "{err}");
    let report = &json_lines(&out)[0];
    assert_eq!(report["segmentsArchived"], 1);
    assert_eq!(report["events"], 5);
    assert_eq!(report["archivedBelowPosition"], 5);

    let (ok, out, err) = run_cli(&["--data", restored, "--json", "restore", "--from", copies]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["events"], 5);
    assert_eq!(json_lines(&out)[0]["nextPosition"], 5);
    let read = |dir: &str| {
        let (ok, out, err) = run_cli(&["--data", dir, "--json", "read", "order-1"]);
        assert!(ok, "{err}");
        json_lines(&out)
    };
    assert_eq!(read(restored), read(data));

    // A relative --data, in the directory the command runs in.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .current_dir(dir.path())
        .args(["--data", "relative", "--json", "restore", "--from", copies])
        .env_remove("STRATA_DATA")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        read(dir.path().join("relative").to_str().unwrap()),
        read(data)
    );

    let (code, out, err) = strata(&["--json", "verify", "--archive", copies]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_lines(&out)[0]["events"], 5);

    // A restore into the store that has the data is refused, and changes nothing.
    let (code, _, err) = strata(&["--data", data, "restore", "--from", copies]);
    assert_eq!(code, 1);
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(read(data).len(), 5);

    // One flipped byte: exit 2, the object named.
    let seg = std::path::Path::new(copies).join("segments/00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[100] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let (code, _, err) = strata(&["verify", "--archive", copies]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("00000000000000000000.seg") && err.contains("SHA-256"),
        "{err}"
    );
}

/// One archive for both backends from the command line: an embedded store's archive
/// restores into PostgreSQL (`--database-url`), that store archives into a second archive
/// (`strata archive --database-url`), which restores into a new data directory; every copy
/// reads as the first. A restore into a PostgreSQL store holding events is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_cross_between_the_embedded_store_and_postgres() {
    let (Some(db), Some(second)) = (
        support::Database::create("the cross-backend archive test").await,
        support::Database::create("the cross-backend archive test").await,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (data, copies, from_pg, restored) = (
        path("data"),
        path("archive"),
        path("archive-pg"),
        path("restored"),
    );
    for n in 0..5 {
        let body = format!("{{\"n\":{n}}}");
        let (ok, _, err) = run_cli(&["--data", &data, "append", "order-1", "Placed", &body]);
        assert!(ok, "{err}");
    }
    let (ok, _, err) = run_cli(&["--data", &data, "archive", "--to", &copies, "--seal"]);
    assert!(ok, "{err}");
    let (url, second_url) = (db.url(), second.url());
    let (ok, out, err) = run_cli(&[
        "--database-url",
        &url,
        "--json",
        "restore",
        "--from",
        &copies,
    ]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["events"], 5);
    let read = |store: &[&str]| {
        let mut args = store.to_vec();
        args.extend(["--json", "read", "order-1"]);
        let (ok, out, err) = run_cli(&args);
        assert!(ok, "{err}");
        json_lines(&out)
    };
    let original = read(&["--data", &data]);
    assert_eq!(read(&["--database-url", &url]), original);

    let (ok, out, err) = run_cli(&[
        "--database-url",
        &url,
        "--json",
        "archive",
        "--to",
        &from_pg,
    ]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["events"], 5);
    let (ok, _, err) = run_cli(&["--data", &restored, "restore", "--from", &from_pg]);
    assert!(ok, "{err}");
    assert_eq!(read(&["--data", &restored]), original);
    let (code, _, err) = strata(&["verify", "--archive", &from_pg]);
    assert_eq!(code, 0, "{err}");

    // --keep-local is the embedded store's: refused with PostgreSQL, nothing archived.
    let (ok, _, err) = run_cli(&[
        "--database-url",
        &url,
        "archive",
        "--to",
        &from_pg,
        "--keep-local",
        "0",
    ]);
    assert!(!ok && err.contains("--keep-local"), "{err}");

    // Into a store holding events: refused, and nothing changes.
    let (ok, _, err) = run_cli(&["--database-url", &second_url, "append", "x-1", "E", "{}"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run_cli(&["--database-url", &second_url, "restore", "--from", &copies]);
    assert!(!ok && err.contains("is not empty"), "{err}");
    let (ok, _, err) = run_cli(&["--database-url", &second_url, "read", "order-1"]);
    assert!(!ok && err.contains("not found"), "{err}");
}

/// `strata serve` on `store` (its options) archiving to `archive`, a pass at start and then
/// hourly, with `more` options.
fn archiving_server(store: &[&str], archive: &std::path::Path, more: &[&str]) -> support::Server {
    let mut serve = std::process::Command::new(support::BIN);
    serve
        .args(store)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-projections",
            "--archive",
        ])
        .arg(archive)
        .args(["--archive-every", "3600"])
        .args(more);
    support::Server::spawn(serve)
}

/// The server's archive status once its first pass ended (polled: the pass runs in the
/// server, which signals nothing a test can wait on but its status).
fn first_pass(addr: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = http_get_json(addr, "/admin/archive");
        if status["state"] == "ok" || status["state"] == "failing" {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pass ended: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `strata archive --keep-local 0` gives back the disk of what it archived; every command
/// then reads the store through the archive its stubs name, `strata verify` included; a
/// store whose archive is gone says which archive it needs.
#[test]
fn archived_segments_given_back_are_read_through_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let (data, copies) = (dir.path().join("data"), dir.path().join("archive"));
    let (data, copies) = (data.to_str().unwrap(), copies.to_str().unwrap());
    // Events larger than what a stub keeps of its segment, so that reading them needs the
    // archive.
    for n in 0..5 {
        let body = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(2000));
        let (ok, _, err) = run_cli(&["--data", data, "append", "order-1", "Placed", &body]);
        assert!(ok, "{err}");
    }
    let read = || {
        let (ok, out, err) = run_cli(&["--data", data, "--json", "read", "order-1"]);
        assert!(ok, "{err}");
        json_lines(&out)
    };
    let before = read();
    let (ok, out, err) = run_cli(&[
        "--data",
        data,
        "--json",
        "archive",
        "--to",
        copies,
        "--seal",
        "--keep-local",
        "0",
    ]);
    assert!(ok, "{err}");
    let report = &json_lines(&out)[0];
    assert_eq!(report["segmentsEvicted"], 1, "{report}");
    assert_eq!(report["segmentsReadFromArchive"], 1);
    let segments = std::path::Path::new(data).join("segments");
    assert!(!segments.join(format!("{:020}.seg", 0)).exists());
    assert!(segments.join(format!("{:020}.archived", 0)).is_file());
    assert_eq!(read(), before, "read through the archive");
    let (ok, out, err) = run_cli(&["--data", data, "--json", "verify"]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["events"], 5, "{out}");
    let (ok, out, err) = run_cli(&["--data", data, "--json", "info", "--store"]);
    assert!(ok, "{err}");
    let info = &json_lines(&out)[0];
    assert_eq!(info["archivedSegments"], 1, "{info}");
    assert_eq!(
        info["archiveCache"]["cachedBytes"], 0,
        "nothing read yet: {info}"
    );

    // The archive moved away: the store names the archive it needs.
    std::fs::rename(copies, dir.path().join("moved")).unwrap();
    let (code, _, err) = strata(&["--data", data, "read", "order-1"]);
    assert_ne!(code, 0);
    assert!(err.contains(copies), "the error names the archive: {err}");
}

/// The body of a `GET` the server answers `200`.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    body.to_owned()
}

/// `GET path` on a server: the answer's body, with a JSON content.
fn http_get_json(addr: &str, path: &str) -> serde_json::Value {
    let body = http_get(addr, path);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// `strata serve --archive DIR` archives the sealed segments of the store it serves as it
/// starts, says so in `GET /admin/archive` and `/health`, and the archive restores into a new
/// directory holding exactly the events below the position it reported.
#[test]
fn a_server_archives_its_sealed_segments_as_it_serves() {
    use strata_core::{EventData, EventStore, ExpectedVersion, StreamId};
    let dir = tempfile::tempdir().unwrap();
    let (data, copies, restored) = (
        dir.path().join("data"),
        dir.path().join("archive"),
        dir.path().join("restored"),
    );
    // A store with sealed segments: small ones, written here.
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async {
            let config = strata_log::LogConfig {
                segment_max_bytes: 16 * 1024,
                ..strata_log::LogConfig::default()
            };
            let store = strata_log::LogStore::open_with(&data, config).unwrap();
            for i in 0..300 {
                let e = EventData::json(
                    "Deposited",
                    &serde_json::json!({ "amount": i, "pad": "x".repeat(100) }),
                )
                .unwrap();
                store
                    .append(
                        &StreamId::new(format!("account-{}", i % 7)).unwrap(),
                        ExpectedVersion::Any,
                        vec![e],
                    )
                    .await
                    .unwrap();
            }
            store.close().await.unwrap();
        });
    let server = archiving_server(
        &["--data", data.to_str().unwrap()],
        &copies,
        &["--archive-keep-local", "1"],
    );
    let addr = server.addr().to_owned();
    let status = first_pass(&addr);
    assert_eq!(status["state"], "ok", "{status}");
    assert!(
        status["segmentsArchived"].as_u64().unwrap() >= 2,
        "{status}"
    );
    let below = status["archivedBelowPosition"].as_u64().unwrap();
    assert!(below > 0 && below < 300, "{status}");
    let health = http_get_json(&addr, "/health");
    assert_eq!(health["archive"]["state"], "ok", "{health}");
    // All but the newest sealed segment were given back, and the server reads them from the
    // archive.
    let stubs = support::segment_files(&data, "archived");
    assert_eq!(stubs, status["segmentsArchived"].as_u64().unwrap() - 1);
    let metrics = http_get(&addr, "/metrics");
    let archived_segments = format!("\nstrata_archived_segments {stubs}\n");
    assert!(metrics.contains(&archived_segments), "{metrics}");
    let page = http_get_json(&addr, "/streams/account-3?limit=1000");
    assert!(page.to_string().contains("\"amount\":3,"), "{page}");
    server.stop();
    let (ok, out, err) = run_cli(&[
        "--data",
        data.to_str().unwrap(),
        "--json",
        "read",
        "$all",
        "--limit",
        "1000",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        json_lines(&out).len(),
        300,
        "every event, archived ones too"
    );

    let (restored, copies) = (restored.to_str().unwrap(), copies.to_str().unwrap());
    let (ok, out, err) = run_cli(&["--data", restored, "--json", "restore", "--from", copies]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["events"], below);
    let (ok, out, err) = run_cli(&[
        "--data", restored, "--json", "read", "$all", "--limit", "1000",
    ]);
    assert!(ok, "{err}");
    let events = json_lines(&out);
    assert_eq!(events.len() as u64, below);
    assert_eq!(events.last().unwrap()["position"], below - 1);
}

/// `strata serve --database-url URL --archive DIR` exports PostgreSQL's final events as it
/// serves (its first pass at start), and the archive restores into a data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_postgres_archives_as_it_serves() {
    let Some(db) = support::Database::create("the PostgreSQL archive pass test").await else {
        return;
    };
    let url = db.url();
    let dir = tempfile::tempdir().unwrap();
    let (copies, restored) = (dir.path().join("archive"), dir.path().join("restored"));
    for n in 0..5 {
        let body = format!("{{\"n\":{n}}}");
        let (ok, _, err) = run_cli(&["--database-url", &url, "append", "order-1", "Placed", &body]);
        assert!(ok, "{err}");
    }
    let server = archiving_server(&["--database-url", &url], &copies, &[]);
    let addr = server.addr().to_owned();
    let status = tokio::task::spawn_blocking(move || first_pass(&addr))
        .await
        .unwrap();
    assert_eq!(status["state"], "ok", "{status}");
    assert_eq!(status["segmentsArchived"], 1, "{status}");
    assert_eq!(status["archivedBelowPosition"], 5, "{status}");
    drop(server);
    let (copies, restored) = (copies.to_str().unwrap(), restored.to_str().unwrap());
    let (ok, _, err) = run_cli(&["--data", restored, "restore", "--from", copies]);
    assert!(ok, "{err}");
    let (ok, out, err) = run_cli(&["--data", restored, "--json", "read", "order-1"]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out).len(), 5);
}
