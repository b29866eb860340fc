#!/usr/bin/env bash
# Runs Strata's fuzz targets under libFuzzer (cargo-fuzz, nightly toolchain), each for a given
# time, and prints the executions and findings of each.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default 60 seconds, every target
#   FUZZ_MERGE=1 scripts/fuzz.sh 900 segment  # then fold new coverage into fuzz/corpus
#
# New inputs go to fuzz/work/TARGET (not checked in); the checked-in corpus fuzz/corpus/TARGET
# is read as seeds. A finding is written to fuzz/artifacts/TARGET/ and the run stops: minimise
# it (`cargo +nightly fuzz tmin TARGET FILE`), put it in fuzz/corpus/TARGET/ under a name that
# says what it is, fix the code, and `cargo test -p strata-fuzz` keeps it fixed.
# Needs: `cargo install cargo-fuzz` and the nightly toolchain.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(record segment index segment_index append_body metadata query config)
fi
cargo +nightly fuzz build -O
status=0
for t in "${targets[@]}"; do
  mkdir -p "work/$t" "corpus/$t"
  log="work/$t.log"
  echo "== $t for ${seconds}s"
  if cargo +nightly fuzz run -O "$t" "work/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
      >"$log" 2>&1; then
    echo "   no finding"
  else
    echo "   FINDING: see $log and fuzz/artifacts/$t/"
    status=1
  fi
  grep -E '^Done [0-9]+ runs|stat::number_of_executed_units|cov: [0-9]+' "$log" | tail -n 3 | sed 's/^/   /'
  if [ "${FUZZ_MERGE:-0}" = 1 ]; then
    cargo +nightly fuzz run -O "$t" "corpus/$t" "work/$t" -- -merge=1 >>"$log" 2>&1 || true
  fi
done
exit "$status"
