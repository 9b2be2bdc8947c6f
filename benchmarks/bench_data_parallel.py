r"""Data parallelism on this CPU: 1 process × 2 threads against 2 processes × 1 thread.

A VAEFlow SVI step at the ``cpu`` preset's sizes (global batch 128, phases ``vae`` and
``glow``), as ``fit`` takes it (:class:`~pyro_vaeflow.training.DataParallelSVI`, each rank on
its share of the global batch, gloo on loopback), timed in three layouts: one process with 2
threads, two processes with 1 thread each, and one process with 1 thread (the base of the
scaling efficiency, :math:`E = \text{throughput}_{2\times1} / (2\,\text{throughput}_{1\times1})`).
Each layout runs in fresh processes, the layouts alternating, ``--repeats`` times; each times
``--steps`` steps after ``--warmup`` untimed ones and reports the median step. The all-reduce
column times ``torch.distributed.all_reduce`` of one float32 tensor as large as the phase's
trainable parameters (what DDP reduces each step, in buckets it overlaps with the backward
pass), as a share of the two-process step.

Run ``python benchmarks/bench_data_parallel.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import pyro
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pyro.infer import Trace_ELBO

from pyro_vaeflow.data import dequantize, load_images
from pyro_vaeflow.distributed import rank_seed, shard
from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.presets import PRESETS
from pyro_vaeflow.training import DataParallelSVI, MultiTensorAdam, phase

from timing import add_common_options, child_result, reported_machine

LAYOUTS = {"1x2": (1, 2), "2x1": (2, 1), "1x1": (1, 1)}
"""Layout name → (processes, threads each)."""
QUICK = {"latent_dim": 4, "base_channels": 4, "fc_dim": 16, "prior_layers": 2}


def _measure(rank: int, world: int, port: int, spec: dict, out: str) -> None:
    """One process of a layout: time the steps; rank 0 writes the result to ``out``."""
    torch.set_num_threads(spec["threads"])
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    sizes = {**PRESETS["cpu"].model, **(QUICK if spec["quick"] else {})}
    model = VAEFlow((1, 28, 28), **sizes)
    pixels = load_images("fashion-mnist", "train")[: 4 * spec["batch"]]
    order = torch.Generator().manual_seed(0)
    torch.manual_seed(rank_seed(0))
    times = []
    with pyro.get_param_store().scope(), phase(model, spec["phase"]):
        svi = DataParallelSVI(
            model.model, model.guide, MultiTensorAdam(lr=1e-4), Trace_ELBO(), model
        )
        for step in range(spec["warmup"] + spec["steps"]):
            index = torch.randint(len(pixels), (spec["batch"],), generator=order)
            x = dequantize(shard(pixels[index]))
            began = time.perf_counter()
            svi.step(x)
            if step >= spec["warmup"]:
                times.append(time.perf_counter() - began)
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    reduce_seconds = None
    if world > 1:
        flat = torch.zeros(trained)
        dist.all_reduce(flat)  # untimed: connects the ranks' buffers
        began = time.perf_counter()
        for _ in range(10):
            dist.all_reduce(flat)
        reduce_seconds = (time.perf_counter() - began) / 10
        gc.collect()  # what still holds gloo's work goes before the group (else: SIGABRT at exit)
        dist.destroy_process_group()
    if rank == 0:
        result = {"step": statistics.median(times), "reduce": reduce_seconds, "params": trained}
        Path(out).write_text(json.dumps(result))


def child(spec: dict) -> dict:
    """Run one layout (in this fresh process and, for two processes, one more)."""
    processes, threads = LAYOUTS[spec["layout"]]
    spec = {**spec, "threads": threads}
    out = Path(tempfile.mkdtemp()) / "result.json"
    if processes == 1:
        _measure(0, 1, 0, spec, str(out))
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        mp.spawn(_measure, args=(processes, port, spec, str(out)), nprocs=processes)
    return json.loads(out.read_text())


def main(args: argparse.Namespace) -> None:
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    with reported_machine():
        table(args)


def table(args: argparse.Namespace) -> None:
    batch = 8 if args.quick else args.batch
    steps, warmup = (1, 1) if args.quick else (args.steps, args.warmup)
    phases = ["vae"] if args.quick else ["vae", "glow"]
    results: dict = {(p, layout): [] for p in phases for layout in LAYOUTS}
    for _ in range(1 if args.quick else args.repeats):
        for name in phases:
            for layout in LAYOUTS:
                spec = {"layout": layout, "phase": name, "batch": batch, "steps": steps}
                spec.update(warmup=warmup, quick=args.quick)
                results[(name, layout)].append(child_result(__file__, [json.dumps(spec)]))
    print(f"\nVAEFlow SVI step, cpu preset sizes, global batch {batch}, median of each layout's")
    print(f"runs (images/s); {args.repeats if not args.quick else 1} repeats of {steps} steps\n")
    print(
        "| phase | 1 process × 2 threads | 2 processes × 1 thread | 1 process × 1 thread | "
        "2×1 / 1×2 | scaling efficiency | all-reduce of the gradients (share of a step) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in phases:
        step = {
            layout: statistics.median(r["step"] for r in results[(name, layout)])
            for layout in LAYOUTS
        }
        rate = {layout: batch / seconds for layout, seconds in step.items()}
        reduce = statistics.median(r["reduce"] for r in results[(name, "2x1")])
        params = results[(name, "2x1")][0]["params"]
        print(
            f"| {name} | {rate['1x2']:.0f} | {rate['2x1']:.0f} | {rate['1x1']:.0f} | "
            f"{rate['2x1'] / rate['1x2']:.2f}x | {rate['2x1'] / (2 * rate['1x1']):.0%} | "
            f"{1e3 * reduce:.1f} ms for {params:,} parameters ({reduce / step['2x1']:.1%}) |"
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128, help="the global batch")
    p.add_argument("--steps", type=int, default=10, help="timed steps per run")
    p.add_argument("--child", help=argparse.SUPPRESS)
    add_common_options(
        p, quick="a tiny model, one step (smoke test)", repeats=3, warmup=2, helps={}
    )
    return p


if __name__ == "__main__":
    main(parser().parse_args())
