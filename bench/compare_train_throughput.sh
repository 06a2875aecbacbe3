#!/usr/bin/env bash
# Training throughput, C++ (tessera, LibTorch) against Python (python3-torch, same LibTorch),
# measured side by side: for each model the two front ends alternate for ROUNDS rounds and the
# best-of-rounds images/s of each is compared. Needs Debian's python3-torch.
# Usage: bench/compare_train_throughput.sh [BUILD_DIR] [ROUNDS] [STEPS]
set -euo pipefail
build="${1:-build}"
rounds="${2:-3}"
steps="${3:-20}"
batch=128
threads=2
py=/usr/bin/python3
here="$(cd "$(dirname "$0")" && pwd)"
"$py" -c "import torch" 2>/dev/null || { echo "needs python3-torch: apt-get install python3-torch" >&2; exit 2; }
printf '| model | batch | threads | C++ img/s | Python img/s | C++ / Python | parameters (C++ = Python) |\n'
printf '|---|---|---|---|---|---|---|\n'
for model in vgg11_bn resnet20; do
  best_cpp=0; best_py=0; params_cpp=""; params_py=""
  for ((r = 0; r < rounds; r++)); do
    cpp=$("$build/bench/bench_train_step" "$model" "$batch" "$steps" "$threads")
    pyo=$("$py" "$here/train_step.py" "$model" "$batch" "$steps" "$threads")
    c=$(echo "$cpp" | sed -E 's/.*"images_per_second": ([0-9.]+).*/\1/')
    p=$(echo "$pyo" | sed -E 's/.*"images_per_second": ([0-9.]+).*/\1/')
    params_cpp=$(echo "$cpp" | sed -E 's/.*"parameters": ([0-9]+).*/\1/')
    params_py=$(echo "$pyo" | sed -E 's/.*"parameters": ([0-9]+).*/\1/')
    best_cpp=$(awk -v a="$best_cpp" -v b="$c" 'BEGIN{print (b > a) ? b : a}')
    best_py=$(awk -v a="$best_py" -v b="$p" 'BEGIN{print (b > a) ? b : a}')
  done
  same=$([ "$params_cpp" = "$params_py" ] && echo "yes ($params_cpp)" || echo "NO: $params_cpp vs $params_py")
  ratio=$(awk -v a="$best_cpp" -v b="$best_py" 'BEGIN{printf "%.2f", a / b}')
  printf '| %s | %d | %d | %.1f | %.1f | %sx | %s |\n' "$model" "$batch" "$threads" "$best_cpp" "$best_py" "$ratio" "$same"
done
