//! The benchmarks are the `strata-bench` program, not part of `strata`: `strata bench` (and
//! the old `bench-open`) exit 1 with the command that runs the same benchmark now, options
//! kept, instead of "unrecognized subcommand".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// Runs `strata ARGS` with no STRATA_* settings from the environment: (exit code, stderr).
fn strata(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("STRATA_SERVER")
        .env_remove("STRATA_DATA")
        .env_remove("STRATA_DATABASE_URL")
        .env_remove("STRATA_TOKEN")
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bench_names_the_strata_bench_command_with_the_same_options() {
    let (code, err) = strata(&["bench"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("    cargo run --release -p strata-bench\n"),
        "{err}"
    );

    let (code, err) = strata(&["bench", "--large", "10000000", "--dir", "big dir"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cargo run --release -p strata-bench -- --large 10000000 --dir 'big dir'\n"),
        "{err}"
    );

    // Options that were global to `strata` are carried over too.
    let (code, err) = strata(&[
        "--json",
        "--server",
        "http://127.0.0.1:9",
        "bench",
        "--quick",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "cargo run --release -p strata-bench -- --quick --json --server http://127.0.0.1:9\n"
        ),
        "{err}"
    );
}

#[test]
fn bench_open_names_open_measure() {
    let (code, err) = strata(&["--data", "/tmp/some-store", "bench-open"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "cargo run --release -p strata-bench -- open-measure --data /tmp/some-store\n"
        ),
        "{err}"
    );
}

#[test]
fn bench_is_not_listed_among_the_commands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(help.contains("  verify "), "{help}");
    assert!(!help.contains("bench"), "{help}");
}
