//! Runs the PostgreSQL benchmarks of `strata-bench` (its `postgres` module, included here so
//! they can run from this crate too):
//!
//! ```text
//! cargo run --release -p strata-postgres --example pg_bench [-- --quick]
//! ```
//!
//! The database is `STRATA_BENCH_DATABASE_URL`, else `STRATA_TEST_DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`.

#[path = "../../strata-bench/src/postgres.rs"]
mod postgres;

#[tokio::main]
async fn main() {
    let url = std::env::var("STRATA_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("STRATA_TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let scale = if std::env::args().any(|a| a == "--quick") {
        postgres::PgBenchScale::Quick
    } else {
        postgres::PgBenchScale::Full
    };
    match postgres::run(&url, scale).await {
        Ok(report) => {
            println!("{report}");
            if let Some(ratio) = report.ratio_16_writers() {
                println!(
                    "summary: 16-writer ratio {ratio:.2}, catch-up {:.0} events/s",
                    report.catch_up_events_per_sec()
                );
            }
        }
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
