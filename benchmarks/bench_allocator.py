r"""glibc's malloc as it comes against raised thresholds, on the CPU training steps.

PyTorch's CPU tensors come from glibc's ``malloc``. A block above the mmap threshold (which
glibc raises as large blocks are freed, to at most 32 MiB) is mapped fresh from the kernel and
unmapped when freed, and free memory at the top of the heap beyond the trim threshold is handed
back; memory that comes back from the kernel is zeroed and page-faults on its first touch. A
Glow conditioner's activations are such blocks (64×512×14×14 floats: 25.7 MB), so a step can
spend much of its time on fresh pages. glibc reads three environment variables at start that
keep the memory in the process for reuse instead::

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=268435456

Each workload runs in fresh processes (the variables act only from a process's start), with and
without them, alternately, ``--repeats`` times; each process times ``--steps`` training steps
after one untimed step and reports their median and its peak resident memory
(``ru_maxrss``, the GiB columns). The speed-up is the median over the repeats of the ratio of
the two times of a repeat. The workloads are the training steps of ``bench_peak.py``: the Glow
layer alone (``glow(1, depth, hidden, squeeze=1)``, batch 64) at 8×128 and 32×512, and a
VAEFlow SVI step (phase ``joint``) at the ``cpu-long`` preset's sizes, batch 128.

Run ``python benchmarks/bench_allocator.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch

from pyro_vaeflow.transforms import glow

from bench_glow_step import training_step
from bench_peak import svi_step
from timing import add_common_options, child_result, reported_machine

TUNED = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
    "MALLOC_TOP_PAD_": "268435456",
}
WORKLOADS = {
    "glow-8x128": "Glow layer step, depth 8, hidden 128, batch 64",
    "glow-32x512": "Glow layer step, depth 32, hidden 512, batch 64",
    "vaeflow-cpu-long": "VAEFlow SVI step, cpu-long preset, joint, batch 128",
}


def workload(name: str, quick: bool):
    """The training step ``name`` (see the module's docstring), as a call."""
    if name == "vaeflow-cpu-long":
        return svi_step("cpu-long", 2 if quick else 128, 0)
    depth, hidden = (1, 8) if quick else {"glow-8x128": (8, 128), "glow-32x512": (32, 512)}[name]
    flow = glow(1, depth=depth, hidden_channels=hidden, squeeze=1)
    return training_step(flow, torch.rand(2 if quick else 64, 1, 28, 28))


def child(name: str, steps: int, quick: bool) -> dict:
    """Time ``steps`` steps of workload ``name`` after one untimed step, in this process."""
    torch.manual_seed(0)
    step = workload(name, quick)
    step()
    seconds = []
    for _ in range(steps):
        began = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - began)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": statistics.median(seconds), "peak_gib": peak_kib / 2**20}


def run_child(name: str, tuned: bool, args: argparse.Namespace) -> dict:
    """:func:`child` in a fresh Python process, with or without the tuned variables."""
    env = {k: v for k, v in os.environ.items() if k not in TUNED}
    if tuned:
        env.update(TUNED)
    arguments = [name, "--steps", str(args.steps)] + (["--quick"] if args.quick else [])
    try:
        return child_result(Path(__file__).resolve(), arguments, env)
    except RuntimeError as error:
        raise RuntimeError(f"{name} ({'tuned' if tuned else 'default'}) failed: {error}") from error


def main(args: argparse.Namespace) -> None:
    """Print the machine, then the table of both settings per workload, as Markdown."""
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.steps, args.quick)))
        return
    if args.quick:
        args.repeats, args.steps = 1, 1
    with reported_machine():
        print(
            f"Tuned: {' '.join(f'{k}={v}' for k, v in TUNED.items())}; median of {args.steps} "
            f"steps per process, {args.repeats} alternating repeats.\n",
            flush=True,
        )
        print("| workload | default s/step | tuned s/step | speed-up | default GiB | tuned GiB |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in args.workloads:
            runs: dict[bool, list[dict]] = {False: [], True: []}
            for repeat in range(args.repeats):
                for tuned in (repeat % 2 == 1, repeat % 2 == 0):  # alternate which runs first
                    runs[tuned].append(run_child(name, tuned, args))
            times = {tuned: [r["seconds"] for r in rows] for tuned, rows in runs.items()}
            ratio = statistics.median(a / b for a, b in zip(times[False], times[True], strict=True))
            peaks = {tuned: max(r["peak_gib"] for r in rows) for tuned, rows in runs.items()}
            print(
                f"| {WORKLOADS[name]} | {statistics.median(times[False]):.3f} | "
                f"{statistics.median(times[True]):.3f} | {ratio:.2f}x | {peaks[False]:.2f} | "
                f"{peaks[True]:.2f} |",
                flush=True,
            )


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    p.add_argument("--steps", type=int, default=3, help="timed steps per process")
    p.add_argument("--child", choices=list(WORKLOADS), help=argparse.SUPPRESS)
    add_common_options(
        p,
        quick="tiny steps, one repeat (smoke test)",
        repeats=3,
        helps={"repeats": "alternating pairs of processes"},
    )
    return p


if __name__ == "__main__":
    main(parser().parse_args())
