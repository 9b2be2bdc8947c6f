"""Shape checks shared by the image flows."""

from __future__ import annotations

from torch import Tensor

__all__ = ["check_image"]


def check_image(x: Tensor, channels: int, name: str) -> None:
    """Raise a ``ValueError`` unless ``x`` is a batch of images ``[..., channels, H, W]``."""
    if x.dim() < 3 or x.shape[-3] != channels:
        raise ValueError(
            f"{name} expects images of shape [..., {channels}, H, W], got {tuple(x.shape)}"
        )
