#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang, in build-fuzz/) and runs each for SECONDS, then
# prints per target: executions, coverage (cov: of the final stats) and findings.
#   scripts/fuzz.sh [SECONDS] [TARGET...]   default 30 s, every target (CI runs this)
# Environment: FUZZ_KEEP_GOING=1 keeps fuzzing after a finding (libFuzzer fork mode), to collect
# several; FUZZ_JOBS=N build jobs (default: all cores); TESSERA_FUZZ_DIR (default build-fuzz).
# Exit status: 0 when no target found anything, 1 otherwise. Reproducers stay in
# build-fuzz/fuzz-out/<target>/artifacts/; replay one with `build-fuzz/fuzz/fuzz_<target> FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
build_dir="${TESSERA_FUZZ_DIR:-build-fuzz}"
jobs="${FUZZ_JOBS:-$(nproc)}"
all_targets=(safetensors model_config model_load llm_arch llm_tokenizer llm_file gguf llama2c
             llama2c_tokenizer tokenizer_json hf_config idx reram_spec workload trajectories
             net_message)
targets=("${@:-${all_targets[@]}}")

# ccache can reuse clang's precompiled header only with these (fuzz/CMakeLists.txt drops its
# timestamp).
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S . -B "$build_dir" -DTESSERA_FUZZ=ON -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
fi
start=$(date +%s)
cmake --build "$build_dir" --target fuzz_all -j "$jobs"
echo "fuzz: build finished in $(( $(date +%s) - start )) s"

# The seeds are committed; a missing folder is written again by the library's own writers.
for t in "${targets[@]}"; do
  if [ -z "$(ls -A "fuzz/corpus/$t" 2>/dev/null)" ]; then
    "$build_dir/fuzz/fuzz_make_corpus" fuzz/corpus .
    break
  fi
done

dict_of() {
  case "$1" in
    gguf) echo fuzz/gguf.dict ;;
    llama2c|llama2c_tokenizer|idx|net_message) echo "" ;;
    *) echo fuzz/json.dict ;;
  esac
}

out="$build_dir/fuzz-out"
export TMPDIR="$out/tmp"
mkdir -p "$TMPDIR"
# Leaks count as findings; a sanitizer report ends the run with the stack that caused it.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=0
rows=()
for t in "${targets[@]}"; do
  dir="$out/$t"
  rm -rf "$dir/artifacts"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  args=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
        -artifact_prefix="$dir/artifacts/")
  dict="$(dict_of "$t")"
  [ -n "$dict" ] && args+=(-dict="$dict")
  [ "${FUZZ_KEEP_GOING:-0}" = 1 ] && args+=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
  # The first corpus folder collects new inputs; the committed seeds are only read.
  timeout $(( seconds + 120 )) "$build_dir/fuzz/fuzz_$t" "${args[@]}" "$dir/corpus" \
    "fuzz/corpus/$t" >"$dir/log" 2>&1 || true
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
  [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$dir/log" | tail -1 | tr -d '#')
  cov=$(grep -o 'cov: [0-9]*' "$dir/log" | tail -1 | sed 's/cov: //')
  n_found=$(find "$dir/artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
    -o -name 'oom-*' \) | wc -l)
  rows+=("$(printf '%-18s %12s %8s %9s' "$t" "${execs:-?}" "${cov:-?}" "$n_found")")
  if [ "$n_found" -gt 0 ] || ! grep -q 'Done [0-9]* runs\|INFO: exiting: 0\|fuzzed for' "$dir/log"; then
    failed=1
    echo "fuzz: $t: $n_found finding(s), log $dir/log"
    grep -m3 -E '^SUMMARY|ERROR: libFuzzer|ERROR: AddressSanitizer|terminate called' "$dir/log" | sed 's/^/  /' || true
    find "$dir/artifacts" -type f | head -5 | sed 's/^/  reproducer: /'
  fi
done
printf '%-18s %12s %8s %9s\n' target executions coverage findings
printf '%s\n' "${rows[@]}"
exit "$failed"
