r"""Dynamic binarisation: each pixel drawn afresh as Bernoulli(pixel / 255) at every pass.

The binarised-MNIST benchmarks of VLAE (Burda et al.'s "dynamically binarised" setting) draw
new binary images at every epoch instead of thresholding once. :func:`binarize` draws one batch;
:class:`DynamicallyBinarized` wraps ``uint8`` pixels as a ``Dataset`` whose items are drawn
afresh at every access, so that :func:`~pyro_vaeflow.training.fit` (through its
:class:`~pyro_vaeflow.training.batches.Batches`) sees new images every epoch. Its items are
floats in :math:`\{0, 1\}`, which ``Batches`` uses as they are: no dequantisation noise is added
to binary data. Pass ``n_bits=1`` to ``fit`` so that its bits/dim are those of binary data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["DynamicallyBinarized", "binarize"]


def _probabilities(pixels: Tensor, dtype: torch.dtype) -> Tensor:
    if not isinstance(pixels, Tensor):
        raise TypeError(f"pixels must be a tensor, got {type(pixels).__name__}")
    if pixels.dtype == torch.uint8:
        return pixels.to(dtype) / 255.0
    if not pixels.is_floating_point():
        raise TypeError(f"pixels must be uint8 (0..255) or floats in [0, 1], got {pixels.dtype}")
    if not torch.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
        raise ValueError("float pixels must be probabilities in [0, 1]")
    return pixels.to(dtype)


def binarize(
    pixels: Tensor,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Binary images :math:`b \sim \text{Bernoulli}(p / 255)`, drawn afresh at each call.

    Args:
        pixels: ``uint8`` pixels (any shape), or floats in :math:`[0, 1]` taken as the
            probabilities themselves.
        generator: the random generator; torch's global one if ``None``.
        dtype: the floating dtype of the result; torch's default if ``None``.

    Returns:
        Floats in :math:`\{0, 1\}`, of ``pixels``' shape.

    Raises:
        TypeError: for other dtypes.
        ValueError: for float pixels outside :math:`[0, 1]`.

    Example:
        >>> pixels = torch.tensor([0, 255, 128], dtype=torch.uint8)
        >>> b = binarize(pixels.expand(1000, 3), torch.Generator().manual_seed(0))
        >>> b[:, :2].unique().tolist(), b[:, :2].mean(0).tolist(), round(b[:, 2].mean().item(), 1)
        ([0.0, 1.0], [0.0, 1.0], 0.5)
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    probs = _probabilities(pixels, dtype)
    noise = torch.rand(probs.shape, generator=generator, dtype=dtype, device=probs.device)
    return (noise < probs).to(dtype)


class DynamicallyBinarized(Dataset):
    r"""``uint8`` images whose items are binarised afresh at every access.

    Item ``i`` is :func:`binarize` of ``pixels[i]``; a batched access (``__getitems__``, used by
    torch's ``DataLoader``) binarises the whole batch at once. With a ``generator`` the stream
    of draws is reproducible; every epoch still gets new images, as the generator advances.

    Args:
        pixels: ``uint8`` images ``[N, C, H, W]``.
        generator: the random generator of the draws; torch's global one if ``None``.
        dtype: the floating dtype of the items; torch's default if ``None``.

    Example:
        >>> pixels = torch.full((4, 1, 2, 2), 128, dtype=torch.uint8)
        >>> data = DynamicallyBinarized(pixels, torch.Generator().manual_seed(0))
        >>> len(data), data[0].shape, sorted(set(data[0].flatten().tolist()) | {0.0, 1.0})
        (4, torch.Size([1, 2, 2]), [0.0, 1.0])
    """

    def __init__(
        self,
        pixels: Tensor,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not isinstance(pixels, Tensor) or pixels.dtype != torch.uint8 or pixels.dim() != 4:
            found = (
                f"{pixels.dtype} of shape {tuple(pixels.shape)}"
                if isinstance(pixels, Tensor)
                else type(pixels).__name__
            )
            raise ValueError(f"expected uint8 images [N, C, H, W], got {found}")
        self.pixels = pixels
        self.generator = generator
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> Tensor:
        return binarize(self.pixels[index], self.generator, self.dtype)

    def __getitems__(self, indices: Sequence[int]) -> list[Tensor]:
        batch = binarize(self.pixels[torch.as_tensor(indices)], self.generator, self.dtype)
        return list(batch.unbind(0))
