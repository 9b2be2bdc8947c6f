"""Helpers shared by the figures: argument checks, figure set-up and seeded sampling."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from pyro_vaeflow.validation import check_int


def new_figure(width: float, height: float) -> Figure:
    """A figure on an Agg canvas, with constrained layout, outside ``pyplot``."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def show_grid(ax: Axes, grid: Tensor, title: str | None = None) -> None:
    """Draws an :func:`image_grid` on ``ax`` without ticks or frame."""
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title is not None:
        ax.set_title(title)


def panel_inches(grid: Tensor, height: float) -> float:
    """The width in inches of a panel showing ``grid`` at ``height`` inches."""
    return height * grid.shape[2] / grid.shape[1]


def format_temperature(value: float) -> str:
    """``1.0`` → ``"1.0"``, ``0.35`` → ``"0.35"`` (the shortest exact decimal)."""
    return repr(float(value))


@contextmanager
def sampling(vae: nn.Module, seed: int) -> Iterator[None]:
    """Eval mode, no gradients and a forked, seeded RNG; all restored on exit."""
    check_int("seed", seed, low=0)
    if not isinstance(vae, nn.Module):
        raise TypeError(f"vae must be a VAEFlow (an nn.Module), got {type(vae).__name__}")
    device = next(vae.parameters()).device
    modes = [(module, module.training) for module in vae.modules()]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        reseed(seed, device)
        try:
            with torch.no_grad():
                vae.eval()
                yield
        finally:
            for module, training in modes:
                module.training = training


def reseed(seed: int, device: torch.device) -> None:
    """Seed the CPU generator and, on CUDA, only the generator of ``device``."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
