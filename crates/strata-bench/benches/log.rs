//! `cargo bench -p strata-bench`: the embedded-store benchmarks at full scale
//! (`STRATA_BENCH_QUICK=1` for a small run). The same code runs behind the `strata-bench` program.

fn main() {
    let quick = std::env::var("STRATA_BENCH_QUICK").is_ok_and(|v| v == "1");
    // `cargo bench` passes `--bench`; ignore arguments.
    let dir = std::env::var("STRATA_BENCH_DIR").map_or_else(
        |_| std::env::temp_dir().join(format!("strata-bench-{}", std::process::id())),
        std::path::PathBuf::from,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let scale = if quick {
        strata_bench::Scale::Quick
    } else {
        strata_bench::Scale::Full
    };
    match rt.block_on(strata_bench::log::run(
        &dir,
        scale,
        std::path::Path::new(env!("CARGO_BIN_EXE_strata-bench")),
    )) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
