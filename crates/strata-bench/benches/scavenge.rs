//! `cargo bench -p strata-bench --bench scavenge`: the PostgreSQL scavenge beside one `DELETE`
//! of the same rows, the table's size before and after, and writers' p99 during it
//! (`STRATA_BENCH_QUICK=1` for a small run). The database is `STRATA_BENCH_DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`.

fn main() {
    let url = std::env::var("STRATA_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    strata_bench::scavenge::bench_main(|scale| async move {
        strata_bench::scavenge::run(&url, scale).await
    });
}
