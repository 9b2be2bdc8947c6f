r"""Pyro's JIT against eager: a VAEFlow SVI step with ``JitTrace_ELBO`` and ``Trace_ELBO``.

The model is ``VAEFlow((1, 28, 28), **PRESETS["cpu"].model)`` in phase ``"joint"`` (the Glow
layer on) or ``"vae"`` (off), on batches of real Fashion-MNIST training images, dequantised;
each step is ``SVI(vae.model, vae.guide, MultiTensorAdam, elbo).step(x)`` with the same ``x``
every step, as Pyro's JIT ELBOs need (a new shape is traced anew). The two ELBOs train two
copies of one model, each in its own param-store scope, timed interleaved; the JIT side's first
step, which runs the model eagerly once and then traces it, is timed on its own (``trace``).

First, the two losses are computed at the same weights from the same seed (after the JIT
side's first call, which draws its own noise) and must agree to 1e-4 relative. The table gives
the median step times and the JIT side's speed-up; ``--batches`` shows how it moves with the
batch size (the smaller the batch, the more of a step is Python and dispatch, what JIT saves).

Run ``python benchmarks/bench_jit.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from contextlib import ExitStack
from functools import partial

import pyro
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from torch import Tensor

from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.presets import PRESETS
from pyro_vaeflow.training import MultiTensorAdam
from pyro_vaeflow.training import phase as training_phase

from timing import add_common_options, fashion_mnist, measure, median_ratio, reported_machine

QUICK = {"latent_dim": 4, "base_channels": 4, "fc_dim": 16, "prior_layers": 2}


def step_in_scope(svi: SVI, scope: dict, x: Tensor) -> float:
    """One SVI step in the param store ``scope``."""
    with pyro.get_param_store().scope(scope):
        return svi.step(x)


def loss_and_grads(svi: SVI, scope: dict, x: Tensor, seed: int) -> float:
    """The ELBO's ``loss_and_grads`` at the current weights (the JIT ELBO's compiled one), its
    gradients then dropped, so the weights stay the same."""
    with pyro.get_param_store().scope(scope):
        pyro.set_rng_seed(seed)
        loss = svi.loss_and_grads(svi.model, svi.guide, x)
        for parameter in pyro.get_param_store().values():
            parameter.grad = None
    return loss


def compare(mode: str, batch: int, args: argparse.Namespace) -> dict:
    """Time one (phase, batch) case: trace seconds, step times, the loss check."""
    sizes = {**PRESETS["cpu"].model, **(QUICK if args.quick else {})}
    torch.manual_seed(args.seed)
    vae = VAEFlow((1, 28, 28), **sizes)
    x = fashion_mnist(batch, "train", args.seed)
    lr = PRESETS["cpu"].lr
    elbos = {"jit": JitTrace_ELBO(ignore_jit_warnings=True), "eager": Trace_ELBO()}
    with ExitStack() as stack:
        svis, scopes = {}, {}
        for name, elbo in elbos.items():
            twin = copy.deepcopy(vae)
            stack.enter_context(training_phase(twin, mode))
            svis[name] = SVI(twin.model, twin.guide, MultiTensorAdam(lr=lr), elbo)
            scopes[name] = stack.enter_context(pyro.get_param_store().scope())
        began = time.perf_counter()
        loss_and_grads(svis["jit"], scopes["jit"], x, args.seed)  # runs once, then traces
        trace_seconds = time.perf_counter() - began
        loss_and_grads(svis["eager"], scopes["eager"], x, args.seed)  # the same ActNorm init
        jit, eager = (loss_and_grads(svis[name], scopes[name], x, args.seed) for name in elbos)
        difference = abs(jit - eager) / abs(eager)
        if difference > 1e-4:
            raise AssertionError(f"the JIT loss {jit} differs from the eager loss {eager}")
        steps = {name: partial(step_in_scope, svis[name], scopes[name], x) for name in svis}
        times = measure(steps, args.repeats, args.min_time, args.warmup)
    return {"trace": trace_seconds, "times": times, "difference": difference}


def main(args: argparse.Namespace) -> None:
    """Print the machine, then the JIT and eager step times, as Markdown."""
    if args.quick:
        args.batches, args.modes, args.repeats, args.min_time, args.warmup = (
            [8],
            ["joint"],
            1,
            0.0,
            0,
        )
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.* is deprecated")
    with reported_machine():
        print(
            "VAEFlow((1, 28, 28), **PRESETS['cpu'].model), SVI with MultiTensorAdam; "
            f"median of {args.repeats} interleaved repeats.\n",
            flush=True,
        )
        print(
            "| phase | batch | eager (ms/step) | JIT (ms/step) | JIT speed-up | first JIT call "
            "(trace, s) | loss difference |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for mode in args.modes:
            for batch in args.batches:
                result = compare(mode, batch, args)
                times = result["times"]
                speedup = median_ratio(times["eager"], times["jit"])
                print(
                    f"| {mode} | {batch} | {1e3 * statistics.median(times['eager']):.1f} | "
                    f"{1e3 * statistics.median(times['jit']):.1f} | {speedup:.2f}x | "
                    f"{result['trace']:.1f} | {result['difference']:.1e} |",
                    flush=True,
                )


def parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`main`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", nargs="+", choices=["joint", "vae"], default=["joint", "vae"])
    p.add_argument("--batches", nargs="+", type=int, default=[8, 32, 128])
    add_common_options(
        p,
        quick="tiny model, batch 8, one repeat (smoke test)",
        repeats=7,
        warmup=2,
        min_time=1.0,
        seed=0,
    )
    return p


if __name__ == "__main__":
    main(parser().parse_args())
