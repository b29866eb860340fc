//! End-to-end tests of `strata serve`, the real binary: appends over HTTP, an SSE subscriber,
//! SIGKILL mid-stream, a restart on the same data directory, resumption with Last-Event-ID.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_client::{Client, ClientError};
use strata_core::{EventData, ExpectedVersion};

mod support;

use support::{run_cli, Server, BIN};

/// Starts `strata serve` and waits for its "serving ... on URL" line.
fn start(data: &Path, listen: &str, extra: &[&str]) -> Server {
    let mut serve = Command::new(BIN);
    serve
        .arg("--data")
        .arg(data)
        .arg("serve")
        .arg("--listen")
        .arg(listen)
        .args(extra);
    Server::spawn(serve)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_resume_with_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, "127.0.0.1:0", &[]);
    let url = server.url.clone();
    let port = url.rsplit(':').next().unwrap().to_owned();
    let client = Client::new(&url).unwrap();

    // The writer: one event per append, each with its own id, retried (same id) until
    // acknowledged, so a retry across the crash is idempotent.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop_writing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop_writing.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let id = strata_core::Uuid::now_v7();
                let event = EventData::json("Tick", &serde_json::json!({ "n": n }))
                    .unwrap()
                    .with_id(id);
                let started = Instant::now();
                loop {
                    match client
                        .append_raw("e2e-1", ExpectedVersion::Any, std::slice::from_ref(&event))
                        .await
                    {
                        Ok(_) => break,
                        Err(ClientError::Transport { .. }) => {
                            assert!(
                                started.elapsed() < Duration::from_secs(60),
                                "server never came back"
                            );
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("append failed: {e:?}"),
                    }
                }
                acked.lock().unwrap().push(id.to_string());
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // The subscriber: raw SSE, resuming with Last-Event-ID = the last id it saw.
    let seen: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let reconnects = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let subscriber = {
        let (client, seen, reconnects) = (client.clone(), seen.clone(), reconnects.clone());
        tokio::spawn(async move {
            let mut last: Option<u64> = None;
            loop {
                let mut stream = match client.sse("/subscriptions/all?from=start", last).await {
                    Ok(s) => s,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                reconnects.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                while let Ok(Some(e)) = stream.next().await {
                    if e.event != "event" {
                        continue;
                    }
                    let id: u64 = e.id.unwrap().parse().unwrap();
                    let v: Value = serde_json::from_str(&e.data).unwrap();
                    seen.lock()
                        .unwrap()
                        .push((id, v["eventId"].as_str().unwrap().to_owned()));
                    last = Some(id);
                }
            }
        })
    };

    // Let it run, then SIGKILL the server mid-stream.
    let wait_for = |n: usize| {
        let acked = acked.clone();
        async move {
            let t = Instant::now();
            while acked.lock().unwrap().len() < n {
                assert!(t.elapsed() < Duration::from_secs(60), "appends stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(100).await;
    drop(server); // Child::kill is SIGKILL.
    let at_kill = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Restart on the same directory and port; both clients find it again by themselves.
    let server = start(&data, &format!("127.0.0.1:{port}"), &[]);
    assert_eq!(server.url, url);
    wait_for(at_kill + 100).await;
    stop_writing.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();

    // The subscriber ends with every acknowledged event exactly once, in order.
    let t = Instant::now();
    loop {
        let got: HashSet<String> = seen.lock().unwrap().iter().map(|e| e.1.clone()).collect();
        if acked.iter().all(|id| got.contains(id)) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "subscriber missing events"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    subscriber.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(reconnects.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    let ids: Vec<&String> = seen.iter().map(|e| &e.1).collect();
    let positions: Vec<u64> = seen.iter().map(|e| e.0).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions in order, none twice"
    );
    let unique: HashSet<&String> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no event delivered twice");
    // Every event stored was acknowledged (the writer retried each until it was), so the
    // subscriber saw exactly the acknowledged events, in acknowledgement order.
    let acked_refs: Vec<&String> = acked.iter().collect();
    assert_eq!(ids, acked_refs);
    drop(server);
}

#[test]
fn client_commands_print_the_same_over_http_as_locally() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let server = start(&data, "127.0.0.1:0", &[]);
    let url = server.url.clone();
    let remote = |args: &[&str]| {
        let mut a = vec!["--server", url.as_str()];
        a.extend_from_slice(args);
        run_cli(&a)
    };
    assert!(
        remote(&[
            "append",
            "account-42",
            "AccountOpened",
            r#"{"initialBalance": 100}"#,
            "--expected",
            "no-stream"
        ])
        .0
    );
    assert!(
        remote(&[
            "append",
            "account-42",
            "MoneyDeposited",
            r#"{"amount": 200}"#,
            "--expected",
            "0",
            "--metadata",
            r#"{"userId": "user-456"}"#
        ])
        .0
    );
    assert!(remote(&["append", "order-1", "OrderPlaced", "{}"]).0);
    let (ok, _, err) = remote(&["append", "account-42", "X", "{}", "--expected", "0"]);
    assert!(!ok);
    assert!(err.contains("expected 0, actual 1"), "{err}");
    let (ok, out, _) = remote(&["--json", "tail", "$all", "--from-start", "--count", "3"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 3);
    let (ok, out, _) = remote(&["tail", "account-42", "--after", "0", "--count", "1"]);
    assert!(ok, "{out}");
    assert!(out.contains("account-42@1"), "{out}");
    let commands: Vec<Vec<&str>> = vec![
        vec!["read", "account-42"],
        vec!["--json", "read", "account-42", "--backward"],
        vec!["read", "$all", "--category", "account"],
        vec!["--json", "read", "$all", "--limit", "1"],
        vec!["read", "$all", "--type", "OrderPlaced"],
        vec!["streams"],
        vec!["--json", "streams", "--categories"],
        vec!["info", "account-42"],
        vec!["--json", "info", "nothing-1"],
        vec!["read", "nothing-1"],
        vec!["read", "account-42", "--as-of", "2000-01-01T00:00:00Z"],
    ];
    let over_http: Vec<_> = commands.iter().map(|c| remote(c)).collect();
    drop(server);
    for (c, r) in commands.iter().zip(over_http) {
        let mut a = vec!["--data", d];
        a.extend_from_slice(c);
        let local = run_cli(&a);
        assert_eq!(r.0, local.0, "{c:?}");
        assert_eq!(r.1, local.1, "{c:?}");
        assert_eq!(r.2, local.2, "{c:?}");
    }
}

#[test]
fn serve_refuses_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let d = d.to_str().unwrap();
    let (ok, _, err) = run_cli(&["--data", d, "serve", "--listen", "0.0.0.0:0"]);
    assert!(!ok);
    assert!(err.contains("refusing to listen on 0.0.0.0:0"), "{err}");
    let (ok, _, err) = run_cli(&[
        "--data",
        d,
        "serve",
        "--listen",
        "localhost",
        "--tls-cert-file",
        "/nope.pem",
    ]);
    assert!(!ok);
    assert!(err.contains("2 problems"), "{err}");
    assert!(err.contains("--listen is \"localhost\""), "{err}");
    assert!(err.contains("TLS needs both"), "{err}");
    let cfg = dir.path().join("strata.toml");
    std::fs::write(
        &cfg,
        "[[tokens]]\nname = \"x\"\nsha256 = \"abc\"\nrole = \"root\"\n",
    )
    .unwrap();
    let (ok, _, err) = run_cli(&["--data", d, "serve", "--config", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("role"), "{err}");
}

#[test]
fn tokens_guard_a_non_loopback_style_setup() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, _) = run_cli(&["--json", "token", "new", "--role", "writer"]);
    assert!(ok);
    let t: Value = serde_json::from_str(out.trim()).unwrap();
    let token = t["token"].as_str().unwrap().to_owned();
    let cfg = dir.path().join("strata.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[tokens]]\nname = \"app\"\nsha256 = \"{}\"\nrole = \"writer\"\nprefixes = [\"account-\"]\n",
            t["sha256"].as_str().unwrap()
        ),
    )
    .unwrap();
    let server = start(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &["--config", cfg.to_str().unwrap()],
    );
    let (ok, _, err) = run_cli(&["--server", &server.url, "append", "account-1", "A", "{}"]);
    assert!(!ok);
    assert!(err.contains("unauthorized"), "{err}");
    assert!(err.contains("--token"), "{err}");
    let (ok, out, err) = run_cli(&[
        "--server",
        &server.url,
        "--token",
        &token,
        "append",
        "account-1",
        "A",
        "{}",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("version 0"));
    let (ok, _, err) = run_cli(&[
        "--server",
        &server.url,
        "--token",
        &token,
        "append",
        "order-1",
        "A",
        "{}",
    ]);
    assert!(!ok);
    assert!(err.contains("forbidden"), "{err}");
}

/// HTTPS from a certificate and key file; the client trusts a private CA with --ca-cert.
/// Needs the `openssl` command to make the certificates; says so and skips without it.
#[test]
fn serves_https_with_a_certificate_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sh = |script: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(d)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !sh("command -v openssl") {
        eprintln!("skipped: no openssl command to make a test certificate");
        return;
    }
    assert!(sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -subj /CN=test-ca -days 2 \
         && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout key.pem -out leaf.csr -subj /CN=localhost \
         && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext \
         && openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext"
    ));
    let cert = d.join("cert.pem");
    let key = d.join("key.pem");
    let ca = d.join("ca.pem");
    let server = start(
        &d.join("data"),
        "127.0.0.1:0",
        &[
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let (ok, out, err) = run_cli(&[
        "--server",
        &server.url,
        "--ca-cert",
        ca.to_str().unwrap(),
        "append",
        "tls-1",
        "A",
        "{}",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("version 0"));
    // Without trusting the CA the client refuses the connection.
    let (ok, _, err) = run_cli(&["--server", &server.url, "info", "tls-1"]);
    assert!(!ok);
    assert!(err.contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_projections_are_listed_paused_and_rebuilt_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap().to_owned();
    // Events written before the server starts: the hosted projection catches up on them.
    for (stream, ty) in [
        ("account-1", "AccountOpened"),
        ("account-1", "MoneyDeposited"),
    ] {
        let (ok, out, err) = run_cli(&["--data", &data_arg, "append", stream, ty, "{}"]);
        assert!(ok, "{out}{err}");
    }
    // Without a server: a built-in projection is rebuilt in this process.
    let (ok, out, err) = run_cli(&[
        "--data",
        &data_arg,
        "projections",
        "rebuild",
        "event-type-counts",
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.starts_with("rebuilt event-type-counts: 2 events applied"),
        "{out}"
    );
    let (ok, out, _) = run_cli(&["--data", &data_arg, "projections", "--json"]);
    assert!(ok);
    let row: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (row["checkpoint"].clone(), row["lagEvents"].clone()),
        (1.into(), 0.into())
    );
    let (ok, _, err) = run_cli(&["--data", &data_arg, "projections", "rebuild", "balances"]);
    assert!(!ok);
    assert!(err.contains("not a built-in projection"), "{err}");

    let server = start(&data, "127.0.0.1:0", &[]);
    let url = server.url.clone();
    let client = Client::new(&url).unwrap();
    client
        .append_raw(
            "order-1",
            ExpectedVersion::NoStream,
            &[EventData::json("OrderPlaced", &serde_json::json!({})).unwrap()],
        )
        .await
        .unwrap();
    let cli = |args: &[&str]| {
        let mut all = vec!["--server", url.as_str(), "projections"];
        all.extend_from_slice(args);
        run_cli(&all)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out, err) = cli(&["--json"]);
        assert!(ok, "{out}{err}");
        let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(v["name"], "event-type-counts");
        if v["checkpoint"] == 2 {
            assert_eq!(v["status"], "running");
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out, err) = cli(&["pause", "event-type-counts"]);
    assert!(ok, "{err}");
    assert!(out.contains("paused"), "{out}");
    let (ok, out, err) = cli(&["rebuild", "event-type-counts"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("rebuilt event-type-counts: 3 events applied"),
        "{out}"
    );
    let (ok, out, err) = cli(&["resume", "event-type-counts", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["status"], "running");
    assert_eq!(v["rebuild"]["state"], "done");
    let (ok, _, err) = cli(&["reset", "nope"]);
    assert!(!ok);
    assert!(err.contains("projection_not_found"), "{err}");
}
