r"""PixelCNN decoders against the flow decoder: VLAE, AGAVE and VAEFlow on Fashion-MNIST.

The three models train for the same ``--budget`` minutes and are evaluated alike by
:func:`pyro_vaeflow.run.evaluate` (see ``benchmarks/baselines.py``; the VAEFlow run is
Table 2's): the importance-sampled test bits/dim, the test ELBO in bits/dim, FID, and the
training time per epoch. VLAE uses its 8-bit discretised logistic (bits/dim of its binarised
setting would not be comparable), so every number is in bits per 8-bit pixel: exact discrete
code lengths for VLAE and AGAVE (their density is uniform within each pixel's bin), a
dequantisation bound for VAEFlow.

Then the time to sample 64 images, the three models interleaved (median of ``--repeats``). This
is the trade-off the table shows: a PixelCNN decoder models the pixels' local dependencies, which
buys likelihood, but draws an image pixel by pixel (784 network passes for 28×28; each pass here
computes only the patch its receptive field needs), while the flow decoder draws every pixel in
one parallel pass.

Run ``python benchmarks/bench_autoregressive.py --jobs 2`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from pyro_vaeflow.models import sample_options

from baselines import add_arguments, cell, ensure_runs, model_of, reported_table
from timing import measure

MODELS = {
    "vaeflow": ("VAEFlow (ours)", "Glow flow: one parallel pass"),
    "vlae": ("VLAE", "PixelCNN, window {window}: one pass per pixel"),
    "agave": ("AGAVE", "aux. VAE + PixelCNN, window {window}: one pass per pixel"),
}


def sampling_seconds(args: argparse.Namespace) -> dict[str, float]:
    """Seconds to sample ``--sample-images`` images with each model, timed interleaved."""
    models = {name: model_of(args, name).eval() for name in MODELS}
    calls = {}
    for name, model in models.items():
        options = sample_options(model, progress=False)
        calls[name] = lambda model=model, options=options: model.sample(
            args.sample_images, **options
        )
    with torch.no_grad():
        times = measure(calls, repeats=args.repeats, min_time=0.0, warmup=0 if args.quick else 1)
    return {name: statistics.median(t) for name, t in times.items()}


def main(args: argparse.Namespace) -> None:
    """Train (or resume) the three runs, then print the table."""
    if args.quick:
        args.sample_images, args.repeats = 4, 1
    command = "python benchmarks/bench_autoregressive.py " + " ".join(sys.argv[1:])
    with reported_table(args, command.strip()):
        table(args)


def table(args: argparse.Namespace) -> None:
    """Train (or resume) the three runs, then print the table (what :func:`main` runs
    inside :func:`~baselines.reported_table`)."""
    metrics = ensure_runs(args, list(MODELS))
    if args.only:
        return
    seconds = sampling_seconds(args)
    windows = {name: model_of(args, name).pixelcnn.window for name in ("vlae", "agave")}
    print()
    print(
        "| model | decoder | IS (bits/dim) | test ELBO (bits/dim) | FID | epochs | s/epoch | "
        f"sampling {args.sample_images} images (s) | parameters |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (label, decoder) in MODELS.items():
        m = metrics[name]
        epochs = sum(m["epochs"].values())
        print(
            f"| {label} | {decoder.format(window=windows.get(name))} | {m['test_is_bpd']:.3f} | "
            f"{m['test_elbo_bpd']:.3f} | {cell(m, 'fid', '{:.2f}')} | {epochs} | "
            f"{m['train_seconds'] / epochs:.1f} | {seconds[name]:.2f} | {m['parameters']:,} |"
        )


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(p, repeats=3, helps={"repeats": "timed repeats of sampling"})
    p.add_argument("--sample-images", type=int, default=64, help="images per timed sampling")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
