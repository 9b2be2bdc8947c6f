r"""The cost of importance sampling: :math:`\log \hat p(x)` with K samples against K ELBOs.

The model is a ``VAEFlow((1, 28, 28), **PRESETS["cpu"].model)`` as built, untrained (its Glow
layer is the identity; the cost of a forward pass does not depend on the weights), on the first
``--images`` Fashion-MNIST test images, dequantised. For each :math:`K`:

- importance sampling: ``log_likelihood(vae.model, vae.guide, x, num_samples=K,
  chunk_size=C)``, the :math:`K` samples drawn ``C`` at a time, each chunk one vectorised trace
  of the guide and the model under a particle plate (``C`` from ``--chunk-sizes``; a chunk size
  of at least :math:`K` draws all at once), and with the default chunk (``chunk_size=None``:
  ``default_chunk_size(N, 784)`` samples per trace, what the evaluation uses);
- :math:`K` ELBOs: a loop of :math:`K` calls of ``elbo(vae.model, vae.guide, x)``, one particle
  each (each call also traces the model once to find the data plate, as any call does).

Both run under ``torch.no_grad()``. The times are per image (a call's time over the number of
images). Each ratio is the median over repeats of two calls timed side by side: a chunk size's
time over the default chunk's (below 1: faster than the default), and the loop's time over
importance sampling's.

Run ``python benchmarks/bench_importance.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

from pyro_vaeflow.infer import elbo, log_likelihood
from pyro_vaeflow.infer.marginal import default_chunk_size
from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.presets import PRESETS

from timing import add_common_options, fashion_mnist, measure, median_ratio, reported_machine


def importance(vae: VAEFlow, x: torch.Tensor, k: int, chunk: int | None) -> Callable[[], None]:
    """One importance-sampled estimate of every image's log-likelihood, K samples, ``chunk`` at
    a time (``None``: the default chunk)."""

    def run() -> None:
        with torch.no_grad():
            log_likelihood(vae.model, vae.guide, x, num_samples=k, chunk_size=chunk, progress=False)

    return run


def elbo_loop(vae: VAEFlow, x: torch.Tensor, k: int) -> Callable[[], None]:
    """K one-particle ELBOs of every image, one call each."""

    def run() -> None:
        with torch.no_grad():
            for _ in range(k):
                elbo(vae.model, vae.guide, x)

    return run


def main(args: argparse.Namespace) -> None:
    """Print the machine, then the cost of each K (and chunk size) per image, as Markdown."""
    if args.quick:
        args.ks, args.chunk_sizes, args.images = [4, 10], [5], 2
        args.repeats, args.min_time, args.warmup = 1, 0.0, 0
    torch.manual_seed(args.seed)
    with reported_machine():
        vae = VAEFlow((1, 28, 28), **PRESETS["cpu"].model)
        x = fashion_mnist(args.images, "test", args.seed)
        print(
            f"VAEFlow((1, 28, 28), **PRESETS['cpu'].model), untrained; {args.images} Fashion-MNIST "
            f"test images; median of {args.repeats} interleaved repeats.\n",
            flush=True,
        )
        default = default_chunk_size(len(x), x[0].numel())
        calls: dict[tuple[str, int, int | None], Callable[[], None]] = {}
        for k in args.ks:
            calls["is", k, None] = importance(vae, x, k, None)
            for chunk in sorted({min(c, k) for c in args.chunk_sizes}):
                calls["is", k, chunk] = importance(vae, x, k, chunk)
            calls["elbo", k, 0] = elbo_loop(vae, x, k)
        times = measure(calls, args.repeats, args.min_time, args.warmup)
        print("### Importance sampling: chunk sizes, and against K ELBO evaluations, per image\n")
        print(
            "| K | chunk size | importance sampling (s/image) | time / default chunk's "
            "| K × ELBO (s/image) | K × ELBO / importance sampling |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for kind, k, chunk in calls:
            if kind != "is":
                continue
            own, loop = times[kind, k, chunk], times["elbo", k, 0]
            label = f"default ({min(default, k):,})" if chunk is None else f"{chunk:,}"
            print(
                f"| {k:,} | {label} | {statistics.median(own) / len(x):.4f} "
                f"| {median_ratio(own, times[kind, k, None]):.2f} "
                f"| {statistics.median(loop) / len(x):.4f} | {median_ratio(loop, own):.1f}x |"
            )


def parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`main`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ks", nargs="+", type=int, default=[100, 1000], help="importance samples")
    p.add_argument(
        "--chunk-sizes",
        nargs="+",
        type=int,
        default=[5, 10, 25, 100, 1000],
        help="samples per trace, each beside the default chunk (which the evaluation uses)",
    )
    p.add_argument("--images", type=int, default=25, help="test images")
    add_common_options(
        p, quick="tiny K, 2 images (smoke test)", repeats=3, warmup=0, min_time=0.0, seed=0
    )
    return p


if __name__ == "__main__":
    main(parser().parse_args())
