r"""Where a Glow training step's time goes, operator by operator, without a profiler's overhead.

The step is the one of ``bench_normflows.py``: our multi-scale ``Glow`` at :math:`L = 2`,
:math:`K = 8`, hidden 128, affine, on a batch of 64 Fashion-MNIST images, the mean negative
log-likelihood, backward and one ``torch.optim.Adam`` step. After ``--warmup`` untimed steps,
``--steps`` steps run under a ``TorchDispatchMode`` that times every ATen operator call (forward
and backward; on the CPU each call is synchronous, so its wall time is its cost) and counts its
floating-point operations with ``torch.utils.flop_counter``'s formulas. The table groups the
calls by operator and input shapes, largest total first, with each group's share of the timed
calls and its GFLOP/s. A plain step is timed before and after, so the overhead of the timing itself
shows: the steps under the timing mode are slower by its Python hook per call.

``torch.profiler`` is not used because on this machine it inflated some element-wise operators
several-fold (ReLU's backward showed 7 ms a call in a profile, 0.3 to 0.6 ms here).

Run ``python benchmarks/bench_ops.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from pyro_vaeflow.models import Glow

from timing import add_common_options, fashion_mnist, reported_machine


class OperatorTimes(TorchDispatchMode):
    """Wall time and calls of every ATen operator run inside the mode, keyed by name and shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[tuple, list[float]] = collections.defaultdict(list)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        elapsed = time.perf_counter() - start
        tensors = [a for arg in args for a in (arg if isinstance(arg, list | tuple) else [arg])]
        shapes = tuple(tuple(a.shape) for a in tensors if isinstance(a, torch.Tensor))
        self.seconds[(str(func.overloadpacket), shapes)].append(elapsed)
        return out


def flops_by_operator(step) -> dict[str, int]:
    """FLOPs per operator name (``torch.utils.flop_counter`` counts products and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}


def main(args: argparse.Namespace) -> None:
    """Print the machine, the step's time with and without the timing, and the operator table."""
    if args.quick:
        args.batch, args.depth, args.hidden, args.steps, args.warmup = 2, 1, 8, 1, 1
    with reported_machine():
        torch.manual_seed(args.seed)
        glow = Glow(
            (1, 28, 28), levels=2, depth=args.depth, hidden_channels=args.hidden, coupling="affine"
        )
        x = fashion_mnist(args.batch, "train", args.seed)
        optimizer = torch.optim.Adam(glow.parameters(), lr=1e-3)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            (-glow.log_prob(x).mean()).backward()
            optimizer.step()

        for _ in range(args.warmup):
            step()

        def plain() -> float:
            began = time.perf_counter()
            for _ in range(args.steps):
                step()
            return (time.perf_counter() - began) / args.steps

        before = plain()
        timed = OperatorTimes()
        began = time.perf_counter()
        with timed:
            for _ in range(args.steps):
                step()
        under_mode = (time.perf_counter() - began) / args.steps
        after = plain()
        flops = flops_by_operator(step)
        print(
            f"Glow at L=2, K={args.depth}, hidden {args.hidden}, affine, batch {args.batch}, "
            f"torch.optim.Adam; {args.steps} timed steps after {args.warmup} untimed."
        )
        print(
            f"Step: {before:.3f} s before and {after:.3f} s after, {under_mode:.3f} s under the "
            "timing mode.\n"
        )
        groups = {key: sum(times) / args.steps for key, times in timed.seconds.items()}
        total = sum(groups.values())
        by_name = collections.Counter()
        for (name, _), seconds in groups.items():
            by_name[name] += seconds
        print(f"### Operators of one step ({total * 1e3:.1f} ms of timed calls)\n")
        print("| operator | ms/step | share | GFLOP/s |")
        print("|---|---:|---:|---:|")
        for name, seconds in by_name.most_common(args.rows):
            rate = flops[name] / seconds / 1e9 if name in flops else None
            shown = f"{rate:.0f}" if rate else "—"
            print(f"| `{name}` | {seconds * 1e3:.1f} | {seconds / total:.0%} | {shown} |")
        print(f"\n### The {args.rows} largest groups by input shapes\n")
        print("| operator | input shapes | calls/step | ms/call (median) | ms/step |")
        print("|---|---|---:|---:|---:|")
        ranked = sorted(groups.items(), key=lambda item: -item[1])[: args.rows]
        for (name, shapes), seconds in ranked:
            calls = timed.seconds[(name, shapes)]
            shown = ", ".join("×".join(map(str, s)) or "scalar" for s in shapes)
            print(
                f"| `{name}` | {shown} | {len(calls) // args.steps} | "
                f"{statistics.median(calls) * 1e3:.2f} | {seconds * 1e3:.1f} |"
            )


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=8, help="steps K per level")
    p.add_argument("--hidden", type=int, default=128, help="conditioner width")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--rows", type=int, default=12, help="rows per table")
    add_common_options(p, quick="a tiny Glow, one step (smoke test)", warmup=3, seed=0)
    return p


if __name__ == "__main__":
    main(parser().parse_args())
