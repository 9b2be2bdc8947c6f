r"""Mini-batches of dequantised images from pixels, floats or a torch ``Dataset``."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pyro_vaeflow.data import dequantize
from pyro_vaeflow.distributed import shard, world_size

__all__ = ["Batches", "to_model"]


class Batches:
    r"""Shuffled mini-batches of images in [0, 1), dequantised afresh each epoch.

    Args:
        data: ``uint8`` pixels ``[N, C, H, W]`` (dequantised with ``n_bits``), a float tensor
            in [0, 1] (used as it is), or a ``Dataset`` whose items are images or
            ``(image, label)`` pairs.
        batch_size: images per batch.
        n_bits: bits per pixel of the dequantisation.
        shuffle: reshuffle each epoch with ``generator``.
        generator: the generator of the shuffling (its state is checkpointed).
        noise_seed: dequantise with this seed, the same noise at every pass (for validation
            scores that only change with the model); ``None``: fresh noise from torch's global
            generator each time.
        shard: under a :mod:`torch.distributed` process group, yield this rank's contiguous
            share of each global batch (:func:`~pyro_vaeflow.distributed.shard`), dequantised
            after sharding with this rank's noise: the global batch of step :math:`t` is the
            same set of images whatever the number of processes. Without a group, every batch
            is whole.
        drop_short_last: with ``shard``, leave out a final batch with fewer images than
            processes (a training step needs an image on every rank); ``False`` gives some
            ranks an empty share of it instead (validation).
        device: where the batches go. On CUDA the ``uint8`` pixels are copied from pinned
            memory without blocking (a quarter of the bytes of float32 images) and dequantised
            there, with the device's generator (whose state checkpoints keep); with a
            ``noise_seed`` the noise stays the CPU generator's, so validation scores do not
            depend on the device. ``None`` or a CPU: the batches stay where the data is.

    Example:
        >>> batches = Batches(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), batch_size=4)
        >>> [tuple(b.shape) for b in batches]
        [(4, 1, 4, 4), (4, 1, 4, 4), (2, 1, 4, 4)]
    """

    def __init__(
        self,
        data: Tensor | Dataset,
        batch_size: int,
        n_bits: int = 8,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        noise_seed: int | None = None,
        shard: bool = False,
        drop_short_last: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(data, Tensor):
            if data.dtype != torch.uint8 and not data.is_floating_point():
                raise ValueError(f"expected uint8 pixels or floats in [0, 1], got {data.dtype}")
            if data.dim() != 4:
                raise ValueError(f"expected images [N, C, H, W], got shape {tuple(data.shape)}")
        elif not isinstance(data, Dataset):
            raise TypeError(f"data must be a tensor or a torch Dataset, got {type(data).__name__}")
        if len(data) == 0:
            raise ValueError("no training data: the dataset is empty")
        self.data, self.batch_size, self.n_bits, self.shuffle = data, batch_size, n_bits, shuffle
        self.generator = generator or torch.Generator().manual_seed(0)
        self.noise_seed = noise_seed
        self.shard, self.drop_short_last = shard, drop_short_last
        self._noise: torch.Generator | None = None
        self.device = None if device is None else torch.device(device)
        self._to_device = self.device is not None and self.device.type == "cuda"

    def __len__(self) -> int:
        steps = -(-len(self.data) // self.batch_size)
        short = self.shard and self.drop_short_last and self.global_size(steps - 1) < world_size()
        return steps - short

    def global_size(self, step: int) -> int:
        """The number of images of global batch ``step`` (counted from 0), over all ranks."""
        return min(self.batch_size, len(self.data) - step * self.batch_size)

    def _prepare(self, x: Tensor) -> Tensor:
        if isinstance(x, (tuple, list)):
            x = x[0]
        if self.shard:
            x = shard(x)
        if self._to_device and self._noise is None:
            pinned = x.pin_memory() if x.device.type == "cpu" else x  # data may be on the GPU
            x = pinned.to(self.device, non_blocking=True)
        return dequantize(x, self.n_bits, self._noise) if x.dtype == torch.uint8 else x

    def __iter__(self) -> Iterator[Tensor]:
        return self.iterate()

    def iterate(self, start: int = 0) -> Iterator[Tensor]:
        """The batches of one epoch from batch ``start`` on (the batches before it are not
        drawn, but the epoch's order is: a resumed epoch continues the one that stopped)."""
        if self.noise_seed is not None:
            self._noise = torch.Generator().manual_seed(self.noise_seed)
        n = len(self.data)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        if isinstance(self.data, Tensor):
            for step in range(start, len(self)):
                window = slice(step * self.batch_size, (step + 1) * self.batch_size)
                yield self._prepare(
                    self.data[order[window]] if order is not None else self.data[window]
                )
        else:
            first = start * self.batch_size
            sampler = order[first:].tolist() if order is not None else range(first, n)
            # A generator of its own: the loader draws a seed from it (for worker processes),
            # which would otherwise come from torch's global stream and change the training's.
            loader = DataLoader(
                self.data,
                self.batch_size,
                sampler=sampler,
                generator=torch.Generator(),
                pin_memory=self._to_device,  # a Dataset's items are CPU tensors
            )
            for _, batch in zip(range(start, len(self)), loader, strict=False):
                yield self._prepare(batch)


def to_model(x: Tensor, module: torch.nn.Module) -> Tensor:
    """``x`` on the device and in the dtype of ``module``'s parameters.

    Example:
        >>> to_model(torch.zeros(2), torch.nn.Linear(2, 2).double()).dtype
        torch.float64
    """
    reference = next(module.parameters())
    return x.to(device=reference.device, dtype=reference.dtype)
