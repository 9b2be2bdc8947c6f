r"""Report a run: its figures and a summary table of its metrics and training time."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from pyro_vaeflow.distributed import local
from pyro_vaeflow.files import WriteError
from pyro_vaeflow.models import ImageModel
from pyro_vaeflow.rundir import RunDir

__all__ = ["make_figures", "summary_table"]


def make_figures(
    model: ImageModel, history: list[dict], run_dir: str | os.PathLike, seed: int = 0
) -> list[Path]:
    """Draw the run's figures into ``<run_dir>/figures/``.

    The model declares its figures (:meth:`~pyro_vaeflow.models.ImageModel.figures`): for a
    ``VAEFlow``, ``samples.png`` (Glow temperatures 1.0, 0.7 and 0.5, the same :math:`z` in each
    panel), ``sharpening.png`` (the VAE mean next to Glow samples from the same :math:`z`, the
    paper's Fig. 4; only with a Glow layer) and ``interpolation.png`` (Fig. 5); for the other
    models, ``samples.png`` is a grid of their samples. Every run gets
    ``training_curves.png``: the training loss logged every few steps (smoothed, from the run's
    ``metrics.jsonl``), each epoch's validation bits/dim and the phase boundaries (the epochs of
    ``history``, or of the run's log when it is empty). A figure that cannot be written (a
    full disk) is left out of the returned paths with a warning.
    """
    from pyro_vaeflow import plotting

    run = RunDir(run_dir)
    with local():  # one process's drawing, even under a process group
        figures = {
            name: plotting.FIGURES[f](model, seed=seed) for name, f in model.figures().items()
        }
    figures["training_curves"] = plotting.plot_training_curves(
        history or run.history(), steps=run.steps()
    )
    return [path for name, figure in figures.items() if (path := _save(figure, run, name))]


def _save(figure, run: RunDir, name: str) -> Path | None:
    """Save one figure; a figure that cannot be written (a full disk) is left out with a
    warning, as the run's results do not depend on it."""
    from pyro_vaeflow import plotting

    try:
        return plotting.save_figure(figure, run.figure_path(name))
    except WriteError as error:
        warnings.warn(f"{error}; the other figures and results are kept", stacklevel=3)
        return None


_EARLIER_LABELS = {
    "test_elbo_bpd_without_glow": "test ELBO without the Glow layer (bits/dim)",
    "fid": "FID of Glow samples",
    "fid_vae_mean": "FID of the VAE means",
}
"""The labels of an evaluation written before evaluations recorded their own (``labels``)."""

_ROWS = (
    ("test_elbo_bpd", "test ELBO (bits/dim, lower is better)", "{:.3f}"),
    ("test_is_bpd", "importance-sampled test NLL (bits/dim)", "{:.3f}"),
    ("test_is_mean_ess", "mean effective sample size", "{:.1f}"),
)
"""The rows every evaluation has: key, label and format."""


def summary_table(metrics: dict, history: list[dict] | None = None) -> str:
    """A Markdown table of the metrics, and the training time of each phase in ``history``.

    The model's own metrics (its ELBO variants and FID samplers) are labelled as its
    evaluation recorded them (``metrics["labels"]``; an evaluation of an earlier version gets
    the labels of then), after the test ELBO and after the importance-sampled bits/dim
    respectively.

    Example:
        >>> print(summary_table({"test_elbo_bpd": 4.5}, [{"phase": "all", "seconds": 90.0}]))
        | metric | value |
        |---|---|
        | test ELBO (bits/dim, lower is better) | 4.500 |
        | phase all: epochs, minutes | 1, 1.5 |
    """
    labels = {**_EARLIER_LABELS, **metrics.get("labels", {})}
    lines = ["| metric | value |", "|---|---|"]

    def row(key: str, label: str, form: str = "{:.3f}") -> None:
        if metrics.get(key) is not None:
            lines.append(f"| {label}{_suffix(metrics, key)} | {form.format(metrics[key])} |")

    for key, label, form in _ROWS:
        row(key, label, form)
        if key == "test_elbo_bpd":
            for variant in (k for k in metrics if k.startswith("test_elbo_bpd_")):
                row(variant, labels.get(variant, variant))
    for name in (k for k in metrics if k.startswith("fid") and k in labels):
        row(name, labels[name], "{:.2f}")
    phases = list(dict.fromkeys(row["phase"] for row in history or []))
    for phase in phases:
        rows = [row for row in history if row["phase"] == phase]
        minutes = sum(row["seconds"] for row in rows) / 60
        lines.append(f"| phase {phase}: epochs, minutes | {len(rows)}, {minutes:.1f} |")
    if "evaluation_seconds" in metrics:
        lines.append(f"| evaluation minutes | {metrics['evaluation_seconds'] / 60:.1f} |")
    return "\n".join(lines)


def _suffix(metrics: dict, key: str) -> str:
    """The sample sizes of a metric, as the table shows them."""
    if key == "test_is_bpd":
        return f" (K={metrics['test_is_samples']}, {metrics['test_is_images']} images)"
    if key.startswith("fid"):
        temperature = ""
        if key == "fid" and "fid_temperature" in metrics:
            temperature = f", T={metrics['fid_temperature']}"
        return f" ({metrics['fid_samples']} samples{temperature})"
    return ""
