r"""The ``pyro-vaeflow`` console script: ``train``, ``evaluate`` and ``sample``.

Examples::

    pyro-vaeflow train --preset cpu --run-dir runs/fashion_mnist
    pyro-vaeflow train --preset cpu --run-dir runs/fashion_mnist --resume
    pyro-vaeflow evaluate --run-dir runs/fashion_mnist
    pyro-vaeflow sample --run-dir runs/fashion_mnist --n 64 --temperature 0.5 --out grid.png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from pyro_vaeflow import __version__
from pyro_vaeflow.distributed import is_main, local, process_group, rank, world_size
from pyro_vaeflow.files import atomic_write
from pyro_vaeflow.presets import PRESETS, Preset, get_preset, override
from pyro_vaeflow.rundir import RunDir

__all__ = ["build_parser", "load_run_preset", "main"]


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, required=True, help="the run's folder")
    parser.add_argument("--data-dir", type=Path, help="dataset folder (default: embedded data)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_evaluation(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--elbo-images", type=int, help="test images for the ELBO (all)")
    parser.add_argument("--is-images", type=int, help="test images for importance sampling")
    parser.add_argument("--is-samples", type=int, help="importance samples K per image")
    parser.add_argument("--fid-samples", type=int, help="samples (and test images) for FID")
    parser.add_argument("--temperature", type=float, help="Glow temperature of FID samples")
    parser.add_argument("--no-fid", action="store_true", help="skip FID")
    parser.add_argument("--fid-weights", type=Path, help="Inception weights file (offline)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyro-vaeflow``."""
    parser = argparse.ArgumentParser(
        prog="pyro-vaeflow", description="VAEs with normalizing-flow decoders (Pyro)."
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train", help="train the preset's phases (VAEFlow: VAE + prior, then the Glow layer)"
    )
    _add_common(train)
    train.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    train.add_argument("--resume", action="store_true", help="continue a stopped run")
    train.add_argument(
        "--epochs",
        type=_phase_epochs,
        action="append",
        metavar="PHASE=N",
        help="epochs of a phase, e.g. --epochs vae=6 --epochs glow=4 (repeatable)",
    )
    train.add_argument("--vae-epochs", type=int, help="epochs of the preset's first phase")
    train.add_argument("--glow-epochs", type=int, help="epochs of the preset's second phase")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--train-images", type=int, help="use the first N training images")
    train.add_argument(
        "--val-images", type=int, help="hold out the last N of them for validation curves"
    )
    train.add_argument("--time-budget", type=float, help="seconds for all the phases")
    train.add_argument("--evaluate", action="store_true", help="evaluate and draw figures after")
    _add_evaluation(train)
    evaluate = commands.add_parser("evaluate", help="test bits/dim (ELBO and IS), FID, figures")
    _add_common(evaluate)
    _add_evaluation(evaluate)
    sample = commands.add_parser("sample", help="draw samples into a PNG grid")
    _add_common(sample)
    sample.add_argument(
        "-n", "--num-samples", "--n", dest="n", type=int, default=64, help="samples in the grid"
    )
    sample.add_argument("--temperature", type=float, default=0.5)
    sample.add_argument("--prior-temperature", type=float, default=1.0)
    sample.add_argument("--out", type=Path, help="PNG path (default: <run-dir>/samples.png)")
    return parser


def _phase_epochs(text: str) -> tuple[str, int]:
    """``"glow=4"`` → ``("glow", 4)``."""
    phase, _, epochs = text.partition("=")
    if not phase or not epochs.isdigit():
        raise argparse.ArgumentTypeError(f"expected PHASE=N with N >= 0, got {text!r}")
    return phase, int(epochs)


def load_run_preset(run_dir: Path) -> Preset:
    """The preset a run was trained with, from ``<run_dir>/config.json``."""
    return Preset.from_dict(RunDir(run_dir).read_config())


def _evaluation_overrides(args: argparse.Namespace) -> dict:
    return {
        "elbo_images": args.elbo_images,
        "is_images": args.is_images,
        "is_samples": args.is_samples,
        "fid_samples": args.fid_samples,
        "temperature": args.temperature,
    }


def _say(text: str, file=sys.stdout) -> None:
    """Print on rank 0 only (under ``torchrun``, every rank runs the command)."""
    if is_main():
        print(text, file=file)


def _run_evaluation(vae, preset, history, args) -> None:
    from pyro_vaeflow.run import evaluate, make_figures, summary_table

    metrics = evaluate(
        vae,
        preset,
        args.run_dir,
        data_dir=args.data_dir,
        fid=not args.no_fid,
        fid_weights=args.fid_weights,
        seed=args.seed,
        progress=not args.quiet,
    )
    if is_main():  # the figures are rank 0's to draw
        figures = make_figures(vae, history, args.run_dir, seed=args.seed)
        print(summary_table(metrics, history))
        print(f"metrics: {RunDir(args.run_dir).metrics_path}; figures: {figures[0].parent}")


def _train(args: argparse.Namespace, device: torch.device) -> None:
    from pyro_vaeflow.run import train

    preset = get_preset(args.preset)
    if args.epochs:
        preset = override(preset, epochs={**preset.epochs, **dict(args.epochs)})
    preset = override(
        preset,
        vae_epochs=args.vae_epochs,
        glow_epochs=args.glow_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        train_images=args.train_images,
        val_images=args.val_images,
        time_budget=args.time_budget,
        **_evaluation_overrides(args),
    )
    if preset.batch_size % world_size():
        raise ValueError(
            f"the batch size {preset.batch_size} is the global batch: it must divide by the "
            f"{world_size()} processes"
        )
    vae, history = train(
        preset,
        args.run_dir,
        data_dir=args.data_dir,
        device=device,
        resume=args.resume,
        seed=args.seed,
        progress=not args.quiet,
    )
    _say(f"trained: {RunDir(args.run_dir).model_path}")
    if args.evaluate:
        _run_evaluation(vae, preset, history, args)


def _evaluate(args: argparse.Namespace, device: torch.device) -> None:
    from pyro_vaeflow.models import load_model

    run = RunDir(args.run_dir)
    preset = override(load_run_preset(args.run_dir), **_evaluation_overrides(args))
    _run_evaluation(load_model(run.model_path, map_location=device), preset, run.history(), args)


def _sample(args: argparse.Namespace, device: torch.device) -> None:
    from torchvision.utils import save_image

    from pyro_vaeflow.models import load_model, sample_options
    from pyro_vaeflow.plotting import image_grid

    run = RunDir(args.run_dir)
    vae = load_model(run.model_path, map_location=device)
    if not is_main():  # a grid is one process's work
        return
    torch.manual_seed(args.seed)
    options = sample_options(
        vae, temperature=args.temperature, prior_temperature=args.prior_temperature
    )
    with local():  # an ActNorm that initialises here uses rank 0's own batch
        grid = image_grid(vae.sample(args.n, **options))
    out = args.out or run.sample_grid_path
    atomic_write(out, lambda stream: save_image(grid, stream, format="png"))
    print(f"{args.n} samples at T={args.temperature}: {out}")


_COMMANDS = {"train": _train, "evaluate": _evaluate, "sample": _sample}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyro-vaeflow``; returns the exit status.

    Under ``torchrun`` every process runs it: it joins the process group that ``torchrun``
    describes (:func:`~pyro_vaeflow.distributed.process_group`), trains and evaluates on its
    share of the data, and rank 0 writes the files and prints.
    """
    args = build_parser().parse_args(argv)
    with process_group(args.device) as device:
        try:
            _COMMANDS[args.command](args, device)
        except (ValueError, FileNotFoundError, FileExistsError) as error:
            where = f" (rank {rank()})" if world_size() > 1 else ""
            print(f"pyro-vaeflow {args.command}: error{where}: {error}", file=sys.stderr)
            return 2
    return 0
