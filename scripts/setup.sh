#!/usr/bin/env bash
# Sets up a Debian 12 machine for Tessera, builds it (Release), then runs what was asked:
#   scripts/setup.sh tour    set up, build, run `tessera tour`
#   scripts/setup.sh test    set up, build, run the unit tests (this is what CI runs)
#   scripts/setup.sh build   set up and build only
# Safe to run again: installed packages, the configured build tree and ccache are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

action="${1:-build}"
case "$action" in tour|test|build) ;; *) echo "usage: scripts/setup.sh [tour|test|build]" >&2; exit 2;; esac

packages=(
  build-essential cmake git pkg-config ccache clang-format python3
  clang libclang-rt-14-dev                    # scripts/fuzz.sh: libFuzzer and the sanitizers
  python3-torch                               # tests: models trained in PyTorch, imported
  libtorch-dev libopenblas0-openmp            # tensors; OpenBLAS or matmul is ~15x slower
  libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev zlib1g-dev libssl-dev
  libpcre2-dev                                # llm: tokenizer.json pre-tokenizer regexes
  libgrpc++-dev libprotobuf-dev protobuf-compiler-grpc
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist                       # real data: /usr/share/datasets/fashion-mnist
)

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# LibTorch calls the BLAS behind Debian's libblas.so.3 alternative: make it OpenBLAS.
for lib in libblas.so.3 liblapack.so.3; do
  target="/usr/lib/x86_64-linux-gnu/openblas-openmp/${lib}"
  if [ -e "$target" ]; then
    "${sudo_cmd[@]}" update-alternatives --set "${lib}-x86_64-linux-gnu" "$target" >/dev/null
  fi
done

build_dir="${TESSERA_BUILD_DIR:-build}"
jobs="$(nproc)"
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release
fi
start=$(date +%s)
cmake --build "$build_dir" -j "$jobs"
echo "setup: build finished in $(( $(date +%s) - start )) s"

case "$action" in
  tour) exec "$build_dir/tessera" tour ;;
  test) cd "$build_dir" && exec ctest -L unit --output-on-failure -j "$jobs" ;;
  build) ;;
esac
