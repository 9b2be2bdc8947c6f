r"""Benchmark :class:`~pyro_vaeflow.transforms.InvConv1x1` against Pyro's 1x1 convolution.

Pyro's :class:`~pyro.distributions.transforms.GeneralizedChannelPermute` (GCP) maps
:math:`x \mapsto W x` in its forward; our :class:`InvConv1x1` maps base → data,
:math:`x = W^{-1} u`, so its *inverse* multiplies by :math:`W`. Like is compared with like:

* ``u = W x, no grad``: our ``inverse_and_log_det`` against GCP's forward (data → base, the
  direction of ``log_prob``);
* ``x = W⁻¹ u, no grad``: our ``forward_and_log_det`` against GCP's inverse (sampling);
* ``u = W x, fwd+bwd of sum``: a training step in the data → base direction: the output and
  the log-determinant are summed and back-propagated to the input and to the parameters. The
  gradient that ``sum`` sends back is an expanded tensor whose strides are all 0;
* ``u = W x, fwd+bwd, dense grad``: the same, but back-propagating a fixed random gradient
  for the output (and ones for the log-determinant), as a loss such as the base log-density
  does in real training.

Each call returns the value and the log-determinant. Our methods are called directly; GCP
is called through its public ``__call__`` with a new view of the input each time, so that
neither library's cache of the last pair is hit and the computation itself is measured. Each
library does what it always does: ours rebuilds :math:`W` from its LU factors on every call and
keeps :math:`W^{-1}` until a parameter changes; GCP rebuilds :math:`W` in its forward and solves
two triangular systems with the data in its inverse.

A second table times the strategies that ``mix_channels`` (the arithmetic inside
``InvConv1x1``) can use, at the same sizes and at the size of the Glow step benchmark
(``fwd+bwd`` back-propagates a fixed random gradient).

Run ``python benchmarks/bench_conv1x1.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pyro.distributions.transforms import GeneralizedChannelPermute
from torch import Tensor

from pyro_vaeflow.transforms import InvConv1x1
from pyro_vaeflow.transforms.conv1x1 import mix_channels

from timing import add_common_options, measure, reported_machine

TARGETS = {4: 1.0, 16: 5.0, 48: 20.0}


def median_ratio(slow: list[float], fast: list[float]) -> float:
    """The median over repeats of ``slow / fast``, each pair measured side by side."""
    return statistics.median(s / f for s, f in zip(slow, fast, strict=True))


def microseconds(times: list[float]) -> str:
    """The median of ``times`` (seconds) in µs, formatted for the table."""
    return f"{1e6 * statistics.median(times):,.0f}"


# --- InvConv1x1 against GeneralizedChannelPermute ---------------------------------------------


def competitors(channels: int, batch: int, size: int) -> dict[str, dict[str, Callable]]:
    """The calls to time, by direction, for ``ours`` and for Pyro's ``gcp``."""
    ours = InvConv1x1(channels)
    gcp = GeneralizedChannelPermute(channels=channels)
    x = torch.randn(batch, channels, size, size)
    x_grad = x.clone().requires_grad_()
    parameters = [x_grad, *ours.parameters(), *gcp.parameters()]

    def gcp_value_and_log_det(transform, v: Tensor) -> tuple[Tensor, Tensor]:
        v = v.view_as(v)  # a new tensor object: Pyro's cache of the last pair is not hit
        y = transform(v)
        return y, transform.log_abs_det_jacobian(v, y)

    grad = torch.randn_like(x)

    def step(value_and_log_det: Callable[[Tensor], tuple[Tensor, Tensor]], dense: bool) -> Callable:
        def run() -> None:
            y, log_det = value_and_log_det(x_grad)
            if dense:
                torch.autograd.backward((y, log_det), (grad, torch.ones_like(log_det)))
            else:
                (y.sum() + log_det.sum()).backward()
            for parameter in parameters:
                parameter.grad = None

        return run

    def no_grad(fn: Callable[[Tensor], object]) -> Callable:
        def run() -> None:
            with torch.no_grad():
                fn(x)

        return run

    return {
        "u = W x, no grad": {
            "ours": no_grad(ours.inverse_and_log_det),
            "gcp": no_grad(lambda v: gcp_value_and_log_det(gcp, v)),
        },
        "x = W⁻¹ u, no grad": {
            "ours": no_grad(ours.forward_and_log_det),
            "gcp": no_grad(lambda v: gcp_value_and_log_det(gcp.inv, v)),
        },
        "u = W x, fwd+bwd of sum": {
            "ours": step(ours.inverse_and_log_det, dense=False),
            "gcp": step(lambda v: gcp_value_and_log_det(gcp, v), dense=False),
        },
        "u = W x, fwd+bwd, dense grad": {
            "ours": step(ours.inverse_and_log_det, dense=True),
            "gcp": step(lambda v: gcp_value_and_log_det(gcp, v), dense=True),
        },
    }


def check_agreement(channels: int) -> None:
    """Both libraries compute the same maps and log-determinants when given the same ``W``."""
    ours = InvConv1x1(channels).double()
    gcp = GeneralizedChannelPermute(channels=channels).double()
    with torch.no_grad():
        weight = ours.weight()
        lu, pivots = torch.linalg.lu_factor(weight)
        gcp.LU.copy_(lu)
        gcp.permutation.copy_(torch.lu_unpack(lu, pivots)[0])
        x = torch.randn(2, channels, 3, 5, dtype=torch.float64)
        u, log_det = ours.inverse_and_log_det(x)
        torch.testing.assert_close(u, gcp(x))
        torch.testing.assert_close(u, torch.einsum("ij,bjhw->bihw", weight, x))
        # ours: log|det dx/du| of base → data; GCP's forward is data → base
        torch.testing.assert_close(-log_det, gcp.log_abs_det_jacobian(x, u))
        torch.testing.assert_close(ours.forward_and_log_det(u)[0], gcp.inv(u.clone()))


def compare(args: argparse.Namespace) -> list[str]:
    """Time InvConv1x1 and GCP side by side, and print (and return) the table's rows."""
    calls = {}
    for channels in args.channels:
        check_agreement(channels)
        for direction, pair in competitors(channels, args.batch, args.size).items():
            for name, call in pair.items():
                calls[channels, direction, name] = call
    times = measure(calls, args.repeats, args.min_time, args.warmup)
    rows = [
        "| C | direction | InvConv1x1 (µs) | GeneralizedChannelPermute (µs) | speed-up | target |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for channels, direction, name in calls:
        if name != "ours":
            continue
        ours, gcp = times[channels, direction, "ours"], times[channels, direction, "gcp"]
        ratio = median_ratio(gcp, ours)
        target = TARGETS.get(channels)
        verdict = (
            "" if target is None else f"≥ {target:g}x {'met' if ratio >= target else 'MISSED'}"
        )
        rows.append(
            f"| {channels} | {direction} | {microseconds(ours)} | {microseconds(gcp)} "
            f"| {ratio:.1f}x | {verdict} |"
        )
    print("\n".join(rows), flush=True)
    return rows


# --- Strategies for mix_channels ----------------------------------------------------------------


def by_matmul(h: Tensor, weight: Tensor) -> Tensor:
    """``torch.matmul`` broadcasting ``weight`` over the images (the previous ``mix_channels``)."""
    shape = h.shape
    return torch.matmul(weight, h.reshape(*shape[:-2], shape[-2] * shape[-1])).reshape(shape)


def by_bmm(h: Tensor, weight: Tensor) -> Tensor:
    """One ``bmm`` with ``weight`` expanded (not copied) over the images."""
    flat = h.reshape(-1, h.shape[-3], h.shape[-2] * h.shape[-1])
    return torch.bmm(weight.expand(flat.shape[0], -1, -1), flat).reshape(h.shape)


def by_conv2d(h: Tensor, weight: Tensor) -> Tensor:
    """A 1x1 ``conv2d`` in NCHW."""
    return F.conv2d(h.reshape(-1, *h.shape[-3:]), weight[:, :, None, None]).reshape(h.shape)


def by_conv2d_channels_last(h: Tensor, weight: Tensor) -> Tensor:
    """A 1x1 ``conv2d`` on a ``channels_last`` copy of ``h`` (its output stays channels_last)."""
    images = h.reshape(-1, *h.shape[-3:]).contiguous(memory_format=torch.channels_last)
    return F.conv2d(images, weight[:, :, None, None]).reshape(h.shape)


def by_loop(h: Tensor, weight: Tensor) -> Tensor:
    """``sum_j weight[:, j] * h[..., j]``, unrolled over the input channels."""
    columns = weight[:, :, None, None]
    out = h[..., :1, :, :] * columns[:, 0]
    for j in range(1, h.shape[-3]):
        out = torch.addcmul(out, h[..., j : j + 1, :, :], columns[:, j])
    return out


def by_einsum(h: Tensor, weight: Tensor) -> Tensor:
    """``torch.einsum`` (its output is a permuted, non-contiguous view)."""
    return torch.einsum("ij,...jhw->...ihw", weight, h)


STRATEGIES = {
    "matmul": by_matmul,
    "bmm": by_bmm,
    "conv2d": by_conv2d,
    "conv2d channels_last": by_conv2d_channels_last,
    "loop": by_loop,
    "einsum": by_einsum,
    "mix_channels": mix_channels,
}
LOOP_MAX_CHANNELS = 16  # the unrolled loop is far behind beyond this; not worth the time


def strategy_calls(shape: tuple[int, ...], mode: str) -> dict[str, Callable]:
    """One call per strategy at ``shape``, each checked against ``by_matmul`` first."""
    channels = shape[1]
    h = torch.randn(shape)
    weight = torch.linalg.qr(torch.randn(channels, channels))[0]
    grad = torch.randn(shape)
    h_grad, weight_grad = h.clone().requires_grad_(), weight.clone().requires_grad_()
    expected = by_matmul(h, weight)
    calls = {}
    for name, strategy in STRATEGIES.items():
        if name == "loop" and channels > LOOP_MAX_CHANNELS:
            continue
        torch.testing.assert_close(strategy(h, weight), expected, atol=1e-4, rtol=1e-4)

        def run(strategy=strategy) -> None:
            if mode == "no grad":
                with torch.no_grad():
                    strategy(h, weight)
            else:
                strategy(h_grad, weight_grad).backward(grad)
                h_grad.grad = weight_grad.grad = None

        calls[name] = run
    return calls


def strategies(args: argparse.Namespace) -> list[str]:
    """Time the strategies of ``mix_channels`` and print (and return) the table's rows."""
    shapes = [(args.batch, c, args.size, args.size) for c in args.channels]
    shapes.append((args.batch, 4, args.glow_size, args.glow_size))
    shapes = list(dict.fromkeys(shapes))  # without repeats
    modes = ("no grad", "fwd+bwd")
    calls = {}
    for shape in shapes:
        for mode in modes:
            for name, call in strategy_calls(shape, mode).items():
                calls[shape, mode, name] = call
    times = measure(calls, args.repeats, args.min_time, args.warmup)
    names = list(STRATEGIES)
    rows = [
        "| B×C×H×W | mode | " + " | ".join(names) + " | fastest |",
        "|---|---|" + "---:|" * len(names) + "---|",
    ]
    for shape in shapes:
        for mode in modes:
            medians = {
                n: statistics.median(times[shape, mode, n])
                for n in names
                if (shape, mode, n) in times
            }
            cells = [microseconds(times[shape, mode, n]) if n in medians else "—" for n in names]
            fastest = min((n for n in medians if n != "mix_channels"), key=medians.get)
            rows.append(
                f"| {'×'.join(map(str, shape))} | {mode} | {' | '.join(cells)} | {fastest} |"
            )
    print("\n".join(rows), flush=True)
    return rows


def main(args: argparse.Namespace) -> None:
    """Print the machine, then both tables, as Markdown."""
    if args.quick:
        args.channels, args.batch, args.size, args.glow_size = [4, 48], 2, 4, 3
        args.repeats, args.min_time, args.warmup = 1, 0.0, 0
    torch.manual_seed(args.seed)
    with reported_machine():
        print(f"Batch {args.batch}, median of {args.repeats} interleaved repeats.\n", flush=True)
        print(f"### InvConv1x1 against GeneralizedChannelPermute, {args.size}×{args.size}\n")
        compare(args)
        if not args.skip_strategies:
            print("\n### mix_channels strategies (µs per call)\n")
            strategies(args)


def parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`main`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", type=int, nargs="+", default=[4, 16, 48])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=16, help="height and width of the images")
    p.add_argument("--glow-size", type=int, default=14, help="size of the Glow step's images")
    p.add_argument(
        "--skip-strategies", action="store_true", help="only compare with Pyro's transform"
    )
    add_common_options(
        p,
        quick="C in {4, 48}, tiny sizes and repeats (smoke test)",
        repeats=21,
        warmup=3,
        min_time=0.02,
        seed=0,
    )
    return p


if __name__ == "__main__":
    main(parser().parse_args())
