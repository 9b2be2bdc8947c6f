r"""Table 1: a flow prior against the second-stage VAE of Dai & Wipf, on the same VAE.

One first-stage VAE is trained (the ``cpu`` preset's ResNet, a learned isotropic decoder
variance :math:`\gamma`, the prior :math:`\mathcal N(0, I)`: Dai & Wipf's first stage, as the
paper's Table 1 uses), and then, with that VAE frozen, two models of its latent distribution:

* the **second-stage VAE** (``TwoStageVAE``, phase ``"second"``: MLPs of width 1024), trained
  for its share of the ``--budget`` (40 %, as every two-phase run here);
* a **Real NVP flow prior** (the ``cpu`` preset's 8 couplings of widths 256, 256) fitted to the
  same frozen VAE by maximising the ELBO with respect to the prior only (phase ``"prior"``,
  with early stopping on a 10 % validation split), for at most as many seconds as the second
  stage trained.

Samples of both are the decoder means :math:`g_\mu(z)` of their latents, as Dai & Wipf sample,
scored by FID against the test images; the first row is the VAE with its own
:math:`\mathcal N(0, I)` prior. The bounds are those of each whole model. The paper reports
FID 19.70 (flow prior) against 31.87 (second stage) on Fashion-MNIST with 10 000 samples.

Run ``python benchmarks/bench_prior.py`` (``--quick`` for a smoke test). The runs resume.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from pyro_vaeflow.data import load_images
from pyro_vaeflow.files import write_json
from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.presets import PRESETS, override
from pyro_vaeflow.run import evaluate
from pyro_vaeflow.rundir import RunDir
from pyro_vaeflow.training import fit

from baselines import add_arguments, bench_preset, cell, ensure_runs, model_of, reported_table

PAPER = {"flow": 19.70, "second": 31.87}


def _cached(path, compute) -> dict:
    if not path.exists():
        write_json(path, compute())
    return json.loads(path.read_text())


def first_stage_only(args: argparse.Namespace) -> dict:
    """The metrics of the two-stage run's first stage alone (its :math:`\\mathcal N(0, I)`)."""

    def compute() -> dict:
        model = model_of(args, "two-stage")
        model.second_stage_enabled = False
        return evaluate(
            model, bench_preset(args, "two-stage"), fid=not args.quick, progress=not args.quiet
        )

    return _cached(args.root / "two-stage" / "metrics-first-stage.json", compute)


def flow_prior_refit(args: argparse.Namespace, seconds: float) -> dict:
    """Fit a Real NVP prior to the two-stage run's frozen first stage; its metrics."""
    run_dir = args.root / "flow-prior"
    preset = bench_preset(args, "two-stage")

    def compute() -> dict:
        two_stage = model_of(args, "two-stage")
        prior = {k: PRESETS["cpu"].model[k] for k in ("prior_layers", "prior_hidden_dims")}
        if args.quick:
            prior = {"prior_layers": 2, "prior_hidden_dims": (16, 16)}
        fixed = ("prior", "prior_layers", "prior_hidden_dims", "glow_depth")
        sizes = {k: v for k, v in two_stage.first_stage.config.items() if k not in fixed}
        vae = VAEFlow(**sizes, prior="flow", glow_depth=0, **prior)
        missing, unexpected = vae.load_state_dict(two_stage.first_stage.state_dict(), strict=False)
        if unexpected or any(not name.startswith("prior_flow.") for name in missing):
            raise RuntimeError(f"the first stage does not fit: {missing}, {unexpected}")
        pixels = load_images(preset.dataset, "train")[: preset.train_images]
        run = RunDir(run_dir)
        done = run.load_checkpoint("prior")["history"] if run.has_checkpoint("prior") else []
        history = fit(
            vae,
            pixels,
            "prior",
            epochs=sum(preset.epochs.values()),
            batch_size=preset.batch_size,
            lr=preset.lr,
            warmup_steps=preset.warmup_steps,
            clip_norm=preset.clip_norm,
            run_dir=run_dir,
            resume=True,
            progress=not args.quiet,
            time_budget=seconds - sum(row["seconds"] for row in done),
        )
        metrics = evaluate(
            vae, override(preset, name="flow-prior"), fid=not args.quick, progress=not args.quiet
        )
        metrics["train_seconds"] = sum(row["seconds"] for row in history)
        metrics["epochs"] = {"prior": len(history)}
        metrics["parameters"] = sum(p.numel() for p in vae.prior_flow.parameters())
        return metrics

    return _cached(run_dir / "metrics.json", compute)


def main(args: argparse.Namespace) -> None:
    """Train (or resume) the runs, then print Table 1."""
    command = "python benchmarks/bench_prior.py " + " ".join(sys.argv[1:])
    with reported_table(args, command.strip()):
        table(args)


def table(args: argparse.Namespace) -> None:
    """Train (or resume) the runs, then print Table 1 (what :func:`main` runs inside
    :func:`~baselines.reported_table`)."""
    torch.manual_seed(0)
    runs = ensure_runs(args, ["two-stage"])
    if args.only:
        return
    two_stage = runs["two-stage"]
    stage_two_seconds = two_stage["train_seconds"] - _first_stage_seconds(args)
    rows = [
        ("N(0, I): the first stage alone", first_stage_only(args), "—", None),
        ("second-stage VAE (Dai & Wipf)", two_stage, PAPER["second"], stage_two_seconds),
    ]
    refit = flow_prior_refit(args, stage_two_seconds)
    rows.append(("Real NVP flow prior (ours)", refit, PAPER["flow"], refit["train_seconds"]))
    print()
    print(
        "| prior on z (the same first-stage VAE) | FID | paper FID (10k samples) | "
        "test ELBO (bits/dim) | IS (bits/dim) | prior training (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, m, paper, seconds in rows:
        spent = "—" if seconds is None else f"{seconds:.0f}"
        print(
            f"| {label} | {cell(m, 'fid', '{:.2f}')} | {paper} | {m['test_elbo_bpd']:.3f} | "
            f"{m['test_is_bpd']:.3f} | {spent} |"
        )


def _first_stage_seconds(args: argparse.Namespace) -> float:
    history = RunDir(args.root / "two-stage").history()
    return sum(row["seconds"] for row in history if row["phase"] == "first")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(p)
    return p


if __name__ == "__main__":
    main(parser().parse_args())
