//! Crypto-shredding on the real binary: a master key made by `strata keygen`, a schema
//! registered, personal data appended and read back, a subject forgotten locally and through
//! `strata serve`, and every byte the data directory holds searched for the personal data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use strata_testkit::harness::files_holding;

mod support;
use support::{run_cli, Server, BIN};

const SENTINEL: &str = "sentinel-cli-e5f1@example.org";

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `strata --data DATA --json [--master-key-file KEY] ARGS`.
fn in_store(data: &str, key: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--data", data, "--json"];
    if let Some(key) = key {
        all.extend(["--master-key-file", key]);
    }
    all.extend_from_slice(args);
    run_cli(&all)
}

/// The schema both tests register: `CustomerRegistered`'s email, the subject at `/customerId`.
const EMAIL_SCHEMA: &[&str] = &[
    "schemas",
    "--set",
    "CustomerRegistered",
    "--subject-pointer",
    "/customerId",
    "--field",
    "/email",
];

fn registration(customer: &str) -> String {
    serde_json::json!({"customerId": customer, "email": format!("{customer}-{SENTINEL}")})
        .to_string()
}

#[test]
fn a_subject_is_sealed_read_and_forgotten_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key_file = dir.path().join("master.key");
    let (ok, key, err) = run_cli(&["keygen"]);
    assert!(ok, "{err}");
    assert_eq!(key.trim().len(), 64);
    std::fs::write(&key_file, &key).unwrap();
    let data_s = data.to_str().unwrap().to_owned();
    let key_s = key_file.to_str().unwrap().to_owned();
    let sealed = |args: &[&str]| in_store(&data_s, Some(&key_s), args);
    let plain = |args: &[&str]| in_store(&data_s, None, args);

    let (ok, out, err) = sealed(EMAIL_SCHEMA);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["schemas"][0]["fields"][0], "/email");
    let (ok, _, err) = sealed(&[
        "append",
        "customer-1",
        "CustomerRegistered",
        &registration("c-1"),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = sealed(&["read", "customer-1"]);
    assert!(ok, "{err}");
    assert_eq!(
        json_lines(&out)[0]["data"]["email"],
        format!("c-1-{SENTINEL}")
    );

    // Without the master key the store does not open: nothing is written in clear text.
    let (ok, _, err) = plain(&[
        "append",
        "customer-2",
        "CustomerRegistered",
        &registration("c-2"),
    ]);
    assert!(!ok);
    assert!(err.contains("master key"), "{err}");
    let (ok, _, err) = plain(&["read", "customer-1"]);
    assert!(!ok && err.contains("master key"), "{err}");
    // Nor with another one.
    let other = dir.path().join("other.key");
    std::fs::write(&other, run_cli(&["keygen"]).1).unwrap();
    let (ok, _, err) = run_cli(&[
        "--data",
        &data_s,
        "--master-key-file",
        other.to_str().unwrap(),
        "read",
        "customer-1",
    ]);
    assert!(!ok && err.contains("another master key"), "{err}");

    let (ok, out, err) = sealed(&["forget", "c-1"]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["outcome"], "forgotten");
    let (ok, out, _) = sealed(&["forget", "c-1"]);
    assert!(ok);
    assert_eq!(json_lines(&out)[0]["outcome"], "alreadyForgotten");
    let (ok, out, err) = sealed(&["read", "customer-1"]);
    assert!(ok, "{err}");
    let event = &json_lines(&out)[0];
    assert_eq!(event["data"]["email"], serde_json::Value::Null);
    assert_eq!(
        event["metadata"]["$forgotten"],
        serde_json::json!(["/email"])
    );

    // Through a server: the server holds the key, the client forgets.
    let mut serve = Command::new(BIN);
    serve
        .args(["--data", &data_s, "--master-key-file", &key_s, "serve"])
        .args(["--listen", "127.0.0.1:0", "--no-projections"]);
    let server = Server::spawn(serve);
    let remote = |args: &[&str]| {
        let mut all = vec!["--server", server.url.as_str(), "--json"];
        all.extend_from_slice(args);
        run_cli(&all)
    };
    let (ok, _, err) = remote(&[
        "append",
        "customer-3",
        "CustomerRegistered",
        &registration("c-3"),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = remote(&["schemas"]);
    assert!(ok, "{err}");
    assert_eq!(
        json_lines(&out)[0]["schemas"][0]["eventType"],
        "CustomerRegistered"
    );
    let (ok, out, err) = remote(&["forget", "c-3"]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["outcome"], "forgotten");
    let (ok, out, _) = remote(&["read", "customer-3"]);
    assert!(ok);
    assert_eq!(
        json_lines(&out)[0]["data"]["email"],
        serde_json::Value::Null
    );
    // A master key exported for local commands does not get in the way of --server.
    let out = Command::new(BIN)
        .args([
            "--server",
            server.url.as_str(),
            "--json",
            "read",
            "customer-1",
        ])
        .env("STRATA_MASTER_KEY_FILE", &key_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();

    // No byte of the data directory holds the personal data: segments, index files, keys.
    assert_eq!(
        files_holding(&data, SENTINEL.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
    // The same search finds it in a store without the schema: it can fail.
    let control = dir.path().join("control");
    let (ok, _, err) = run_cli(&[
        "--data",
        control.to_str().unwrap(),
        "append",
        "customer-1",
        "CustomerRegistered",
        &registration("c-1"),
    ]);
    assert!(ok, "{err}");
    assert!(!files_holding(&control, SENTINEL.as_bytes()).is_empty());
}

/// `strata rotate-master-key`: afterwards the store opens with the new key and reads as
/// before, and the old key is refused.
#[test]
fn the_master_key_is_rotated_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = |name: &str| {
        let (ok, key, err) = run_cli(&["keygen"]);
        assert!(ok, "{err}");
        let path = dir.path().join(name);
        std::fs::write(&path, key).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (old, new) = (key("old.key"), key("new.key"));
    let data_s = data.to_str().unwrap().to_owned();
    let with = |key: &str, args: &[&str]| in_store(&data_s, Some(key), args);
    let (ok, _, err) = with(&old, EMAIL_SCHEMA);
    assert!(ok, "{err}");
    let (ok, _, err) = with(
        &old,
        &[
            "append",
            "customer-1",
            "CustomerRegistered",
            &registration("c-1"),
        ],
    );
    assert!(ok, "{err}");

    let (ok, out, err) = with(&old, &["rotate-master-key", "--new-master-key-file", &new]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["rewrapped"], 1);

    let (ok, out, err) = with(&new, &["read", "customer-1"]);
    assert!(ok, "{err}");
    assert_eq!(
        json_lines(&out)[0]["data"]["email"],
        format!("c-1-{SENTINEL}")
    );
    let (ok, _, err) = with(&old, &["read", "customer-1"]);
    assert!(!ok);
    assert!(err.contains("another master key"), "{err}");
    // A schema whose subject is the stream.
    let (ok, out, err) = with(
        &new,
        &[
            "schemas",
            "--set",
            "UserCreated",
            "--subject-stream",
            "--field",
            "/name",
        ],
    );
    assert!(ok, "{err}");
    let listed = &json_lines(&out)[0]["schemas"];
    let user = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["eventType"] == "UserCreated")
        .unwrap();
    assert_eq!(user["subject"], serde_json::json!({"stream": {}}));
    let (ok, _, err) = with(
        &new,
        &[
            "append",
            "user-7",
            "UserCreated",
            r#"{"name": "Zed-Sentinel-91"}"#,
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = with(&new, &["forget", "user-7"]);
    assert!(ok, "{err}");
    let (ok, out, err) = with(&new, &["read", "user-7"]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["data"]["name"], serde_json::Value::Null);
    assert!(files_holding(&data, b"Zed-Sentinel-91").is_empty());
    // Rotating again to the same key is refused in a sentence.
    let (ok, _, err) = with(&new, &["rotate-master-key", "--new-master-key-file", &new]);
    assert!(!ok);
    assert!(err.contains("the one in force"), "{err}");
}
