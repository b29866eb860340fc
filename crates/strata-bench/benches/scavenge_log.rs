//! `cargo bench -p strata-bench --bench scavenge_log`: the embedded store's scavenge beside
//! a plain copy of the same segment files, the data directory's size before and after, and
//! writers' p99 during it (`STRATA_BENCH_QUICK=1` for a small run). Works in a temporary
//! directory under `STRATA_BENCH_DIR`, else the current directory.

fn main() {
    let base = std::env::var("STRATA_BENCH_DIR").unwrap_or_else(|_| ".".to_owned());
    strata_bench::scavenge::bench_main(|scale| async move {
        strata_bench::scavenge_log::run(std::path::Path::new(&base), scale).await
    });
}
