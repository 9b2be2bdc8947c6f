r"""Image grids and saving figures; how every figure of the package is made and sampled.

Figures are built with the object-oriented API (:class:`matplotlib.figure.Figure` with an Agg
canvas), never with ``pyplot``: nothing global in matplotlib is touched, so a user's own backend
and open figures are left alone. Sampling runs under :func:`torch.no_grad` inside
:func:`torch.random.fork_rng`, re-seeded from ``seed``: a figure is reproducible, and the user's
global RNG stream is the same afterwards as before.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torchvision
from matplotlib.figure import Figure
from torch import Tensor

from pyro_vaeflow.files import atomic_write
from pyro_vaeflow.validation import check_int

__all__ = ["image_grid", "save_figure"]


def image_grid(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    r"""Tiles images into one ``3×H'×W'`` grid in [0, 1], for display.

    Pixels are clamped to [0, 1] (model samples may fall outside; NaN shows as 0) and 1-channel
    images are repeated to RGB, as by :func:`torchvision.utils.make_grid`. With ``nrow``
    images per row and ``padding`` pixels around each, an ``N×C×H×W`` batch gives
    :math:`H' = \lceil N / \text{nrow} \rceil (H + p) + p` and
    :math:`W' = \min(N, \text{nrow}) (W + p) + p`.

    Args:
        images: a float tensor ``N×C×H×W`` with :math:`C \in \{1, 3\}`, nominally in [0, 1].
        nrow: images per row.
        padding: pixels between images and around the grid.
        pad_value: the colour of the padding (1: white, which separates dark images).

    Returns:
        A float tensor ``3×H'×W'`` on the CPU.

    Example:
        >>> image_grid(torch.rand(10, 1, 28, 28) * 2 - 0.5, nrow=4).shape
        torch.Size([3, 92, 122])
    """
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.dim() != 4:
        kind = (
            f"a {images.dtype} tensor of shape {tuple(images.shape)}"
            if isinstance(images, Tensor)
            else type(images).__name__
        )
        raise ValueError(f"images must be a float tensor N×C×H×W, got {kind}")
    if images.shape[0] < 1 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must hold at least one image with 1 or 3 channels, got {tuple(images.shape)}"
        )
    check_int("nrow", nrow)
    check_int("padding", padding, low=0)
    pixels = images.detach().float().cpu().nan_to_num(0.0).clamp(0.0, 1.0)
    return torchvision.utils.make_grid(pixels, nrow=nrow, padding=padding, pad_value=pad_value)


def save_figure(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Writes a figure (PNG unless ``path`` names another format) and closes it.

    Missing folders are created; a path without a suffix gets ``.png``. The figures of this
    module belong to no ``pyplot`` window, so they are freed as soon as they are dereferenced;
    a figure made with ``pyplot`` is also closed there.

    Args:
        fig: the figure.
        path: the file to write.
        dpi: dots per inch.

    Returns:
        The path written.

    Example:
        >>> import tempfile
        >>> from matplotlib.figure import Figure
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = save_figure(Figure(), f"{folder}/figures/empty")
        ...     path.name, path.stat().st_size > 0
        ('empty.png', True)
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    check_int("dpi", dpi)
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    fig_format = path.suffix[1:]
    try:
        atomic_write(
            path,
            lambda stream: fig.savefig(stream, format=fig_format, dpi=dpi, bbox_inches="tight"),
        )
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")  # only if the user has imported it
        if pyplot is not None:
            pyplot.close(fig)
    return path
