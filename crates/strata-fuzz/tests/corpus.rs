//! Every input of the checked-in fuzz corpus (`fuzz/corpus/TARGET/`), run through its target on
//! the stable toolchain: a finding once made, and its input kept in the corpus, stays fixed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

#[test]
fn every_corpus_input_passes_its_target() {
    let mut failures = Vec::new();
    for &(name, body) in strata_fuzz::TARGETS {
        let dir = corpus_dir(name);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the corpus of {name} ({}): {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "the corpus of {name} is empty");
        for input in inputs {
            let bytes = std::fs::read(&input).unwrap();
            if std::panic::catch_unwind(|| body(&bytes)).is_err() {
                failures.push(format!("{name}: {}", input.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "fuzz targets fail on these inputs:\n{}",
        failures.join("\n")
    );
}
