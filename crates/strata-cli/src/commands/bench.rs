//! `strata bench` and `strata bench-open` are gone from the `strata` binary: the benchmark
//! harness is its own program, `strata-bench`, so that `strata` does not carry the load
//! generator and the benchmarks' dependencies. These commands remain only to say what to run
//! instead, with the same options.

use std::fmt;

use clap::Args;

use crate::cli::Cli;

/// How the benchmarks are run now (from a checkout of Strata).
pub const RUN_BENCH: &str = "cargo run --release -p strata-bench";

#[derive(Args)]
pub struct BenchArgs {
    /// The benchmark options (--quick, --dir, --large, --http), for strata-bench.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

/// A benchmark command given to `strata`, which no longer runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchMoved {
    /// The command given: `bench` or `bench-open`.
    pub command: &'static str,
    /// The command line that runs it now.
    pub run_instead: String,
}

impl fmt::Display for BenchMoved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`strata {}` is no longer part of strata: the benchmarks are their own program, strata-bench. Run:\n\n    {}\n\n(docs/benchmarks.md lists each benchmark with its command)",
            self.command, self.run_instead
        )
    }
}

impl std::error::Error for BenchMoved {}

/// `arg` as one shell word.
fn shell_word(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@+%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// `strata bench [OPTIONS]`: the error saying which strata-bench command does the same.
pub fn bench(cli: &Cli, a: &BenchArgs) -> BenchMoved {
    let mut args = a.args.clone();
    if cli.json && !args.iter().any(|x| x == "--json") {
        args.push("--json".to_owned());
    }
    if let Some(url) = &cli.server {
        if !args
            .iter()
            .any(|x| x == "--server" || x.starts_with("--server="))
        {
            args.extend(["--server".to_owned(), url.clone()]);
        }
    }
    BenchMoved {
        command: "bench",
        run_instead: command_line(&args),
    }
}

/// `strata bench-open`: the error naming strata-bench's open measurement.
pub fn bench_open(cli: &Cli) -> BenchMoved {
    let data = cli.data_dir().display().to_string();
    BenchMoved {
        command: "bench-open",
        run_instead: command_line(&["open-measure".to_owned(), "--data".to_owned(), data]),
    }
}

fn command_line(args: &[String]) -> String {
    let mut line = RUN_BENCH.to_owned();
    if !args.is_empty() {
        line.push_str(" --");
    }
    for a in args {
        line.push(' ');
        line.push_str(&shell_word(a));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("--large"), "--large");
        assert_eq!(shell_word("./strata-bench-data"), "./strata-bench-data");
        assert_eq!(shell_word("http://127.0.0.1:2113"), "http://127.0.0.1:2113");
        assert_eq!(shell_word("my dir"), "'my dir'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
