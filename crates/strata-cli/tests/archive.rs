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
