//! `cargo bench -p strata-bench --bench archive`: archiving a 1,000,000-event store to a
//! real S3-compatible server and to a directory, and restoring it from each, beside plain
//! copies of the same files (`STRATA_BENCH_QUICK=1` for a small run). Uses the server
//! `STRATA_BENCH_S3_ENDPOINT` names, else starts moto's (`pip install 'moto[server]'`).
//! Works in a temporary directory under `STRATA_BENCH_DIR`, else the current directory.

fn main() {
    let base = std::env::var("STRATA_BENCH_DIR").unwrap_or_else(|_| ".".to_owned());
    strata_bench::scavenge::bench_main(|scale| async move {
        strata_bench::archive::run(std::path::Path::new(&base), scale).await
    });
}
