//! `strata meta`, `strata truncate` and `strata delete` on the real binary, against the
//! embedded store: each change as a user sees it through `read` and `info`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::run_cli;

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn a_stream_is_truncated_deleted_recreated_and_tombstoned_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let cli = |args: &[&str]| {
        let mut all = vec!["--data", data, "--json"];
        all.extend_from_slice(args);
        run_cli(&all)
    };
    for n in 0..3 {
        let (ok, _, err) = cli(&["append", "order-7", "Placed", &format!("{{\"n\":{n}}}")]);
        assert!(ok, "{err}");
    }
    let versions = || {
        let (ok, out, err) = cli(&["read", "order-7"]);
        assert!(ok, "{err}");
        json_lines(&out)
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };

    let (ok, out, err) = cli(&["meta", "order-7"]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["version"], serde_json::Value::Null);
    let (ok, out, err) = cli(&["meta", "order-7", "--set", r#"{"custom":{"owner":"shop"}}"#]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["metadata"]["custom"]["owner"], "shop");
    let (ok, _, err) = cli(&["meta", "order-7", "--set", "[1]"]);
    assert!(!ok);
    assert!(err.contains("JSON object"), "{err}");

    let (ok, _, err) = cli(&["truncate", "order-7", "--before", "9"]);
    assert!(!ok);
    assert!(err.contains("past the stream's next version 3"), "{err}");
    let (ok, out, err) = cli(&["truncate", "order-7", "--before", "1"]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["writtenTo"], "$$order-7");
    assert_eq!(versions(), [1, 2]);

    let (ok, _, err) = cli(&["delete", "order-7", "--expected", "1"]);
    assert!(!ok);
    assert!(err.contains("expected"), "{err}");
    let (ok, _, err) = cli(&["delete", "order-7", "--expected", "2"]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&["info", "order-7"]);
    assert!(ok);
    assert_eq!(json_lines(&out)[0]["exists"], false);

    let (ok, out, err) = cli(&[
        "append",
        "order-7",
        "Placed",
        "{}",
        "--expected",
        "no_stream",
    ]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["version"], 3);
    assert_eq!(versions(), [3]);

    let (ok, out, err) = cli(&["delete", "order-7", "--tombstone"]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["change"], "tombstoned");
    let (ok, _, err) = cli(&["append", "order-7", "Placed"]);
    assert!(!ok);
    assert!(err.contains("tombstoned"), "{err}");
    let (ok, _, err) = cli(&["read", "order-7"]);
    assert!(!ok);
    assert!(err.contains("tombstoned"), "{err}");
}

/// `strata scavenge` removes a deleted stream's events (all but its first and last) and a
/// truncated one's hidden ones, and reads answer as before: on the embedded store and on
/// PostgreSQL.
#[tokio::test]
async fn scavenge_reclaims_what_deletions_hide_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for n in 0..4 {
        let data_n = format!("{{\"n\":{n}}}");
        let (ok, _, err) = run_cli(&["--data", data, "append", "order-1", "Placed", &data_n]);
        assert!(ok, "{err}");
    }
    let (ok, _, err) = run_cli(&["--data", data, "delete", "order-1"]);
    assert!(ok, "{err}");
    let (ok, out, err) = run_cli(&["--data", data, "--json", "scavenge"]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["eventsRemoved"], 2, "{out}");

    let Some(db) = support::Database::create("the scavenge command test").await else {
        return;
    };
    let url = db.url();
    let cli = |args: &[&str]| {
        let mut all = vec!["--database-url", url.as_str(), "--json"];
        all.extend_from_slice(args);
        run_cli(&all)
    };
    for n in 0..5 {
        for stream in ["order-1", "order-2"] {
            let (ok, _, err) = cli(&["append", stream, "Placed", &format!("{{\"n\":{n}}}")]);
            assert!(ok, "{err}");
        }
    }
    let (ok, _, err) = cli(&["delete", "order-1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&["truncate", "order-2", "--before", "3"]);
    assert!(ok, "{err}");
    let read = || {
        let (ok, out, err) = cli(&["read", "order-2"]);
        assert!(ok, "{err}");
        out
    };
    let before = read();

    let (ok, out, err) = cli(&["scavenge"]);
    assert!(ok, "{err}");
    let report = &json_lines(&out)[0];
    // order-1: versions 1..4 (3, its first and last stay); order-2: 1..3 (2).
    assert_eq!(report["eventsRemoved"], 3 + 2, "{out}");
    assert_eq!(report["streamsExamined"], 2, "{out}");
    assert_eq!(read(), before);
    let (ok, out, err) = cli(&["scavenge"]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out)[0]["eventsRemoved"], 0, "{out}");
}
