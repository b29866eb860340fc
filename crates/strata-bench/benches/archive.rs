//! `cargo bench -p strata-bench --bench archive`: archiving a 1,000,000-event store to a
//! real S3-compatible server and to a directory, and restoring it from each, beside plain
//! copies of the same files (`STRATA_BENCH_QUICK=1` for a small run). Uses the server
//! `STRATA_BENCH_S3_ENDPOINT` names, else starts moto's (`pip install 'moto[server]'`).
//! Works in a temporary directory under `STRATA_BENCH_DIR`, else the current directory.

fn main() {
    let base = std::env::var("STRATA_BENCH_DIR").unwrap_or_else(|_| ".".to_owned());
    let scale = if std::env::var("STRATA_BENCH_QUICK").is_ok_and(|v| v == "1") {
        strata_bench::scavenge::ScavengeScale::Quick
    } else {
        strata_bench::scavenge::ScavengeScale::Full
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(strata_bench::archive::run(
        std::path::Path::new(&base),
        scale,
    )) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
