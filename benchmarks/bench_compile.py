r"""Compiled and bf16 networks against eager float32: images/s of each training phase.

For each preset (``cpu`` and ``cpu-long`` by default) and each phase of the paper's model
(``vae``: encoder, decoder and prior with the Glow layer off; ``glow``: the Glow layer alone),
four copies of one ``VAEFlow`` take the training loop's step (``GuardedSVI`` with
``Trace_ELBO`` and ``MultiTensorAdam``, each copy in its own param store, inside
``training.phase``) on one batch of real Fashion-MNIST training images:

- eager float32, the reference;
- compiled: ``accelerate(model, compile=True)`` (the networks through ``torch.compile``,
  Inductor; Pyro and the flows' bookkeeping eager);
- bf16: ``accelerate(model, precision="bf16")`` (the conditioners, encoder and decoder under
  a bfloat16 autocast), eager and compiled: by default only where the CPU has bf16
  instructions (AVX512-BF16 or AMX); elsewhere bf16 is emulated (ask for it with
  ``--variants``). The GPU's figures are ``flops_glow_layer.py --measure --device cuda``'s.

The steps are timed interleaved (``timing.measure``); a speed-up is the median over repeats of
the eager step's time over the other's, timed side by side. The share of the matmul peak is the
step's matmul and convolution FLOPs (``FlopCounterMode``, the eager step) over its time, against
the fastest square float32 product measured in the same run. The first step of a compiled copy
(its compilation) is reported apart.

``--cache`` also measures what a resumed run pays: the first compiled step of a fresh process
with an empty Inductor cache (cold), and of another fresh process, also with an empty cache,
after ``load_compile_cache`` of the kernels the first one saved (what ``train`` does with
``<run_dir>/compile-cache.bin``).

Run ``python benchmarks/bench_compile.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO

from pyro_vaeflow.acceleration import (
    accelerate,
    compile_unavailable,
    load_compile_cache,
    save_compile_cache,
)
from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.presets import PRESETS
from pyro_vaeflow.training import GuardedSVI, MultiTensorAdam
from pyro_vaeflow.training import phase as training_phase

from bench_peak import matmul
from timing import (
    add_common_options,
    child_result,
    count_flops,
    fashion_mnist,
    measure,
    median_ratio,
    reported_machine,
)

TARGET = 1.5  # the target: compiled training steps at 1.5x the eager images/s
VARIANTS = {
    "eager fp32": {},
    "compiled fp32": {"compile": True},
    "eager bf16": {"precision": "bf16"},
    "compiled bf16": {"compile": True, "precision": "bf16"},
}


def bf16_instructions() -> list[str]:
    """The CPU's bf16 instructions (AVX512-BF16, AMX) that ``/proc/cpuinfo`` lists."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return [flag for flag in ("avx512_bf16", "amx_bf16") if f" {flag}" in flags]


def svi_step(vae: VAEFlow, phase: str, x: torch.Tensor, lr: float, stack: ExitStack):
    """The training loop's step on ``x`` for ``vae`` in ``phase``, in a param store of its own."""
    stack.enter_context(training_phase(vae, phase))
    svi = GuardedSVI(
        vae.model,
        vae.guide,
        MultiTensorAdam(lr=lr),
        Trace_ELBO(num_particles=1, max_plate_nesting=1),
    )
    scope: dict = {"params": {}, "constraints": {}}

    def run() -> None:
        with pyro.get_param_store().scope(scope):
            svi.step(x)

    return run


def first_step_seconds(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def phase_rows(preset: str, phase: str, batch: int, args: argparse.Namespace) -> list[str]:
    """The table rows of one preset's phase: each variant's images/s against eager fp32."""
    torch.manual_seed(args.seed)
    vae = VAEFlow((1, 28, 28), **PRESETS[preset].model)
    x = fashion_mnist(batch, "train", args.seed)
    vae.guide(x)  # the Glow layer's ActNorm initialises on data before the copies are made
    steps, compile_seconds = {}, {}
    with ExitStack() as stack:
        for name, options in VARIANTS.items():
            if name not in args.variants:
                continue
            model = accelerate(copy.deepcopy(vae), **options)
            steps[name] = svi_step(model, phase, x, PRESETS[preset].lr, stack)
            if options.get("compile"):
                compile_seconds[name] = first_step_seconds(steps[name])
        flops = count_flops(steps["eager fp32"])
        times = measure(steps, args.repeats, args.min_time, args.warmup)
    rows = []
    for name, seconds in times.items():
        median = statistics.median(seconds)
        speedup = median_ratio(times["eager fp32"], seconds)
        target = "—" if name == "eager fp32" else f"{'met' if speedup >= TARGET else 'MISSED'}"
        first = f"{compile_seconds[name]:.0f}" if name in compile_seconds else "—"
        rows.append(
            f"| {preset} | {phase} | {name} | {batch / median:.0f} | {speedup:.2f}x "
            f"| {100 * flops / median / args.peak:.0f}% | {first} | {target} |"
        )
    return rows


def child(args: argparse.Namespace) -> None:
    """One fresh process: the first compiled step (loading ``--load`` first), saving ``--save``."""
    if args.load:
        load_compile_cache(args.load)
    torch.manual_seed(args.seed)
    vae = accelerate(VAEFlow((1, 28, 28), **PRESETS[args.presets[0]].model), compile=True)
    x = fashion_mnist(args.batch or PRESETS[args.presets[0]].batch_size, "train", args.seed)
    with ExitStack() as stack:
        seconds = first_step_seconds(svi_step(vae, "vae", x, 1e-4, stack))
    if args.save:
        save_compile_cache(args.save)
    print("RESULT " + json.dumps({"seconds": seconds}))


def cache_rows(args: argparse.Namespace) -> list[str]:
    """The first compiled step of a fresh process, cold and with the saved kernels loaded."""
    script = Path(__file__).resolve()
    common = ["--presets", args.presets[0], "--seed", str(args.seed)]
    if args.batch:
        common += ["--batch", str(args.batch)]
    with tempfile.TemporaryDirectory() as folder:
        saved = str(Path(folder) / "compile-cache.bin")
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(folder) / "cold")}
        cold = child_result(script, [*common, "--save", saved], env)["seconds"]
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(folder) / "warm")}
        warm = child_result(script, [*common, "--load", saved], env)["seconds"]
    return [
        f"| {args.presets[0]} | vae | cold: empty Inductor cache | {cold:.1f} | 1.00x |",
        f"| {args.presets[0]} | vae | resumed: compile-cache.bin loaded | {warm:.1f} "
        f"| {cold / warm:.2f}x |",
    ]


def main(args: argparse.Namespace) -> None:
    """Print the machine, then the table of images/s per preset, phase and variant."""
    if args.quick:
        args.presets, args.phases, args.batch = ["cpu"], ["vae"], 2
        args.repeats, args.min_time, args.warmup = 1, 0.0, 0
        args.variants = ["eager fp32", "eager bf16"]
    hardware = bf16_instructions()
    if args.variants is None:
        args.variants = [name for name in VARIANTS if hardware or "bf16" not in name]
    if any("compiled" in name for name in args.variants) and (reason := compile_unavailable()):
        raise SystemExit(f"torch.compile is not available here: {reason}")
    with reported_machine():
        times = measure({"matmul": matmul(1024)}, args.repeats, args.min_time, args.warmup)
        args.peak = 2 * 1024**3 / statistics.median(times["matmul"])
        print(
            f"bf16 instructions: {', '.join(hardware) or 'none (bf16 emulated)'}; "
            f"matmul peak {args.peak / 1e9:.0f} GFLOP/s "
            f"(fp32, 1024³); median of {args.repeats} interleaved repeats.\n",
            flush=True,
        )
        print(
            "| preset | phase | networks | images/s | speed-up | % of matmul peak "
            "| first step (s) | ≥ 1.5x |"
        )
        print("|---|---|---|---:|---:|---:|---:|---|")
        for preset in args.presets:
            batch = args.batch or PRESETS[preset].batch_size
            for phase in args.phases:
                print("\n".join(phase_rows(preset, phase, batch, args)), flush=True)
        if args.cache:
            print("\n| preset | phase | first compiled step of a fresh process | s | faster |")
            print("|---|---|---|---:|---:|")
            print("\n".join(cache_rows(args)))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(
        parser, quick="a smoke test: one tiny eager step", repeats=7, warmup=2, min_time=1.0, seed=0
    )
    parser.add_argument("--presets", nargs="+", default=["cpu", "cpu-long"], choices=PRESETS)
    parser.add_argument("--phases", nargs="+", default=["vae", "glow"], choices=["vae", "glow"])
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        help="default: all where bf16 has hardware support, else the float32 ones",
    )
    parser.add_argument("--batch", type=int, help="images per step (default: the preset's)")
    parser.add_argument("--cache", action="store_true", help="also time a resumed compile")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    arguments = parser().parse_args()
    child(arguments) if arguments.child else main(arguments)
