#!/usr/bin/env bash
# The GPU checks, in one command on a machine with CUDA (minutes on one H100/H200):
#   tests     the CUDA tests (every flow and model against the CPU in float64, training, CLI);
#   suite     the whole default test suite (8 processes of 2 threads with pytest-xdist, else one
#             process), naming the tests that fail or err, even when it runs out of time;
#   table2    Table 2's time per epoch on CUDA, at Fashion-MNIST and CIFAR-10 sizes;
#   memory    the peak memory of a paper-cifar10 step with and without gradient checkpointing;
#   normflows our Glow against normflows' on CUDA (needs normflows, the `bench` extra);
#   train     the cpu-long preset trained on CUDA for TRAIN_SECONDS, then evaluated (no FID).
# STEPS names the steps to run, separated by spaces (default: all, in this order).
# Each step's output goes to OUT_DIR/<step>.txt, the run to RUN_DIR (continued if it exists).
# The exit status is 1 if a step failed.
# Usage: [PYTHON=python3] [STEPS="tests table2"] bash benchmarks/gpu_checks.sh \
#            [OUT_DIR] [RUN_DIR] [TRAIN_SECONDS]
set -u
out=$(realpath -m "${1:-runs/gpu}")
run=$(realpath -m "${2:-runs/gpu/cpu-long}")
seconds=${3:-180}
py=${PYTHON:-python3}
steps=${STEPS:-tests suite table2 memory normflows train}
known=" tests suite table2 memory normflows train "
for name in $steps; do
    if [[ $known != *" $name "* ]]; then
        echo "gpu_checks.sh: unknown step '$name'; the steps are:$known" >&2
        exit 2
    fi
done
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0

step() {
    local name=$1 limit=$2
    shift 2
    [[ " $steps " == *" $name "* ]] || return 0
    echo "== $name ($(date -u +%H:%M:%S) UTC)"
    local began=$SECONDS
    # SIGINT at the limit: pytest then stops and still prints its summary (-rfE names the tests).
    timeout -s INT -k 30 "$limit" "$@" >"$out/$name.txt" 2>&1
    local code=$? lines
    lines=$(wc -l <"$out/$name.txt")
    # pytest's names of failed tests that the tail leaves out, then the tail.
    ((lines <= 25)) || head -n $((lines - 25)) "$out/$name.txt" | grep -E '^(FAILED|ERROR) '
    tail -n 25 "$out/$name.txt"
    echo "== $name: exit status $code, $((SECONDS - began)) s"
    ((code == 0)) || status=1
}

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
step tests 240 "$py" -m pytest -q -o addopts="" -W default -rsw -p no:cacheprovider \
    tests/test_cuda.py tests/test_conditioner_speed_paths.py
parallel=()
"$py" -c 'import xdist' 2>/dev/null && parallel=(-n 8)
step suite 900 env OMP_NUM_THREADS=2 "$py" -m pytest -q "${parallel[@]}" -p no:cacheprovider \
    -p no:benchmark -rfE --tb=short
step table2 240 "$py" benchmarks/bench_vs_glow.py --paper-size --device cuda --timing-only
step memory 240 "$py" benchmarks/bench_memory.py
step normflows 240 "$py" benchmarks/bench_normflows.py --device cuda
resume=()
[[ -e $run/config.json ]] && resume=(--resume)
step train $((seconds + 180)) "$py" -c 'import sys; from pyro_vaeflow.cli import main; sys.exit(main())' \
    train --preset cpu-long --device cuda --time-budget "$seconds" --run-dir "$run" \
    "${resume[@]}" --quiet --evaluate --no-fid
exit $status
