r"""A seeded train/validation split, for early stopping."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

__all__ = ["train_val_split"]


def train_val_split(
    data: Tensor | Dataset, val_fraction: float = 0.1, seed: int = 0
) -> tuple[Tensor | Subset, Tensor | Subset]:
    r"""Splits ``data`` at random into disjoint training and validation parts.

    The split depends only on ``len(data)``, ``val_fraction`` and ``seed`` (torch's CPU
    generator), so the images and the labels of a dataset split alike. The validation part
    has :math:`\operatorname{round}(f N)` items; both parts keep the original order.

    Args:
        data: a tensor (split along its first dimension) or a map-style dataset.
        val_fraction: the fraction :math:`f` held out, in :math:`(0, 1)`.
        seed: the seed of the permutation.

    Returns:
        ``(train, val)``: tensors for a tensor, :class:`~torch.utils.data.Subset`\ s otherwise.

    Example:
        >>> train, val = train_val_split(torch.arange(10), val_fraction=0.2, seed=0)
        >>> len(train), len(val), sorted(train.tolist() + val.tolist()) == list(range(10))
        (8, 2, True)
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    n = len(data)
    n_val = round(val_fraction * n)
    if not 0 < n_val < n:
        raise ValueError(
            f"val_fraction={val_fraction} of {n} items leaves an empty training or validation set"
        )
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = permutation[:n_val].sort().values, permutation[n_val:].sort().values
    if isinstance(data, Tensor):
        return data[train], data[val]
    return Subset(data, train.tolist()), Subset(data, val.tolist())
