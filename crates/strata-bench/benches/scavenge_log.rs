//! `cargo bench -p strata-bench --bench scavenge_log`: the embedded store's scavenge beside
//! a plain copy of the same segment files, the data directory's size before and after, and
//! writers' p99 during it (`STRATA_BENCH_QUICK=1` for a small run). Works in a temporary
//! directory under `STRATA_BENCH_DIR`, else the current directory.

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
    match rt.block_on(strata_bench::scavenge_log::run(
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
