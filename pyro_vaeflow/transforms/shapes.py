"""Shape checks shared by the image flows."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_image", "with_channels", "with_last"]


def check_image(x: Tensor, channels: int, name: str) -> None:
    """Raise a ``ValueError`` unless ``x`` is a batch of images ``[..., channels, H, W]``."""
    if x.dim() < 3 or x.shape[-3] != channels:
        raise ValueError(
            f"{name} expects images of shape [..., {channels}, H, W], got {tuple(x.shape)}"
        )


def with_channels(shape: torch.Size, channels: int) -> torch.Size:
    """``shape`` (``[..., C, H, W]``) with ``channels`` channels: what an image flow expects."""
    shape = torch.Size(shape)
    return shape if len(shape) < 3 else torch.Size((*shape[:-3], channels, *shape[-2:]))


def with_last(shape: torch.Size, size: int) -> torch.Size:
    """``shape`` with its last dimension ``size``: what a vector flow of that size expects."""
    shape = torch.Size(shape)
    return torch.Size((*shape[:-1], size))
