r"""Training curves: the loss over the training phases, with each epoch's validation score."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pyro_vaeflow.plotting._common import new_figure

__all__ = ["plot_training_curves", "smooth"]

_REQUIRED = ("phase", "train_bpd")
_SHADES = ("#dce6f2", "#f2e6dc")


def smooth(values: Sequence[float], weight: float = 0.9) -> np.ndarray:
    r"""An exponential moving average that starts without bias (as TensorBoard's smoothing):
    :math:`m_t = w m_{t-1} + (1 - w) v_t` and :math:`s_t = m_t / (1 - w^t)`, skipping
    non-finite values.

    Example:
        >>> smooth([1.0, 3.0, float("nan")], weight=0.5).round(4).tolist()
        [1.0, 2.3333, 2.3333]
    """
    out, mean, norm = [], 0.0, 0.0
    for value in values:
        if math.isfinite(value):
            mean, norm = weight * mean + (1 - weight) * value, weight * norm + (1 - weight)
        out.append(mean / norm if norm else math.nan)
    return np.asarray(out, dtype=float)


def plot_training_curves(
    history: Sequence[Mapping],
    *,
    steps: Sequence[Mapping] = (),
    smoothing: float = 0.8,
    title: str | None = None,
) -> Figure:
    r"""The training loss in bits/dim over the phases, with each epoch's validation bits/dim.

    ``history`` is the concatenation of the lists returned by
    :func:`~pyro_vaeflow.training.fit`, in the order the phases ran: one dict per epoch with
    ``phase``, ``train_bpd`` and optionally ``epoch``, ``val_bpd`` (``None`` when not measured)
    and ``step`` (the phase's steps at the end of the epoch). Each phase — a run of rows with the
    same ``phase`` whose ``epoch`` keeps increasing — is shaded and labelled. The curves are
    broken between phases, since each phase optimises a different bound: e.g. the ``"vae"``
    phase's bits/dim is that of the VAE without its Glow layer. Non-finite values leave gaps.

    With ``steps``, the step rows of a run's ``metrics.jsonl`` (``phase``, ``step``,
    ``train_bpd``: the mean loss of the last few steps; see
    :meth:`~pyro_vaeflow.rundir.RunDir.steps`), the x axis counts training steps: the logged
    losses are drawn faintly with their moving average (:func:`smooth`) over them, and the
    validation bits/dim at the end of each epoch. Without them (or without ``step`` in the
    epoch rows) the x axis counts epochs, one point each.

    Args:
        history: the per-epoch records.
        steps: the per-step records.
        smoothing: the weight of the moving average, in [0, 1).
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
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must lie in [0, 1), got {smoothing!r}")
    by_step = bool(steps) and all(row.get("step") is not None for row in rows)
    fig = new_figure(6.4, 3.8)
    ax = fig.subplots()
    if by_step:
        end = _plot_steps(ax, rows, steps, smoothing)
        ax.set_xlim(0, end)
        ax.set_xlabel("training step (all phases)")
    else:
        _plot_epochs(ax, rows)
        ax.set_xlim(0.5, len(rows) + 0.5)
        ax.set_xlabel("epoch (all phases)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.15)
    ax.set_ylabel("bits/dim")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, frameon=False)
    ax.set_title(title if title is not None else "Training curves")
    return fig


def _shade(ax: Axes, k: int, phase: str, left: float, right: float) -> None:
    ax.axvspan(left, right, color=_SHADES[k % 2], zorder=0, linewidth=0)
    ax.text(
        (left + right) / 2,
        0.98,
        phase,
        transform=ax.get_xaxis_transform(),
        ha="center",
        va="top",
        fontsize="small",
    )


def _plot_epochs(ax: Axes, rows: list[Mapping]) -> None:
    for k, (phase, first, last) in enumerate(_segments(rows)):
        _shade(ax, k, phase, first + 0.5, last + 1.5)
        epochs = list(range(first + 1, last + 2))
        train = [_value(row["train_bpd"]) for row in rows[first : last + 1]]
        val = [_value(row.get("val_bpd")) for row in rows[first : last + 1]]
        ax.plot(epochs, train, "o-", color="C0", markersize=3, label="train" if k == 0 else None)
        if any(math.isfinite(v) for v in val):
            ax.plot(epochs, val, "s--", color="C1", markersize=3, label="validation")


def _plot_steps(ax: Axes, rows: list[Mapping], steps: Sequence[Mapping], smoothing: float) -> float:
    """Draw each phase's logged losses at its steps, offset by the phases before; the end."""
    offset, labelled = 0.0, set()

    def label(name: str) -> str | None:
        first = name not in labelled
        labelled.add(name)
        return name if first else None

    for k, (phase, first, last) in enumerate(_segments(rows)):
        end = offset + rows[last]["step"]
        _shade(ax, k, phase, offset, end)
        logged = [r for r in steps if r["phase"] == phase and r["step"] <= rows[last]["step"]]
        x = [offset + r["step"] for r in logged]
        loss = [_value(r["train_bpd"]) for r in logged]
        if logged:
            ax.plot(x, loss, color="C0", alpha=0.25, linewidth=0.8, label=label("train (logged)"))
            ax.plot(x, smooth(loss, smoothing), color="C0", label=label("train (smoothed)"))
        epochs = rows[first : last + 1]
        val = [_value(row.get("val_bpd")) for row in epochs]
        if any(math.isfinite(v) for v in val):
            x = [offset + row["step"] for row in epochs]
            ax.plot(x, val, "s--", color="C1", markersize=4, label=label("validation (epoch)"))
        offset = end
    return offset


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
