r"""Uniform dequantisation of ``uint8`` pixels, and its inverse."""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_vaeflow.validation import check_int

__all__ = ["dequantize", "quantize"]


def _check_bits(n_bits: int) -> None:
    check_int("n_bits", n_bits, low=1, high=8)


def dequantize(
    pixels: Tensor,
    n_bits: int = 8,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Uniform dequantisation: ``uint8`` pixels → continuous :math:`x \in [0, 1)`.

    .. math:: k = \lfloor p / 2^{8 - n} \rfloor, \qquad
              x = \frac{k + u}{2^n}, \qquad u \sim \mathcal{U}[0, 1),

    for a pixel :math:`p \in \{0, \dots, 255\}` kept to :math:`n` bits. Each level :math:`k`
    owns the interval :math:`[k, k + 1) / 2^n`, and :math:`\lfloor 2^n x \rfloor = k` holds
    exactly, in any floating dtype. A density :math:`p(x)` on :math:`[0, 1)^D` therefore
    bounds the discrete model: :math:`\log P(k) \ge \mathbb{E}_u \log p(x) - D\, n \log 2`.

    Args:
        pixels: ``uint8`` pixels, any shape.
        n_bits: the bits kept per pixel, 1 to 8.
        generator: the random generator for :math:`u`; the global one if ``None``.
        dtype: the floating dtype of the result; torch's default if ``None``.

    Raises:
        TypeError: if ``pixels`` is not ``uint8``.
        ValueError: if ``n_bits`` is not in 1..8.

    Example:
        >>> pixels = torch.tensor([0, 7, 255], dtype=torch.uint8)
        >>> x = dequantize(pixels)
        >>> bool((x >= 0).all() and (x < 1).all()), (x * 256).floor().long().tolist()
        (True, [0, 7, 255])
        >>> (dequantize(pixels, n_bits=5) * 32).floor().long().tolist()
        [0, 0, 31]
    """
    if not isinstance(pixels, Tensor) or pixels.dtype != torch.uint8:
        found = pixels.dtype if isinstance(pixels, Tensor) else type(pixels).__name__
        raise TypeError(f"dequantize needs uint8 pixels in 0..255, got {found}")
    _check_bits(n_bits)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    levels = (pixels >> (8 - n_bits)).to(dtype)
    u = torch.rand(pixels.shape, generator=generator, dtype=dtype, device=pixels.device)
    bins = 2.0**n_bits
    x = (levels + u) / bins
    # Rounding can carry k + u up to k + 1: keep x strictly below its level's upper edge.
    top = torch.nextafter((levels + 1) / bins, torch.zeros((), dtype=dtype, device=x.device))
    return torch.minimum(x, top)


def quantize(x: Tensor, n_bits: int = 8) -> Tensor:
    r"""The inverse of :func:`dequantize`: :math:`x` → ``uint8`` pixels in 0..255.

    .. math:: k = \operatorname{clamp}(\lfloor 2^n x \rfloor, 0, 2^n - 1), \qquad
              p = 2^{8 - n} k .

    Values outside :math:`[0, 1)` (e.g. model samples) are clamped. For ``n_bits = 8`` this
    undoes :func:`dequantize` exactly; for fewer bits it returns each level's lowest pixel.

    Args:
        x: a floating tensor, any shape.
        n_bits: as for :func:`dequantize`.

    Example:
        >>> pixels = torch.tensor([0, 7, 200, 255], dtype=torch.uint8)
        >>> torch.equal(quantize(dequantize(pixels)), pixels)
        True
        >>> quantize(dequantize(pixels, n_bits=5), n_bits=5).tolist()
        [0, 0, 200, 248]
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        found = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"quantize needs a floating tensor, got {found}")
    _check_bits(n_bits)
    levels = (x.detach() * 2.0**n_bits).floor().clamp(0, 2**n_bits - 1)
    return (levels.to(torch.uint8)) << (8 - n_bits)
