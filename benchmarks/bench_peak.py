r"""Distance to the physical limit: the machine's fp32 peak against the training steps' rate.

The peak is what the CPU reaches on its best kernels, in float32: square matrix products
``torch.mm`` of a few sizes, and ``conv2d`` at the sizes of the Glow conditioners (batch 64,
14×14 images: a 3x3 convolution 128→128 and 1x1 convolutions 128→128 and 512→512), forward
alone and forward plus backward (a fixed random output gradient, gradients for the input and
the weights). The matmul peak and the conv peak are the best of their rows.

The training steps are:

- a VAEFlow SVI step, ``SVI(vae.model, vae.guide, MultiTensorAdam, Trace_ELBO()).step(x)`` in
  phase ``"joint"`` (every part trained, the Glow layer on), at the sizes of the ``cpu`` and
  the ``cpu-long`` presets, on a batch of the preset's size of dequantised Fashion-MNIST
  training images;
- a step of the Glow layer alone, as in ``bench_glow_step.py`` (``glow(1, depth, hidden,
  squeeze=1)``, additive coupling, forward and backward of the NLL, batch 64).

The floating-point operations of every call are counted by ``torch.utils.flop_counter``
(matrix products and convolutions, forward and backward; element-wise work and the optimiser
are not counted). The rate is those FLOPs over the median time of a call; all the calls are
timed in one interleaved loop.

Run ``python benchmarks/bench_peak.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.presets import PRESETS
from pyro_vaeflow.training import MultiTensorAdam
from pyro_vaeflow.training import phase as training_phase
from pyro_vaeflow.transforms import glow

from bench_glow_step import parse_config, training_step
from timing import add_common_options, count_flops, fashion_mnist, measure, reported_machine

TARGET = 0.60  # the target: training at 60% of the matmul peak or more
CONVS = [(3, 128), (1, 128), (1, 512)]  # (kernel size, channels) of the Glow conditioners


def matmul(size: int) -> Callable[[], None]:
    """A square fp32 matrix product ``size``³, into a preallocated output."""
    a, b, out = torch.randn(size, size), torch.randn(size, size), torch.empty(size, size)
    return lambda: torch.mm(a, b, out=out)


def conv(kernel: int, channels: int, batch: int, backward: bool) -> Callable[[], None]:
    """A ``channels``→``channels`` conv2d on ``batch``×14×14 images, optionally with backward."""
    layer = torch.nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
    x = torch.randn(batch, channels, 14, 14, requires_grad=backward)
    grad = torch.randn(batch, channels, 14, 14)

    def run() -> None:
        if not backward:
            with torch.no_grad():
                layer(x)
            return
        layer(x).backward(grad)
        x.grad = layer.weight.grad = layer.bias.grad = None

    return run


def svi_step(preset: str, batch: int, seed: int) -> Callable[[], None]:
    """A VAEFlow SVI step (phase joint) at the preset's sizes, in its own param-store state."""
    model = PRESETS[preset].model
    vae = VAEFlow((1, 28, 28), **model)
    x = fashion_mnist(batch, "train", seed)
    svi = SVI(vae.model, vae.guide, MultiTensorAdam(lr=PRESETS[preset].lr), Trace_ELBO())
    state: dict = {"params": {}, "constraints": {}}

    def run() -> None:
        with pyro.get_param_store().scope(state), training_phase(vae, "joint"):
            svi.step(x)

    return run


def main(args: argparse.Namespace) -> None:
    """Print the machine, then the peak kernels' and the training steps' rates, as Markdown."""
    vae_batch, conv_batch, glow_batch = PRESETS["cpu"].batch_size, 64, 64
    if args.quick:
        args.sizes, args.glow_configs = [64, 128], ["1x8"]
        vae_batch, conv_batch, glow_batch = 2, 2, 2
        args.repeats, args.min_time, args.warmup = 1, 0.0, 0
    torch.manual_seed(args.seed)
    with reported_machine():
        print(f"Median of {args.repeats} interleaved repeats.\n", flush=True)
        peaks: dict[str, Callable[[], None]] = {
            f"matmul {n}×{n}×{n}": matmul(n) for n in args.sizes
        }
        for kernel, channels in CONVS:
            for backward in (False, True):
                name = (
                    f"conv2d {kernel}x{kernel} {channels}→{channels}, {conv_batch}×14×14, "
                    f"{'fwd+bwd' if backward else 'fwd'}"
                )
                peaks[name] = conv(kernel, channels, conv_batch, backward)
        steps: dict[str, Callable[[], None]] = {}
        for preset in ("cpu", "cpu-long"):
            name = f"VAEFlow SVI step, {preset} preset, joint, batch {vae_batch}"
            steps[name] = svi_step(preset, vae_batch, args.seed)
        for config in args.glow_configs:
            depth, hidden = parse_config(config)
            flow = glow(1, depth=depth, hidden_channels=hidden, squeeze=1)
            name = f"Glow step, depth {depth}, hidden {hidden}, batch {glow_batch}"
            steps[name] = training_step(flow, torch.rand(glow_batch, 1, 28, 28))
        times = measure({**peaks, **steps}, args.repeats, args.min_time, args.warmup)
        # A product's 2·n³ FLOPs are not counted: before torch 2.4, FlopCounterMode fails on out=.
        gflop = {f"matmul {n}×{n}×{n}": 2 * n**3 / 1e9 for n in args.sizes}
        for name, fn in {**peaks, **steps}.items():
            if name not in gflop:
                gflop[name] = count_flops(fn) / 1e9
        rate = {name: gflop[name] / statistics.median(times[name]) for name in times}
        matmul_peak = max(rate[name] for name in peaks if name.startswith("matmul"))
        conv_peak = max(rate[name] for name in peaks if name.startswith("conv2d"))
        print("### Distance to the physical limit (fp32, FLOPs of matmuls and convolutions)\n")
        print(
            "| workload | GFLOP/step | s/step | GFLOP/s | % of matmul peak | % of conv peak ",
            end="",
        )
        print("| target |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for name in times:
            share = rate[name] / matmul_peak
            verdict = "met" if share >= TARGET else "MISSED"
            target = "—" if name in peaks else f"≥ {100 * TARGET:.0f}% {verdict}"
            print(
                f"| {name} | {gflop[name]:.2f} | {statistics.median(times[name]):.4f} "
                f"| {rate[name]:.0f} | {100 * share:.0f}% | {100 * rate[name] / conv_peak:.0f}% "
                f"| {target} |"
            )


def parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`main`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[1024, 2048, 3072], help="matmul sizes")
    p.add_argument("--glow-configs", nargs="+", default=["8x128", "32x512"], help="DEPTHxHIDDEN")
    add_common_options(
        p,
        quick="tiny sizes, one repeat (smoke test)",
        repeats=9,
        warmup=2,
        min_time=1.0,
        seed=0,
    )
    return p


if __name__ == "__main__":
    main(parser().parse_args())
