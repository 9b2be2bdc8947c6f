#!/usr/bin/env bash
# The GPU checks, in one command on a machine with CUDA (minutes on one H100/H200):
#   tests     the CUDA tests (every flow and model against the CPU in float64, training, CLI);
#   table2    Table 2's time per epoch on CUDA, at Fashion-MNIST and CIFAR-10 sizes;
#   memory    the peak memory of a paper-cifar10 step with and without gradient checkpointing;
#   normflows our Glow against normflows' on CUDA (needs normflows, the `bench` extra);
#   train     the cpu-long preset trained on CUDA for TRAIN_SECONDS, then evaluated (no FID).
# STEPS names the steps to run (default: all, in this order). Each step's output goes to
# OUT_DIR/<step>.txt; the run to RUN_DIR.
# Usage: [PYTHON=python3] [STEPS="tests table2"] bash benchmarks/gpu_checks.sh \
#            [OUT_DIR] [RUN_DIR] [TRAIN_SECONDS]
set -u
out=${1:-runs/gpu}
run=${2:-runs/gpu/cpu-long}
seconds=${3:-180}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

step() {
    local name=$1 limit=$2
    shift 2
    [[ " ${STEPS:-tests table2 memory normflows train} " == *" $name "* ]] || return 0
    echo "== $name ($(date -u +%H:%M:%S) UTC)"
    local began=$SECONDS
    timeout "$limit" "$@" >"$out/$name.txt" 2>&1
    local status=$?
    tail -n 25 "$out/$name.txt"
    echo "== $name: exit status $status, $((SECONDS - began)) s"
}

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
step tests 240 "$py" -m pytest -q -o addopts="" -W default -rsw -p no:cacheprovider \
    tests/test_cuda.py tests/test_conditioner_speed_paths.py
step table2 240 "$py" benchmarks/bench_vs_glow.py --paper-size --device cuda --timing-only
step memory 240 "$py" benchmarks/bench_memory.py
step normflows 240 "$py" benchmarks/bench_normflows.py --device cuda
step train $((seconds + 180)) "$py" -c 'import sys; from pyro_vaeflow.cli import main; sys.exit(main())' \
    train --preset cpu-long --device cuda --time-budget "$seconds" --run-dir "$run" \
    --quiet --evaluate --no-fid
