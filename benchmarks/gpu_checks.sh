#!/usr/bin/env bash
# The GPU checks, in one command on a machine with CUDA (minutes on one H100/H200):
#   tests     the CUDA tests (every flow and model against the CPU in float64, training, CLI);
#   suite     the whole default test suite (8 processes of 2 threads with pytest-xdist, else one
#             process), naming the tests that fail or err, even when it runs out of time;
#   table2    Table 2's time per epoch on CUDA, at Fashion-MNIST and CIFAR-10 sizes;
#   memory    the peak memory of a paper-cifar10 step with and without gradient checkpointing;
#   normflows our Glow against normflows' on CUDA (needs normflows, the `bench` extra);
#   train     the cpu-long preset trained on CUDA for TRAIN_SECONDS, then evaluated (no FID);
#   throughput paper-cifar10's VAE-phase and Glow-layer epochs (eager fp32 with TF32, compiled,
#             compiled bf16) against their FLOP floor at the H200's datasheet peaks and the
#             paper's GTX 1080 Ti (118 s, 162 s); the Pyro overhead on CUDA; our Glow against
#             normflows', eager and compiled;
#   fid10k    the cpu-long preset trained on CUDA for TRAIN_SECONDS (--compile), then
#             10 000 samples at T = 0.5 written as uint8 to OUT_DIR/samples_T0.5.pt (+ .json:
#             the epochs), for `python benchmarks/fid_from_samples.py OUT_DIR/samples_T0.5.pt`
#             on a machine with the Inception weights; its run goes to RUN_DIR-fid10k (continued if it exists).
# STEPS names the steps to run, separated by spaces (default: all, in this order). Within
# 15 minutes of an H200, e.g. STEPS="throughput fid10k" with TRAIN_SECONDS=150.
# Each step's output goes to OUT_DIR/<step>.txt, the run to RUN_DIR (continued if it exists).
# The exit status is 1 if a step failed.
# Usage: [PYTHON=python3] [STEPS="tests table2"] bash benchmarks/gpu_checks.sh \
#            [OUT_DIR] [RUN_DIR] [TRAIN_SECONDS]
set -u
out=$(realpath -m "${1:-runs/gpu}")
run=$(realpath -m "${2:-runs/gpu/cpu-long}")
seconds=${3:-180}
py=${PYTHON:-python3}
steps=${STEPS:-tests suite table2 memory normflows train throughput fid10k}
known=" tests suite table2 memory normflows train throughput fid10k "
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
# The throughput step's commands, in one shell so that one limit covers them; its status is
# 1 if any failed.
throughput='
py=$1 failed=0
"$py" benchmarks/flops_glow_layer.py --tables phases --presets paper-cifar10 --device cuda \
    --measure --variants eager compiled compiled-bf16 --repeats 3 --min-time 2 \
    --peak-tflops h200-tf32 h200-bf16 h200-fp32 gtx-1080-ti-fp32 || failed=1
"$py" benchmarks/bench_pyro_overhead.py --device cuda --repeats 5 || failed=1
"$py" benchmarks/bench_normflows.py --device cuda --compile --repeats 5 || failed=1
exit $failed'
step throughput 420 bash -c "$throughput" throughput "$py"
# The fid10k step: train with the networks compiled, then write the samples.
fid10k='
py=$1 run=$2 seconds=$3 out=$4
flags=(--preset cpu-long --device cuda --time-budget "$seconds" --run-dir "$run" --quiet --compile)
[[ -e $run/config.json ]] && flags+=(--resume)
"$py" -m pyro_vaeflow train "${flags[@]}" || exit 1
"$py" benchmarks/fid_from_samples.py --write-from "$run" --n 10000 --temperature 0.5 \
    --device cuda "$out/samples_T0.5.pt"'
step fid10k $((seconds + 240)) bash -c "$fid10k" fid10k "$py" "$run-fid10k" "$seconds" "$out"
exit $status
