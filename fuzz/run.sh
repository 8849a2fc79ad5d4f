#!/usr/bin/env bash
# Runs the fuzz targets, each for SECONDS (default 60), from the committed seeds and
# regression inputs: fuzz/run.sh [SECONDS] [TARGET...]. CI runs every target for 60 s; run
# longer by hand (fuzz/run.sh 3600 pth); FUZZ_SEED fixes libFuzzer's seed (CI: 1, so that a
# run is repeatable). Installs cargo-fuzz on first use and builds with
# the machine's stable toolchain (RUSTC_BOOTSTRAP lets it take the sanitizer flags).
#
# Every input is held to a memory bound: one allocation over MALLOC_MB, or a process over
# RSS_MB, is a finding like a crash. An input that ran longer than 10 s is one too. A
# finding is written to fuzz/artifacts/<target>/; once fixed, it goes into
# fuzz/regressions/<target>/ so that every later run replays it first.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(decode_mask decode_photo request pth opt_txt safetensors)
fi
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo fuzz build -O
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "$work/$target" "regressions/$target"
  echo "== $target: ${seconds} s"
  status=0
  cargo fuzz run -O "$target" "$work/$target" "seeds/$target" "regressions/$target" -- \
    -max_total_time="$seconds" -malloc_limit_mb="${MALLOC_MB:-64}" \
    -rss_limit_mb="${RSS_MB:-2048}" -timeout=10 -print_final_stats=1 ${FUZZ_SEED:+-seed=$FUZZ_SEED} \
    >"$work/$target.log" 2>&1 || status=$?
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+ +DONE' "$work/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$work/$target.log" >&2
    echo "fuzz target $target failed (exit $status); the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
