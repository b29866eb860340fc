//! `cargo bench -p strata-bench --bench shred`: crypto-shredding's cost on the embedded store,
//! beside the plain store in the same run (`STRATA_BENCH_QUICK=1` for a small run). Works in a
//! temporary directory under `STRATA_BENCH_DIR`, else the current directory.

fn main() {
    let base = std::env::var("STRATA_BENCH_DIR").unwrap_or_else(|_| ".".to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let scale = strata_bench::shred::ShredScale::from_env();
    match rt.block_on(strata_bench::shred::run(std::path::Path::new(&base), scale)) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
