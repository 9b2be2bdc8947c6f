r"""Argument checks shared by the whole package: each raises a ``ValueError`` that names the
argument, what it must be and what it got.

Example:
    >>> check_int("depth", 3, low=1)
    3
    >>> check_int("depth", True)
    Traceback (most recent call last):
    ...
    ValueError: depth must be an integer >= 1, got True
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import torch
from torch import Tensor

__all__ = [
    "check_choice",
    "check_image_shape",
    "check_images",
    "check_int",
    "check_number",
]


def check_int(name: str, value: int, low: int = 1, high: int | None = None) -> int:
    """``value`` if it is an integer (not a bool) in ``[low, high]``; else a ``ValueError``.

    Example:
        >>> check_int("n_bits", 9, low=1, high=8)
        Traceback (most recent call last):
        ...
        ValueError: n_bits must be an integer in 1..8, got 9
    """
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return value


def check_number(name: str, value: float, low: float = -math.inf, strict: bool = False) -> float:
    """``value`` as a float if it is a finite real number ``>= low`` (``> low`` if ``strict``).

    Example:
        >>> check_number("min_scale", 0.0, low=0.0, strict=True)
        Traceback (most recent call last):
        ...
        ValueError: min_scale must be a finite number > 0.0, got 0.0
    """
    is_real = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_real or not math.isfinite(value) or value < low or (strict and value == low):
        bound = "" if low == -math.inf else (" > " if strict else " >= ") + repr(float(low))
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def check_choice(name: str, value: str, choices: Collection[str]) -> str:
    """``value`` if it is one of ``choices``.

    Example:
        >>> check_choice("prior", "gaussian", ("flow", "normal"))
        Traceback (most recent call last):
        ...
        ValueError: prior must be one of ('flow', 'normal'), got 'gaussian'
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """``image_shape`` as a tuple ``(C, H, W)`` of positive integers.

    Example:
        >>> check_image_shape([1, 28, 28])
        (1, 28, 28)
    """
    try:
        shape = tuple(int(size) for size in image_shape)
    except (TypeError, ValueError):
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W), got {shape}")
    return shape


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
