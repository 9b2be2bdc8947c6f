"""Input checks shared by the models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["check_images"]


def check_images(x: Tensor, image_shape: Sequence[int]) -> None:
    """Raise a ``ValueError`` naming the problem unless ``x`` is ``N×C×H×W`` in [0, 1].

    Example:
        >>> check_images(torch.rand(2, 1, 4, 4), (1, 4, 4))
        >>> check_images(torch.rand(2, 1, 4, 5), (1, 4, 4))
        Traceback (most recent call last):
        ...
        ValueError: expected images of shape [N, 1, 4, 4], got (2, 1, 4, 5)
    """
    image_shape = tuple(image_shape)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        kind = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"expected a float tensor of images in [0, 1], got {kind}; dequantise uint8 "
            "pixels first (pyro_vaeflow.data.dequantize)"
        )
    if x.dim() != 4 or tuple(x.shape[1:]) != image_shape:
        expected = ", ".join(map(str, image_shape))
        raise ValueError(f"expected images of shape [N, {expected}], got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"images contain {int((~torch.isfinite(x)).sum())} NaN/Inf pixels")
    low, high = x.min().item(), x.max().item()
    if low < 0.0 or high > 1.0:
        raise ValueError(f"pixel values must lie in [0, 1], got the range [{low:g}, {high:g}]")
