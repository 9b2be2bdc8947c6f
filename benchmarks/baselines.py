r"""The trained runs behind Tables 1–3: every model in one harness, resumable, evaluated alike.

Each run is a :class:`~pyro_vaeflow.presets.Preset` trained by
:func:`pyro_vaeflow.run.train` into ``<root>/<name>`` with ``resume=True`` and evaluated
by :func:`pyro_vaeflow.run.evaluate`; its metrics are cached in ``metrics.json``. A run
stopped at any point continues where it stopped when its table's command is run again (the time
budget counts the epochs already trained), and a finished run is only read back.

Every run gets the same wall-clock budget (``--budget`` minutes of training epochs; the phases
of a two-phase model share it by their epochs, 60 % and 40 %, as the ``cpu`` preset's 6 and 4
epochs do) and the same evaluation. An epoch is the first ``--train-images`` training images
(12 800 by default: 100 steps of 128), so that the budget, not an epoch boundary, ends each
phase. ``--jobs 2`` trains the runs of a table two at a time, each
in its own process with one torch thread, so that the runs compared side by side share the
machine's load; they are then evaluated one after the other with all the threads.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from pyro_vaeflow.models import load_model
from pyro_vaeflow.presets import Preset, get_preset, override
from pyro_vaeflow.run import evaluate, train
from pyro_vaeflow.rundir import RunDir

from timing import add_common_options, reported_machine

__all__ = [
    "RUNS",
    "add_arguments",
    "bench_preset",
    "cell",
    "ensure_runs",
    "metrics_of",
    "model_of",
    "reported_table",
    "run_one",
    "train_run",
]

#: The two-phase split of the budget: the cpu preset's 6 and 4 epochs, scaled up so that the
#: budget, not the epochs, ends each phase (a one-phase model gets 100).
_SPLIT = (60, 40)


RUNS: dict[str, Callable[[argparse.Namespace], Preset]] = {
    "vaeflow": lambda args: _preset(args, "vaeflow", "cpu"),
    "vaeflow-isotropic": lambda args: _preset(
        args, "vaeflow-isotropic", "cpu", model={"decoder_variance": "isotropic"}
    ),
    "vaeflow-joint": lambda args: _preset(args, "vaeflow-joint", "cpu", epochs={"joint": 100}),
    "glow": lambda args: _preset(args, "glow", "glow-cpu", is_samples=1),
    "two-stage": lambda args: _preset(args, "two-stage", "two-stage-cpu"),
    "vlae": lambda args: _preset(args, "vlae", "vlae-cpu"),
    "agave": lambda args: _preset(args, "agave", "agave-cpu"),
}
"""Run name → its preset, given the command line (budget and evaluation sizes)."""


def add_arguments(parser: argparse.ArgumentParser, **common) -> None:
    """The options every table shares, and those of ``common`` (the keywords of
    :func:`~timing.add_common_options`, such as ``repeats=5``)."""
    parser.add_argument("--root", type=Path, default=Path("runs/benchmarks"), help="run folder")
    parser.add_argument("--budget", type=float, default=10.0, help="training minutes per run")
    parser.add_argument("--fid-samples", type=int, default=1000, help="samples and test images")
    parser.add_argument("--elbo-images", type=int, default=10000, help="test images, ELBO")
    parser.add_argument("--is-images", type=int, default=100, help="test images, IS")
    parser.add_argument("--is-samples", type=int, default=200, help="importance samples K")
    parser.add_argument(
        "--train-images", type=int, default=12800, help="the first N training images"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: 1 in --only, else all)"
    )
    parser.add_argument("--only", help="train this run only (what --jobs runs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_common_options(parser, quick="a seconds-long smoke run", **common)


_QUICK_SIZES = {
    "vaeflow": {
        "latent_dim": 4,
        "base_channels": 4,
        "fc_dim": 16,
        "prior_layers": 2,
        "prior_hidden_dims": (16, 16),
        "glow_depth": 1,
        "glow_hidden_channels": 8,
    },
    "two-stage": {"latent_dim": 4, "base_channels": 4, "fc_dim": 16, "second_hidden_dims": (16,)},
    "glow": {"levels": 2, "depth": 1, "hidden_channels": 8},
    "vlae": {
        "latent_dim": 4,
        "base_channels": 4,
        "fc_dim": 16,
        "pixelcnn_channels": 8,
        "cond_channels": 2,
        "prior_hidden_dims": (8,),
    },
    "agave": {
        "latent_dim": 4,
        "base_channels": 4,
        "fc_dim": 16,
        "pixelcnn_channels": 8,
        "pixelcnn_layers": 2,
        "cond_channels": 4,
    },
}


def _preset(args: argparse.Namespace, name: str, base: str, model: dict | None = None, **fields):
    preset = get_preset(base)
    split = _SPLIT if len(preset.epochs) == 2 else (100,)
    sizes = {
        "fid_samples": args.fid_samples,
        "elbo_images": args.elbo_images,
        "is_images": args.is_images,
        "is_samples": args.is_samples,
        "train_images": args.train_images,
        "time_budget": args.budget * 60,
        "epochs": dict(zip(preset.epochs, split, strict=True)),
    }
    model = {**preset.model, **(model or {})}
    fields = {**sizes, **fields}
    if args.quick:
        fields.update(fid_samples=8, elbo_images=8, is_images=2, train_images=64)
        fields.update(epochs=dict.fromkeys(fields["epochs"], 1), batch_size=32, warmup_steps=2)
        fields["is_samples"] = min(fields["is_samples"], 4)
        model.update(_QUICK_SIZES[preset.architecture])
    return override(preset, name=name, model=model, **fields)


def bench_preset(args: argparse.Namespace, name: str) -> Preset:
    """The preset of run ``name`` under this command line."""
    return RUNS[name](args)


def _fresh(run: RunDir) -> bool:
    """Whether a finished evaluation's ``metrics.json`` was written after the last ``model.pt``
    (a stopped evaluation leaves a partial one, which ``evaluate`` continues)."""
    if not (run.metrics_path.exists() and run.model_path.exists()):
        return False
    if run.metrics_path.stat().st_mtime < run.model_path.stat().st_mtime:
        return False
    found = run.read_metrics()  # a corrupt file is an error that names it
    return found is not None and not found.get("partial")


def train_run(args: argparse.Namespace, name: str) -> tuple[torch.nn.Module, list[dict]]:
    """Train run ``name``, resuming it; a finished run is only read back."""
    return train(bench_preset(args, name), args.root / name, resume=True, progress=not args.quiet)


def run_one(args: argparse.Namespace, name: str) -> dict:
    """Train run ``name`` (resuming it) unless it is finished, then evaluate it unless cached."""
    preset, run = bench_preset(args, name), RunDir(args.root / name)
    if not _fresh(run):
        started = time.perf_counter()
        model, history = train_run(args, name)
        metrics = evaluate(model, preset, run, fid=not args.quick, progress=not args.quiet)
        metrics["train_seconds"] = sum(row["seconds"] for row in history)
        metrics["epochs"] = {row["phase"]: row["epoch"] for row in history}
        metrics["parameters"] = sum(p.numel() for p in model.parameters())
        metrics["run_seconds"] = time.perf_counter() - started
        run.write_metrics(metrics)
    return run.read_metrics()


def ensure_runs(args: argparse.Namespace, names: Sequence[str]) -> dict[str, dict]:
    """The metrics of every run in ``names``, training the missing ones (``--jobs`` at once).

    With ``--jobs 2``, the runs train two at a time in subprocesses of one torch thread each
    (``--only``); the evaluations then run one after the other in this process, with all the
    threads, so that FID's Inception network is not slowed down by the other run.
    """
    if args.only:
        torch.set_num_threads(args.threads or 1)
        train_run(args, args.only)
        return {}
    untrained = [name for name in names if not RunDir(args.root / name).model_path.exists()]
    if args.jobs > 1 and untrained:
        _in_parallel(args, untrained)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    return {name: run_one(args, name) for name in names}


def _in_parallel(args: argparse.Namespace, names: Sequence[str]) -> None:
    """Train ``names`` ``args.jobs`` at a time, each in a subprocess of this very script."""
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    argv = [a for a in sys.argv[1:] if a not in ("--jobs", str(args.jobs))]
    for start in range(0, len(names), args.jobs):
        group = names[start : start + args.jobs]
        processes = []
        for name in group:
            (args.root / name).mkdir(parents=True, exist_ok=True)
            log = open(args.root / name / "log.txt", "a")  # noqa: SIM115 (closed below)
            command = [sys.executable, sys.argv[0], *argv, "--only", name]
            command += ["--threads", str(threads)]
            processes.append((name, subprocess.Popen(command, stdout=log, stderr=log), log))
        for name, process, log in processes:
            process.wait()
            log.close()
            if process.returncode:
                raise RuntimeError(f"run {name} failed: see {args.root / name / 'log.txt'}")


def model_of(args: argparse.Namespace, name: str) -> torch.nn.Module:
    """The trained model of run ``name``."""
    return load_model(RunDir(args.root / name).model_path)


def metrics_of(args: argparse.Namespace, name: str) -> dict:
    """The cached metrics of run ``name``."""
    return RunDir(args.root / name).read_metrics()


@contextmanager
def reported_table(args: argparse.Namespace, command: str, trained: bool = True) -> Iterator[None]:
    """Around a table's work: first the command, the machine, the load and, for tables of trained
    models (``trained``), the budget and the evaluation's sample sizes; the load at the end.
    Nothing in a process of ``--only`` (a run that ``--jobs`` trains)."""
    if args.only:
        yield
        return
    sizes = (
        f"Budget: {args.budget:g} training minutes per run; FID on {args.fid_samples} samples "
        f"against as many test images; test ELBO on {args.elbo_images} test images; importance "
        f"sampling with K={args.is_samples} on {args.is_images} test images."
    )
    if args.quick:
        sizes = "A --quick smoke run: tiny models and data, no FID; the numbers mean nothing."
    print(f"Command: `{command}`")
    with reported_machine():
        if trained or args.quick:
            print(sizes)
        yield


def cell(metrics: dict, key: str, form: str = "{:.3f}") -> str:
    """``metrics[key]`` formatted, or a dash when it was not measured (FID in ``--quick``)."""
    return form.format(metrics[key]) if metrics.get(key) is not None else "—"
