r"""Table 2: the full model (VAE + Glow layer) against a standalone Glow and the two-stage VAE.

Two measurements:

1. **Time per epoch, side by side.** One epoch of each phase of ``VAEFlow`` (phase 1: VAE and
   prior, Glow off; phase 2: the Glow layer only) and of the standalone ``Glow`` is timed through
   :func:`pyro_vaeflow.training.fit` itself (SVI, ``Trace_ELBO``, Adam, clipping), on a slice of
   ``--timing-steps`` batches of real Fashion-MNIST images, the three interleaved over
   ``--repeats`` repeats; an epoch is the median time per step times the steps of a 60 000-image
   epoch. The full model's epoch is the average of its two phases (as the paper's Table 4: both
   phases train the same number of epochs). ``--paper-size`` adds the CIFAR-10 sizes (3×32×32,
   batch 64): the ``paper-cifar10`` preset against the Glow of the Glow paper (3 levels of 32
   steps, width 512, affine), on uniform-noise pixels (the cost does not depend on the values).
2. **Equal wall-clock budget.** The full model, the standalone Glow and the two-stage VAE of
   Dai & Wipf (the ``two-stage-cpu`` preset: the full model's first-stage architecture) are
   each trained for ``--budget`` minutes (see ``benchmarks/baselines.py``) and evaluated alike:
   test ELBO and importance-sampled bits/dim (exact for Glow, which has no latent variable) and
   FID. The two-stage run is the one Table 1 (``bench_prior.py``) also reads.

Run ``python benchmarks/bench_vs_glow.py --jobs 2`` (``--quick`` for a smoke test). The epochs
can be timed on a GPU, without the equal-budget runs:
``python benchmarks/bench_vs_glow.py --paper-size --device cuda --timing-only``.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from pyro_vaeflow.data import load_images
from pyro_vaeflow.models import Glow, VAEFlow
from pyro_vaeflow.presets import PRESETS
from pyro_vaeflow.training import fit

from baselines import add_arguments, cell, ensure_runs, reported_table
from timing import measure

EPOCH_IMAGES = 60000
EQUAL_BUDGET = {
    "vaeflow": "VAE + Glow layer (ours)",
    "glow": "standalone Glow",
    "two-stage": "two-stage VAE (Dai & Wipf)",
}


def _epoch_timer(model, pixels, phase: str, batch_size: int):
    """A call that trains ``model`` one pass over ``pixels`` in ``phase``; seconds per step."""
    steps = len(pixels) // batch_size

    def run() -> None:
        fit(model, pixels, phase, 1, batch_size, lr=1e-4, clip_norm=100.0, progress=False)

    return run, steps


def time_per_epoch(configs: dict, pixels, batch_size: int, repeats: int) -> dict[str, float]:
    """Name → seconds per 60 000-image epoch, the configurations timed interleaved."""
    calls, steps = {}, {}
    for name, (model, phase) in configs.items():
        calls[name], steps[name] = _epoch_timer(model, pixels, phase, batch_size)
    times = measure(calls, repeats=repeats, min_time=0.0, warmup=1)
    per_epoch = EPOCH_IMAGES / batch_size
    return {name: statistics.median(t) / steps[name] * per_epoch for name, t in times.items()}


def _timing_rows(args: argparse.Namespace) -> list[str]:
    cpu, glow_cpu = PRESETS["cpu"], PRESETS["glow-cpu"]
    torch.manual_seed(0)
    batch = 32 if args.quick else cpu.batch_size
    pixels = load_images("fashion-mnist", "train")[: batch * args.timing_steps]
    vae_model = (
        {**cpu.model, "glow_depth": 1, "glow_hidden_channels": 8} if args.quick else cpu.model
    )
    vae = VAEFlow(cpu.image_shape, **vae_model).to(args.device)
    glow_model = (
        {**glow_cpu.model, "depth": 1, "hidden_channels": 8} if args.quick else glow_cpu.model
    )
    glow = Glow(glow_cpu.image_shape, **glow_model).to(args.device)
    rows = [_row("Fashion-MNIST 1×28×28, batch " + str(batch), vae, glow, pixels, batch, args)]
    if args.paper_size:
        paper = PRESETS["paper-cifar10"]
        big_vae = VAEFlow(paper.image_shape, **paper.model).to(args.device)
        big_glow = Glow(paper.image_shape, levels=3, depth=32, hidden_channels=512).to(args.device)
        noise = torch.randint(0, 256, (paper.batch_size * 2, *paper.image_shape), dtype=torch.uint8)
        rows.append(
            _row("CIFAR-10 size 3×32×32, batch 64", big_vae, big_glow, noise, 64, args, repeats=2)
        )
    return rows


def _row(label, vae, glow, pixels, batch, args, repeats=None) -> str:
    epoch = time_per_epoch(
        {"vae": (vae, "vae"), "glow-layer": (vae, "glow"), "glow": (glow, "all")},
        pixels,
        batch,
        repeats or args.repeats,
    )
    average = (epoch["vae"] + epoch["glow-layer"]) / 2
    ratio = epoch["glow"] / average
    params = {
        "vae": sum(p.numel() for p in vae.parameters()),
        "glow": sum(p.numel() for p in glow.parameters()),
    }
    return (
        f"| {label} | {params['vae']:,} | {epoch['vae']:.1f} | {epoch['glow-layer']:.1f} | "
        f"{average:.1f} | {params['glow']:,} | {epoch['glow']:.1f} | {ratio:.2f}x | "
        f"≥ 4x {'met' if ratio >= 4 else 'MISSED'} |"
    )


def main(args: argparse.Namespace) -> None:
    """Print the time-per-epoch table and the equal-budget table."""
    if args.device != "cpu" and not args.timing_only:
        raise SystemExit("--device applies to the epoch timing only: add --timing-only")
    if args.quick:
        args.timing_steps, args.repeats = 2, 1
    command = "python benchmarks/bench_vs_glow.py " + " ".join(sys.argv[1:])
    with reported_table(args, command.strip(), trained=not args.timing_only):
        tables(args)


def tables(args: argparse.Namespace) -> None:
    """The time-per-epoch table and the equal-budget table (what :func:`main` runs inside
    :func:`~baselines.reported_table`)."""
    if not args.only:
        print()
        print(
            "| size | VAEFlow parameters | phase 1 s/epoch | phase 2 s/epoch | average s/epoch | "
            "Glow parameters | Glow s/epoch | Glow / VAEFlow | target |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for row in _timing_rows(args):
            print(row)
    if args.timing_only:
        return
    metrics = ensure_runs(args, list(EQUAL_BUDGET))
    if args.only:
        return
    print()
    print("| model | training minutes | epochs | test ELBO (bits/dim) | IS (bits/dim) | FID |")
    print("|---|---:|---|---:|---:|---:|")
    for name, label in EQUAL_BUDGET.items():
        m = metrics[name]
        epochs = ", ".join(f"{phase} {n}" for phase, n in m["epochs"].items())
        print(
            f"| {label} | {m['train_seconds'] / 60:.1f} | {epochs} | {cell(m, 'test_elbo_bpd')} | "
            f"{cell(m, 'test_is_bpd')} | {cell(m, 'fid', '{:.2f}')} |"
        )


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(
        p, repeats=5, device="cpu", helps={"device": "where the epochs are timed (cpu, cuda)"}
    )
    p.add_argument("--timing-steps", type=int, default=10, help="batches per timed epoch slice")
    p.add_argument("--paper-size", action="store_true", help="also time the CIFAR-10 sizes")
    p.add_argument("--timing-only", action="store_true", help="time the epochs, train nothing")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
