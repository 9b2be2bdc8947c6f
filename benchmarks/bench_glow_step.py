r"""Training throughput of the Glow flow of the paper's decoder at Fashion-MNIST size.

The flow is :func:`~pyro_vaeflow.transforms.glow` on 1×28×28 images squeezed once to 4×14×14
(``glow(1, depth, hidden, squeeze=1)``, additive coupling unless ``--coupling affine``). One
training step maps a batch data → base, computes the negative log-likelihood under a standard
normal base, and back-propagates it to every parameter:

.. math:: -\log p(x) = -\log \mathcal N(u; 0, I) + \log\left|\det \frac{\partial x}{\partial u}
          \right|, \qquad u = f^{-1}(x).

The optimiser step is not included. The images are uniform noise with Fashion-MNIST's shape
(the cost does not depend on the values); the first warm-up step runs the data-dependent
actnorm initialisation. Throughput is the batch size over the median time of a step; the
floating-point operations of a step are counted by ``torch.utils.flop_counter`` (convolutions
and matrix products only).

Run ``python benchmarks/bench_glow_step.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from pyro_vaeflow.transforms import glow

from timing import add_common_options, measure, reported_machine


def training_step(flow: torch.nn.Module, images: torch.Tensor) -> Callable[[], None]:
    """One forward (data → base, with the log-determinant) and backward pass of the NLL."""
    parameters = list(flow.parameters())
    dims = images[0].numel()

    def run() -> None:
        u, log_det = flow.inverse_and_log_det(images)
        log_base = -0.5 * u.square().flatten(1).sum(1) - 0.5 * dims * math.log(2 * math.pi)
        (log_det - log_base).mean().backward()
        for parameter in parameters:
            parameter.grad = None

    return run


def parse_config(text: str) -> tuple[int, int]:
    """``"DEPTHxHIDDEN"`` → ``(depth, hidden)``."""
    depth, hidden = text.lower().split("x")
    return int(depth), int(hidden)


def main(args: argparse.Namespace) -> None:
    """Print the machine, then the throughput of each configuration, as Markdown."""
    if args.quick:
        args.configs, args.batch = ["1x8", "2x16"], 2
        args.repeats, args.min_time, args.warmup = 1, 0.0, 0
    torch.manual_seed(args.seed)
    with reported_machine():
        print(f"Batch {args.batch}, median of {args.repeats} interleaved repeats.\n", flush=True)
        steps, sizes = {}, {}
        for config in args.configs:
            depth, hidden = parse_config(config)
            flow = glow(1, depth=depth, hidden_channels=hidden, coupling=args.coupling, squeeze=1)
            sizes[config] = sum(p.numel() for p in flow.parameters())
            steps[config] = training_step(flow, torch.rand(args.batch, 1, 28, 28))
        times = measure(steps, args.repeats, args.min_time, args.warmup)
        flops = {}
        for config, step in steps.items():
            with FlopCounterMode(display=False) as counter:
                step()
            flops[config] = counter.get_total_flops()
        print("### Glow training step (forward + backward), 1×28×28 squeezed to 4×14×14\n")
        print("| depth | hidden | coupling | batch | parameters ", end="")
        print("| GFLOP/step | s/step | GFLOP/s | images/s |")
        print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        for config in args.configs:
            depth, hidden = parse_config(config)
            seconds = statistics.median(times[config])
            gflop = flops[config] / 1e9
            print(
                f"| {depth} | {hidden} | {args.coupling} | {args.batch} | {sizes[config]:,} "
                f"| {gflop:.1f} | {seconds:.3f} | {gflop / seconds:.0f} "
                f"| {args.batch / seconds:,.0f} |"
            )


def parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`main`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--configs", nargs="+", default=["8x128", "32x512"], help="DEPTHxHIDDEN, one or more"
    )
    p.add_argument("--coupling", choices=["additive", "affine"], default="additive")
    p.add_argument("--batch", type=int, default=64)
    add_common_options(
        p,
        quick="tiny flows, batch and repeats (smoke test)",
        repeats=9,
        warmup=2,
        min_time=1.0,
        seed=0,
    )
    return p


if __name__ == "__main__":
    main(parser().parse_args())
