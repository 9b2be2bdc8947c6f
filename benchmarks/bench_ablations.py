r"""Table 3: the paper's ablations, each against the full model at the same budget.

* **Decoder variance** (section 3.1): the per-pixel :math:`g_\sigma(z)` of the paper against an
  isotropic learned :math:`\gamma` (Dai & Wipf's), both trained in two phases.
* **Joint against two-phase training** (section 3.4): all parts trained together for the
  whole budget against phase 1 (VAE and prior) then phase 2 (only the Glow layer).
* **The Glow temperature** (section 3.5): FID of the full model's samples at temperatures
  0 to 1, the same latents for every temperature.

Every run trains for ``--budget`` minutes and is evaluated alike (see
``benchmarks/baselines.py``); the temperature sweep reuses the full model of Table 2.

Run ``python benchmarks/bench_ablations.py --jobs 2`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import json
import sys

from pyro_vaeflow.presets import override
from pyro_vaeflow.run import fid_scores

from baselines import (
    add_arguments,
    bench_preset,
    cell,
    ensure_runs,
    metrics_of,
    model_of,
    reported_table,
)

RUNS = {
    "vaeflow": "per-pixel variance, two phases (the paper's)",
    "vaeflow-isotropic": "isotropic γ, two phases",
    "vaeflow-joint": "per-pixel variance, joint training",
}


def temperature_sweep(args: argparse.Namespace) -> dict[str, dict]:
    """FID of the full model at each temperature (cached per temperature)."""
    path = args.root / "vaeflow" / "temperature-sweep.json"
    sweep = json.loads(path.read_text()) if path.exists() else {}
    run = metrics_of(args, "vaeflow")  # its FID at the preset's temperature is one of them
    sweep.setdefault(f"{run['fid_temperature']:g}", {"fid": run["fid"]})
    model = None
    for temperature in args.temperatures:
        key = f"{temperature:g}"
        if key not in sweep:
            model = model or model_of(args, "vaeflow")
            preset = override(bench_preset(args, "vaeflow"), temperature=temperature)
            sweep[key] = fid_scores(model, preset, vae_means=False, progress=not args.quiet)
            path.write_text(json.dumps(sweep, indent=2) + "\n")
    return {f"{t:g}": sweep[f"{t:g}"] for t in args.temperatures}


def main(args: argparse.Namespace) -> None:
    """Train (or resume) the runs, then print the ablation tables."""
    command = "python benchmarks/bench_ablations.py " + " ".join(sys.argv[1:])
    with reported_table(args, command.strip()):
        tables(args)


def tables(args: argparse.Namespace) -> None:
    """Train (or resume) the runs, then print the ablation tables (what :func:`main` runs
    inside :func:`~baselines.reported_table`)."""
    metrics = ensure_runs(args, list(RUNS))
    if args.only:
        return
    print()
    print(
        "| variant | training minutes | epochs | test ELBO (bits/dim) | without Glow | "
        "IS (bits/dim) | FID (Glow, T=0.5) | FID (VAE means) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, label in RUNS.items():
        m = metrics[name]
        epochs = ", ".join(f"{phase} {n}" for phase, n in m["epochs"].items())
        print(
            f"| {label} | {m['train_seconds'] / 60:.1f} | {epochs} | {cell(m, 'test_elbo_bpd')} | "
            f"{cell(m, 'test_elbo_bpd_without_glow')} | {cell(m, 'test_is_bpd')} | "
            f"{cell(m, 'fid', '{:.2f}')} | {cell(m, 'fid_vae_mean', '{:.2f}')} |"
        )
    if args.quick:
        return
    print()
    sweep = temperature_sweep(args)
    print("| Glow temperature T | " + " | ".join(sweep) + " |")
    print("|---|" + "---:|" * len(sweep))
    print("| FID | " + " | ".join(f"{m['fid']:.2f}" for m in sweep.values()) + " |")
    best = min(sweep, key=lambda t: sweep[t]["fid"])
    print(f"\nLowest FID at T = {best}.")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(p)
    p.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        default=[0.0, 0.25, 0.5, 0.75, 1.0],
        help="Glow temperatures of the sweep",
    )
    return p


if __name__ == "__main__":
    main(parser().parse_args())
