r"""The least time an epoch of the paper's Glow layer can take, from its FLOPs and a GPU's peak.

The paper (Table 4) times an epoch of its Glow-layer phase on CIFAR-10 at about 162 s on a
GeForce GTX 1080 Ti, but does not give the layer's width. This script counts, with
``torch.utils.flop_counter``, the floating-point operations of one training step of the Glow
layer (``glow(3, depth=32, coupling="additive")`` on 3×32×32: data → base with the
log-determinant, then backward) for a few widths and squeezes, per image, and divides those of a
50 000-image epoch by the GPU's fp32 peak (``--peak-tflops``; 11.34 for the GTX 1080 Ti: 3584
cores × 2 × 1582 MHz). An epoch cannot take less than that floor at 100 % of the peak, so a
configuration whose floor exceeds the paper's 162 s cannot be the paper's layer.

Run ``python benchmarks/flops_glow_layer.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse

import torch

from pyro_vaeflow.transforms import glow

from timing import add_common_options, count_flops, machine

PAPER_SECONDS = 162.0  # the paper's Table 4: the Glow layer's time per CIFAR-10 epoch


def step_flops(squeeze: int, width: int, depth: int) -> float:
    """FLOPs per image of one training step of the Glow layer (forward and backward), on a
    batch of 2; the input needs no gradient, as in training."""
    flow = glow(3, depth=depth, hidden_channels=width, coupling="additive", squeeze=squeeze)
    x = torch.rand(2, 3, 32, 32)
    flow.inv(x)  # actnorm's data-dependent initialisation, outside the count

    def step() -> None:
        u, log_det = flow.inverse_and_log_det(x)
        (u.square().sum() - log_det.sum()).backward()

    return count_flops(step) / len(x)


def epoch_floor(flops_per_image: float, images: int, peak_tflops: float) -> float:
    """Seconds an epoch takes at least: its FLOPs at the peak rate.

    Example:
        >>> epoch_floor(54.26e9, 50000, 11.34)  # doctest: +ELLIPSIS
        239.2...
    """
    return flops_per_image * images / (peak_tflops * 1e12)


def main(args: argparse.Namespace) -> None:
    """Print the table of configurations, their FLOPs and their epoch floors, as Markdown."""
    sizes = [(0, 8), (1, 8)] if args.quick else [(0, 512), (0, 256), (1, 512)]
    depth = 1 if args.quick else 32
    print(f"Machine: {machine()} (the counts do not depend on it)")
    print(f"GPU fp32 peak: {args.peak_tflops} TFLOP/s; epoch: {args.images} images.\n")
    print(
        "| squeeze | width | depth | GFLOP/image/step | epoch floor (s) | "
        f"peak for {PAPER_SECONDS:g} s |"
    )
    print("|---:|---:|---:|---:|---:|---|")
    for squeeze, width in sizes:
        flops = step_flops(squeeze, width, depth)
        floor = epoch_floor(flops, args.images, args.peak_tflops)
        needed = floor / PAPER_SECONDS
        shown = f"{needed:.0%}" + (" (impossible)" if needed > 1 else "")
        print(f"| {squeeze} | {width} | {depth} | {flops / 1e9:.2f} | {floor:.0f} | {shown} |")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peak-tflops", type=float, default=11.34, help="the GPU's fp32 peak")
    p.add_argument("--images", type=int, default=50000, help="images per epoch (CIFAR-10)")
    add_common_options(p, quick="one-step, width-8 layers (smoke test)")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
