r"""Training curves: bits/dim per epoch over the training phases."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pyro_vaeflow.plotting._common import new_figure

__all__ = ["plot_training_curves"]

_REQUIRED = ("phase", "train_bpd")
_SHADES = ("#dce6f2", "#f2e6dc")


def plot_training_curves(history: Sequence[Mapping], *, title: str | None = None) -> Figure:
    r"""Training (and validation, where recorded) bits/dim against the epoch, phase by phase.

    ``history`` is the concatenation of the lists returned by
    :func:`~pyro_vaeflow.training.fit`, in the order the phases ran: one dict per epoch with
    ``phase``, ``train_bpd`` and optionally ``epoch`` and ``val_bpd`` (``None`` when not
    measured). The x axis counts epochs over all phases; each phase — a run of rows with the
    same ``phase`` whose ``epoch`` keeps increasing — is shaded and labelled. The curves are
    broken between phases, since each phase optimises a different bound: e.g. the ``"vae"``
    phase's bits/dim is that of the VAE without its Glow layer. Non-finite values leave gaps.

    Args:
        history: the per-epoch records.
        title: the title of the figure.

    Example:
        >>> history = [
        ...     {"phase": "vae", "epoch": 1, "train_bpd": 5.0, "val_bpd": None},
        ...     {"phase": "vae", "epoch": 2, "train_bpd": 4.0, "val_bpd": None},
        ...     {"phase": "glow", "epoch": 1, "train_bpd": 3.5, "val_bpd": 3.6},
        ... ]
        >>> fig = plot_training_curves(history)
        >>> ax, legend = fig.axes[0], fig.legends[0]
        >>> ax.get_xlabel(), ax.get_ylabel(), [t.get_text() for t in legend.texts]
        ('epoch (all phases)', 'bits/dim', ['train', 'validation'])
    """
    rows = _check(history)
    segments = _segments(rows)
    fig = new_figure(6.4, 3.8)
    ax = fig.subplots()
    for k, (phase, first, last) in enumerate(segments):
        ax.axvspan(first + 0.5, last + 1.5, color=_SHADES[k % 2], zorder=0, linewidth=0)
        ax.text(
            (first + last) / 2 + 1,
            0.98,
            phase,
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="top",
            fontsize="small",
        )
        epochs = list(range(first + 1, last + 2))
        train = [_value(row["train_bpd"]) for row in rows[first : last + 1]]
        val = [_value(row.get("val_bpd")) for row in rows[first : last + 1]]
        labelled = k == 0
        ax.plot(epochs, train, "o-", color="C0", markersize=3, label="train" if labelled else None)
        if any(math.isfinite(v) for v in val):
            ax.plot(epochs, val, "s--", color="C1", markersize=3, label="validation")
    ax.set_xlim(0.5, len(rows) + 0.5)
    ax.margins(y=0.15)
    ax.set_xlabel("epoch (all phases)")
    ax.set_ylabel("bits/dim")
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(loc="outside lower center", ncols=2, frameon=False)
    ax.set_title(title if title is not None else "Training curves")
    return fig


def _check(history: Sequence[Mapping]) -> list[Mapping]:
    if isinstance(history, Mapping) or not isinstance(history, Sequence):
        raise ValueError(f"history must be a list of dicts, got {type(history).__name__}")
    if not history:
        raise ValueError("history is empty: there is nothing to plot")
    for i, row in enumerate(history):
        if not isinstance(row, Mapping):
            raise ValueError(f"history[{i}] must be a dict, got {type(row).__name__}")
        missing = [key for key in _REQUIRED if key not in row]
        if missing:
            raise ValueError(f"history[{i}] lacks the keys {missing}")
    return list(history)


def _segments(rows: list[Mapping]) -> list[tuple[str, int, int]]:
    """``(phase, first, last)`` index ranges of the phases, split where the epoch restarts."""
    segments: list[tuple[str, int, int]] = []
    for i, row in enumerate(rows):
        phase, epoch = str(row["phase"]), row.get("epoch")
        if segments and segments[-1][0] == phase:
            previous = rows[i - 1].get("epoch")
            if epoch is None or previous is None or epoch > previous:
                segments[-1] = (phase, segments[-1][1], i)
                continue
        segments.append((phase, i, i))
    return segments


def _value(value: float | None) -> float:
    return math.nan if value is None else float(value)
