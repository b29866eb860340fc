//! The README's quick start and the curl examples of `docs/http-api.md`, walked literally: each
//! `sh` block in order, each command run as a reader would run it (with `bash` and `curl`), on
//! a fresh data directory. A step fails the test when it fails, or when its output differs from
//! what the document shows.
//!
//! What a document shows: the comment lines right under a command (`# …`), or a comment after
//! the command on its line that starts with `{` (`curl -s $S/all/head   # {"head":2}`). JSON is
//! compared as JSON: the document's members must be in the answer with the same values (the
//! answer may have more), `…` stands for any value, any part of a string, or the rest of an
//! object or array, and a time (RFC 3339) any time; `e.g.` before an output marks an
//! illustration, not compared. Text is
//! compared line by line, `…` standing for any part of a line.
//!
//! Before a block, `<!-- walkthrough: skip (why) -->` leaves it out (installing, building an
//! image, PostgreSQL pairs, certificates) and `<!-- walkthrough: stop the server -->` stops the
//! server of the quick start first. `cargo run --release --bin strata --` stands for the binary
//! this test was built with (one build, not two), and the README's `127.0.0.1:2113` for the
//! address the test's server got. `cargo test --workspace` is not run: it is what runs this.
//! Commands that follow forever (`curl -N`, `strata tail`) run for 2 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod support;

use support::{Server, BIN};
const README: &str = include_str!("../../../README.md");
const HTTP_API: &str = include_str!("../../../docs/http-api.md");
/// The placeholder `…` becomes in JSON the document shows.
const ANY: &str = "\u{e000}any";

struct Block {
    lines: Vec<String>,
    marker: Option<String>,
}

/// The `sh` blocks of `md`, each with the walkthrough marker right before it, if any.
fn sh_blocks(md: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    let mut last_text = String::new();
    for line in md.lines() {
        match &mut current {
            Some(b) if line.starts_with("```") => {
                blocks.push(std::mem::replace(
                    b,
                    Block {
                        lines: Vec::new(),
                        marker: None,
                    },
                ));
                current = None;
            }
            Some(b) => b.lines.push(line.to_owned()),
            None if line == "```sh" => {
                let marker = last_text
                    .strip_prefix("<!-- walkthrough: ")
                    .and_then(|m| m.strip_suffix(" -->"))
                    .map(str::to_owned);
                current = Some(Block {
                    lines: Vec::new(),
                    marker,
                });
            }
            None => {
                if !line.trim().is_empty() {
                    last_text = line.trim().to_owned();
                }
            }
        }
    }
    blocks
}

/// One command and what the document shows of its output.
#[derive(Debug)]
struct Step {
    command: String,
    shown: Vec<String>,
}

/// Where a comment starts in `line` (a `#` after whitespace, outside quotes).
fn comment_start(line: &str) -> Option<usize> {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return Some(i),
            _ => {}
        }
        prev = c;
    }
    None
}

/// Whether `text` leaves a quote open before any comment (a command that goes on on the
/// next line).
fn open_quote(text: &str) -> bool {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for c in text.chars() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return false,
            _ => {}
        }
        prev = c;
    }
    single || double
}

fn steps(block: &Block) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut lines = block.lines.iter();
    while let Some(line) = lines.next() {
        if let Some(comment) = line.trim_start().strip_prefix('#') {
            if let Some(step) = out.last_mut() {
                step.shown
                    .push(comment.strip_prefix(' ').unwrap_or(comment).to_owned());
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let mut command = line.clone();
        while open_quote(&command) {
            let next = lines.next().expect("a quote closes before the block ends");
            command.push('\n');
            command.push_str(next);
        }
        let mut shown = Vec::new();
        let last_line = command.lines().last().unwrap_or_default().to_owned();
        if let Some(i) = comment_start(&last_line) {
            let comment = last_line[i + 1..].trim();
            if comment.starts_with('{') {
                shown.push(comment.to_owned());
            }
            let keep = command.len() - (last_line.len() - i);
            command.truncate(keep);
        }
        out.push(Step {
            command: command.trim_end().to_owned(),
            shown,
        });
    }
    out
}

/// The JSON a document shows, its `…` made into something JSON can hold: a value or an
/// element becomes [`ANY`], `…` before a closing bracket is dropped (the rest is not
/// compared), and `[…anything…]` becomes [`ANY`].
fn shown_json(text: &str) -> Option<Value> {
    let text = text.replace("...", "…");
    let mut out = String::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => in_string = false,
                _ => escaped = false,
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '…' => {
                let before = out.trim_end().chars().last();
                if before == Some('[') {
                    // `[…3 events…]`: the whole array.
                    out.truncate(out.trim_end().len() - 1);
                    for n in chars.by_ref() {
                        if n == ']' {
                            break;
                        }
                    }
                    out.push('"');
                    out.push_str(ANY);
                    out.push('"');
                    continue;
                }
                let after = chars.clone().find(|n| !n.is_whitespace());
                if matches!(after, Some('}') | Some(']')) && before == Some(',') {
                    let keep = out.trim_end().len() - 1;
                    out.truncate(keep);
                } else {
                    out.push('"');
                    out.push_str(ANY);
                    out.push('"');
                }
            }
            _ => out.push(c),
        }
    }
    let mut values = serde_json::Deserializer::from_str(&out).into_iter::<Value>();
    values.next()?.ok()
}

/// Whether `pattern` (with `…` for any part) matches `text`.
fn matches_text(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = match text.strip_prefix(parts[0]) {
        Some(r) => r,
        None => return false,
    };
    for (i, part) in parts.iter().enumerate().skip(1) {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

fn is_time(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

fn matches_json(shown: &Value, actual: &Value) -> bool {
    match (shown, actual) {
        (Value::String(s), _) if s == ANY => true,
        // A time stands for any time: the document's example ran on another day.
        (Value::String(s), Value::String(a)) if is_time(s) => is_time(a),
        (Value::String(s), Value::String(a)) => matches_text(&s.replace(ANY, "…"), a),
        (Value::Number(s), Value::Number(a)) => s.as_f64() == a.as_f64(),
        (Value::Object(s), Value::Object(a)) => s
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| matches_json(v, av))),
        (Value::Array(s), Value::Array(a)) => {
            s.len() == a.len() && s.iter().zip(a).all(|(s, a)| matches_json(s, a))
        }
        (s, a) => s == a,
    }
}

/// Checks `output` against what the document shows; `Err` says how they differ.
fn check(shown: &[String], output: &str) -> Result<(), String> {
    if shown.is_empty() || shown[0].starts_with("e.g.") {
        return Ok(());
    }
    if shown[0].starts_with('{') {
        let text = shown.join(" ");
        let expected = shown_json(&text)
            .ok_or_else(|| format!("the document's JSON does not parse: {text}"))?;
        let actual: Value = serde_json::from_str(output.trim())
            .map_err(|e| format!("the answer is not JSON ({e}): {output}"))?;
        return if matches_json(&expected, &actual) {
            Ok(())
        } else {
            Err(format!("shown {expected}\nanswered {actual}"))
        };
    }
    let lines: Vec<&str> = output.lines().map(str::trim_end).collect();
    let same = lines.len() == shown.len()
        && shown
            .iter()
            .zip(&lines)
            .all(|(s, l)| matches_text(s.trim_end(), l));
    if same {
        Ok(())
    } else {
        Err(format!(
            "shown:\n{}\nprinted:\n{}",
            shown.join("\n"),
            lines.join("\n")
        ))
    }
}

/// `strata serve` in `dir` on the default data directory, on a free port.
fn serve(dir: &Path) -> Server {
    let mut serve = Command::new(BIN);
    serve
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("STRATA_SERVER")
        .env_remove("STRATA_DATA");
    Server::spawn(serve)
}

/// A shell for the steps: `strata` is the binary, the environment is what the steps set.
struct Shell {
    dir: std::path::PathBuf,
    env: BTreeMap<String, String>,
    addr: String,
}

impl Shell {
    fn substitute(&self, command: &str) -> String {
        command
            .replace("cargo run -q --release --bin strata --", "\"$STRATA_BIN\"")
            .replace("cargo run --release --bin strata --", "\"$STRATA_BIN\"")
            .replace("127.0.0.1:2113", &self.addr)
            .replace("localhost:2113", &self.addr)
    }

    /// Runs `step`; panics with what went wrong.
    fn run(&mut self, doc: &str, step: &Step) {
        let command = self.substitute(&step.command);
        if let Some(assignment) = command.strip_prefix("export ") {
            let (k, v) = assignment.split_once('=').expect("export K=V");
            self.env.insert(k.to_owned(), v.to_owned());
            return;
        }
        if let Some(k) = command.strip_prefix("unset ") {
            self.env.remove(k.trim());
            return;
        }
        if command.starts_with("strata()") {
            return; // The shell defines it.
        }
        let follows = command.contains("curl -N") || command.contains("strata tail");
        let script = if follows {
            format!(
                "timeout 2 bash -c {}",
                shell_quote(&format!("{PRELUDE} {command}"))
            )
        } else {
            command.clone()
        };
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -o pipefail; {PRELUDE} export -f strata curl; {script}"
            ))
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .env("STRATA_BIN", BIN)
            .env("STRATA_LOG", "warn")
            .envs(&self.env)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let timed_out = follows && out.status.code() == Some(124);
        assert!(
            out.status.success() || timed_out,
            "{doc}: `{}` failed ({}):\n{stdout}\n{stderr}",
            step.command,
            out.status
        );
        // Every answer's status, as the `curl` of the prelude wrote it: an error status
        // passes only where the document shows that error (its problem document's status).
        let shown_status = step
            .shown
            .first()
            .filter(|s| s.starts_with('{'))
            .and_then(|_| shown_json(&step.shown.join(" ")))
            .and_then(|v| v["status"].as_u64());
        for status in stderr.lines().filter_map(|l| l.strip_prefix(STATUS_MARK)) {
            let status: u64 = status.trim().parse().unwrap_or(0);
            assert!(
                (200..400).contains(&status) || Some(status) == shown_status,
                "{doc}: `{}` was answered {status}, which the document does not show:\n{stdout}",
                step.command
            );
        }
        if let Err(why) = check(&step.shown, &stdout) {
            panic!(
                "{doc}: `{}` printed something else than shown:\n{why}",
                step.command
            );
        }
    }
}

/// What each step's shell defines first: `strata` runs the binary under test, and `curl`
/// writes each answer's status to stderr after [`STATUS_MARK`] (`curl -s` alone exits 0 on
/// a 404 or a 500, so a broken example would pass unseen).
const PRELUDE: &str = "strata() { \"$STRATA_BIN\" \"$@\"; }; \
     curl() { command curl -w '%{stderr}HTTP-STATUS %{http_code}\\n' \"$@\"; };";

/// Marks a status line on a step's stderr.
const STATUS_MARK: &str = "HTTP-STATUS ";

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Whether the commands the walk needs are here; under CI they must be.
fn tools_present() -> bool {
    let have = |tool: &str| {
        Command::new("bash")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = ["curl", "timeout"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the documentation walk needs {missing:?}"
    );
    eprintln!("SKIPPING: the documentation walk needs {missing:?}");
    false
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let blocks = sh_blocks(README);
    let first = steps(&blocks[0]);
    assert!(
        first[0]
            .command
            .starts_with("cargo run --release --bin strata -- serve"),
        "the quick start starts with the server: {first:?}"
    );
    assert_eq!(first[1].command, "cargo test --workspace");
    let mut server = Some(serve(dir.path()));
    let mut shell = Shell {
        dir: dir.path().to_owned(),
        env: BTreeMap::new(),
        addr: server.as_ref().unwrap().addr().to_owned(),
    };
    let mut ran = 0;
    for block in &blocks[1..] {
        match block.marker.as_deref() {
            Some(m) if m.starts_with("skip") => continue,
            Some("stop the server") => server.take().expect("one server to stop").stop(),
            Some(other) => panic!("unknown walkthrough marker {other:?}"),
            None => {}
        }
        for step in steps(block) {
            shell.run("README.md", &step);
            ran += 1;
        }
    }
    assert!(
        server.is_none(),
        "the README stops the server for the file commands"
    );
    assert!(ran >= 15, "only {ran} steps ran");
}

#[test]
fn the_http_api_curl_examples_answer_as_shown() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let mut shell = Shell {
        dir: dir.path().to_owned(),
        env: BTreeMap::from([("S".to_owned(), server.url.clone())]),
        addr: server.addr().to_owned(),
    };
    let have_jq = Command::new("bash")
        .args(["-c", "command -v jq"])
        .output()
        .is_ok_and(|o| o.status.success());
    let (mut ran, mut compared) = (0, 0);
    for block in sh_blocks(HTTP_API) {
        if block
            .marker
            .as_deref()
            .is_some_and(|m| m.starts_with("skip"))
        {
            continue;
        }
        for step in steps(&block) {
            if !step.command.starts_with("curl ") || (step.command.contains("| jq") && !have_jq) {
                continue;
            }
            shell.run("docs/http-api.md", &step);
            ran += 1;
            if step.shown.first().is_some_and(|s| s.starts_with('{')) {
                compared += 1;
            }
        }
    }
    assert!(ran >= 30, "only {ran} curl examples ran");
    assert!(compared >= 12, "only {compared} answers were compared");
}

#[test]
fn shown_json_takes_the_documents_ellipses() {
    let shown = shown_json(r#"{"a":[…2 events…],"b":"x…z","c":…,"d":1,…}"#).unwrap();
    let actual: Value =
        serde_json::from_str(r#"{"a":[1,2],"b":"xyz","c":{"deep":true},"d":1,"e":5}"#).unwrap();
    assert!(matches_json(&shown, &actual));
    let wrong: Value = serde_json::from_str(r#"{"a":[],"b":"xyz","c":0,"d":2}"#).unwrap();
    assert!(!matches_json(&shown, &wrong), "d differs");
    assert!(check(&["e.g. {\"x\":1}".to_owned()], "{}").is_ok());
    assert!(check(&["appended … to a".to_owned()], "appended 1 event to a\n").is_ok());
    assert!(check(&["appended … to a".to_owned()], "appended 1 event to b\n").is_err());
}
