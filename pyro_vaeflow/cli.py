r"""The ``pyro-vaeflow`` console script: ``train``, ``evaluate`` and ``sample``.

Examples::

    pyro-vaeflow train --preset cpu --run-dir runs/fashion_mnist
    pyro-vaeflow train --preset cpu --run-dir runs/fashion_mnist --resume
    pyro-vaeflow evaluate --run-dir runs/fashion_mnist
    pyro-vaeflow sample --run-dir runs/fashion_mnist --n 64 --temperature 0.5 --out grid.png

``train`` and ``evaluate`` hold the run directory's lock (:mod:`pyro_vaeflow.lock`). A SIGTERM
or Ctrl-C stops them gracefully (:mod:`pyro_vaeflow.interrupt`): the current step finishes, a
checkpoint is written, and the command exits with status 128 + the signal's number (143, 130)
after printing how to resume. A second Ctrl-C exits at once.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from pyro_vaeflow import __version__
from pyro_vaeflow.acceleration import PRECISIONS, Acceleration
from pyro_vaeflow.distributed import is_main, local, process_group, rank, world_size
from pyro_vaeflow.files import WriteError, atomic_write
from pyro_vaeflow.interrupt import GracefulStop, Interrupted
from pyro_vaeflow.lock import RunLockedError
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
    parser.add_argument(
        "--fid-precision",
        choices=["bf16", "fp32"],
        default="fp32",
        help="Inception's arithmetic: fp32 (FID's protocol) or bf16 (a fast approximation)",
    )


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
    train.add_argument(
        "--checkpoint-every",
        type=float,
        metavar="MINUTES",
        help="also checkpoint in the middle of an epoch every MINUTES (a stop always does)",
    )
    train.add_argument(
        "--compile", action="store_true", help="compile the networks with torch.compile"
    )
    train.add_argument(
        "--compile-mode", help="torch.compile's mode, e.g. reduce-overhead (CUDA graphs)"
    )
    train.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default="fp32",
        help="the networks' arithmetic (bf16: autocast; log-dets and the ELBO stay float32)",
    )
    train.add_argument(
        "--no-tf32", dest="tf32", action="store_false", help="no TF32 matmuls on CUDA"
    )
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
    run = RunDir(run_dir)
    return Preset.from_dict(run.read_config(), source=run.config_path)


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
        fid_precision=args.fid_precision,
        seed=args.seed,
        progress=not args.quiet,
    )
    if is_main():  # the figures are rank 0's to draw
        make_figures(vae, history, args.run_dir, seed=args.seed)
        print(summary_table(metrics, history))
        run = RunDir(args.run_dir)
        print(f"metrics: {run.metrics_path}; figures: {run.figures_dir}")


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
        checkpoint_every=args.checkpoint_every,
        acceleration=Acceleration(args.compile, args.precision, args.tf32, args.compile_mode),
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
    """Run ``pyro-vaeflow``; returns the exit status (0; 2 for an error in the input or a run
    directory in use; 1 when a file could not be written; 128 + the signal's number after a
    graceful stop).

    Under ``torchrun`` every process runs it: it joins the process group that ``torchrun``
    describes (:func:`~pyro_vaeflow.distributed.process_group`), trains and evaluates on its
    share of the data, and rank 0 writes the files and prints.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    where = ""
    try:
        with process_group(args.device) as device, GracefulStop():
            where = f" (rank {rank()})" if world_size() > 1 else ""
            writes = args.command in ("train", "evaluate")
            with RunDir(args.run_dir).lock() if writes else nullcontext():
                _COMMANDS[args.command](args, device)
    except Interrupted as stop:
        _say(
            f"pyro-vaeflow {args.command}: {stop}.\nResume with: {_resume_command(argv)}",
            sys.stderr,
        )
        return 128 + stop.signum
    except KeyboardInterrupt:  # a second Ctrl-C
        _say(f"pyro-vaeflow {args.command}: interrupted", sys.stderr)
        return 130
    except WriteError as error:
        print(
            f"pyro-vaeflow {args.command}: error{where}: {error.strerror}. Free some space "
            f"(or fix the file system) and resume with: {_resume_command(argv)}",
            file=sys.stderr,
        )
        return 1
    except (ValueError, FileNotFoundError, FileExistsError, RunLockedError) as error:
        print(f"pyro-vaeflow {args.command}: error{where}: {error}", file=sys.stderr)
        return 2
    return 0


def _resume_command(argv: list[str]) -> str:
    """The command that continues this one (``train`` needs ``--resume``)."""
    if argv and argv[0] == "train" and "--resume" not in argv:
        argv = [*argv, "--resume"]
    return shlex.join(["pyro-vaeflow", *argv])
