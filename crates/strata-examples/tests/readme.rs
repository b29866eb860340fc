//! The README's Rust program is `examples/quickstart.rs`, which `cargo test` compiles: the two
//! must not drift apart.

const README: &str = include_str!("../../../README.md");
const QUICKSTART: &str = include_str!("../examples/quickstart.rs");

/// The first block of `lang` in `text`.
fn block<'a>(text: &'a str, lang: &str) -> &'a str {
    let open = format!("```{lang}\n");
    let start = text.find(&open).map(|i| i + open.len());
    let start = start.unwrap_or_else(|| panic!("the README has no ```{lang} block"));
    let len = text[start..].find("```").expect("the block ends");
    &text[start..start + len]
}

#[test]
fn the_readme_rust_program_is_the_quickstart_example() {
    // The example is the README's program after its doc comment.
    let body: String = QUICKSTART
        .lines()
        .skip_while(|l| l.starts_with("//!") || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(block(README, "rust"), body);
}

#[test]
fn the_readme_says_what_to_depend_on() {
    let toml = block(README, "toml");
    for needed in [
        "strata = ",
        "strata-log = ",
        "tokio = ",
        "\"macros\"",
        "\"rt-multi-thread\"",
        "serde_json",
    ] {
        assert!(
            toml.contains(needed),
            "the README's Cargo.toml lacks {needed}: {toml}"
        );
    }
    // It depends on the toolkit, which re-exports the event model.
    assert!(block(README, "rust").contains("use strata::{"));
}
