#!/usr/bin/env bash
# The GPU check, from a fresh clone on a machine with one NVIDIA GPU, in at most 8 minutes:
#   1. install the project (make install: .venv, torch from the registry);
#   2. the CUDA unit tests (pytest -m gpu; skipped without CUDA);
#   3. benchmarks/gpu_check.py: victim training and CLIP scoring images/s (project vs plain PyTorch),
#      BadNets' CGD on real CIFAR-10 with the GPU profile and short budgets, peak GPU memory, and the
#      trigger throughput of all thirteen attacks (batched vs per image).
# Without a GPU, the GPU parts are skipped with a message and the rest runs on the CPU.
#
#   bash benchmarks/gpu_check.sh [CIFAR10_ROOT_OR_TARBALL]
# CIFAR10_ROOT_OR_TARBALL defaults to ../shared/data/cifar10-jpg.tar.gz when that exists.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${GPU_CHECK_SECONDS:-480}
deadline=$((SECONDS + LIMIT))
left() { echo $((deadline - SECONDS)); }
export KEDRO_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1

echo "== install ($(date -u +%H:%M:%S))"
timeout "$(left)" make --no-print-directory install
PY=.venv/bin/python

echo "== CUDA unit tests (pytest -m gpu)"
timeout "$(left)" "$PY" -m pytest -q -m gpu -p no:cacheprovider -rs || { code=$?; [ "$code" = 5 ] || exit "$code"; }

source=${1:-../shared/data/cifar10-jpg.tar.gz}
cifar=()
if [ -f "$source" ]; then  # a tarball: extracted once under data/01_raw (ignored by git)
  mkdir -p data/01_raw/cifar10-jpg-check
  [ -d data/01_raw/cifar10-jpg-check/cifar10-jpg ] || tar xzf "$source" -C data/01_raw/cifar10-jpg-check
  cifar=(--cifar10 "$PWD/data/01_raw/cifar10-jpg-check/cifar10-jpg")
elif [ -d "$source" ]; then
  cifar=(--cifar10 "$source")
else
  echo "no CIFAR-10 at '$source': the CIFAR-10 part will be skipped"
fi

echo "== measurements ($(left) s left)"
timeout "$(left)" "$PY" benchmarks/gpu_check.py "${cifar[@]}" --seconds "$(( $(left) > 60 ? $(left) - 60 : 1 ))"
echo "== done in ${SECONDS} s"
