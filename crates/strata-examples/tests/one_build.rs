//! Running an example after building the `strata` command compiles only the example: every
//! crate the two share resolves to the same features in both builds, so cargo reuses what
//! `cargo run --release --bin strata` compiled (measured in the README, "Examples").
//!
//! It compares what `cargo tree` resolves for the command (the workspace's default members,
//! as `cargo run --bin strata` selects them) with what it resolves for the examples (with their
//! dev-dependencies, as building an example does). It breaks when an example adds a dependency
//! the command lacks (as `tempfile` did: its `rustix` turned on `bitflags/std`, and rusqlite,
//! sqlx and reqwest compiled again), when the examples stop depending on `strata-cli`, or when
//! the workspace stops naming `strata-cli` its default member (then the command's build takes
//! the benchmark harness's features).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Crates only the examples' build compiles: themselves and their test support.
const EXAMPLES_ONLY: &[&str] = &["strata-examples", "strata-testkit"];

/// Package ("name vX.Y.Z", with a path for local ones) to each feature set it is built with
/// (a crate used both by build scripts or proc-macros and by the program can have two).
fn resolved(args: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        // The workspace's root: inside a member's directory, cargo selects that member.
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args(["tree", "--prefix", "none", "--format", "{p}|{f}"])
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut packages: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8(output.stdout).expect("UTF-8").lines() {
        let line = line.trim_end().trim_end_matches("(*)").trim_end();
        let Some((package, features)) = line.split_once('|') else {
            continue;
        };
        let package = package.trim_end_matches("(proc-macro)").trim().to_owned();
        packages
            .entry(package)
            .or_default()
            .insert(features.trim().to_owned());
    }
    packages
}

#[test]
fn an_example_after_the_command_compiles_only_the_example() {
    // The command: default members, normal and build dependencies (no dev ones for a binary).
    let command = resolved(&["--edges", "normal,build"]);
    // An example: its package, with dev-dependencies.
    let example = resolved(&[
        "--package",
        "strata-examples",
        "--edges",
        "normal,build,dev",
    ]);
    assert!(
        command.keys().any(|package| package.starts_with("axum ")),
        "the command's tree has the server in it: {:?}",
        command.keys().take(5).collect::<Vec<_>>()
    );

    let mut differences = Vec::new();
    for (package, features) in &example {
        let name = package.split(' ').next().unwrap_or_default();
        if EXAMPLES_ONLY.contains(&name) {
            continue;
        }
        match command.get(package) {
            Some(built) if built == features => {}
            Some(built) => differences.push(format!(
                "{package}: the command builds it with {built:?}, an example with {features:?}"
            )),
            None => differences.push(format!("{package}: only the examples use it")),
        }
    }
    assert!(
        differences.is_empty(),
        "an example would compile these again after the command (and what depends on them):\n{}",
        differences.join("\n")
    );
}
