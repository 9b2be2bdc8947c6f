r"""A dataset of ``uint8`` images, dequantised afresh on each access."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from pyro_vaeflow.data.dequantization import dequantize

__all__ = ["ImageDataset"]


class ImageDataset(Dataset):
    r"""Holds ``uint8`` pixels ``[N, C, H, W]`` and returns each image dequantised.

    Every access draws new noise (:func:`~pyro_vaeflow.data.dequantize`, from torch's global
    generator), so each epoch sees a new dequantisation of the same pixels. The pixels stay
    ``uint8``: a quarter of the memory of ``float32``.

    Args:
        pixels: ``uint8`` images ``[N, C, H, W]``.
        labels: optional labels ``[N]``; if given, items are ``(image, label)`` pairs.
        n_bits: as for :func:`~pyro_vaeflow.data.dequantize`.

    Example:
        >>> data = ImageDataset(torch.zeros(5, 1, 28, 28, dtype=torch.uint8))
        >>> len(data), data[0].shape, data[0].dtype
        (5, torch.Size([1, 28, 28]), torch.float32)
    """

    def __init__(self, pixels: Tensor, labels: Tensor | None = None, n_bits: int = 8) -> None:
        if pixels.dtype != torch.uint8 or pixels.dim() != 4:
            raise TypeError(
                f"ImageDataset needs uint8 pixels [N, C, H, W], got {pixels.dtype} of shape "
                f"{tuple(pixels.shape)}"
            )
        if labels is not None and labels.shape != pixels.shape[:1]:
            raise ValueError(
                f"labels of shape {tuple(labels.shape)} do not match {len(pixels)} images"
            )
        dequantize(pixels[:0], n_bits)  # checks n_bits
        self.pixels, self.labels, self.n_bits = pixels, labels, n_bits

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, Tensor]:
        x = dequantize(self.pixels[index], self.n_bits)
        return x if self.labels is None else (x, self.labels[index])
