r"""Space-to-depth as a bijection."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import constraints

from pyro_vaeflow.transforms.base import Flow

__all__ = ["Squeeze2d", "Unsqueeze2d"]


class Squeeze2d(Flow):
    r"""Space-to-depth (base → data): ``[..., C, H, W]`` → ``[..., C f², H/f, W/f]``.

    Each :math:`f \times f` block of pixels becomes :math:`f^2` channels
    (:func:`torch.nn.functional.pixel_unshuffle`). It only permutes coordinates, so
    :math:`\log|\det| = 0`. :class:`Unsqueeze2d` is the opposite map.

    Args:
        factor: the block size :math:`f`.

    Example:
        >>> squeeze = Squeeze2d()
        >>> squeeze(torch.zeros(7, 1, 28, 28)).shape
        torch.Size([7, 4, 14, 14])
        >>> squeeze.inverse_shape(torch.Size([4, 14, 14]))
        torch.Size([1, 28, 28])
    """

    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)

    def __init__(self, factor: int = 2, cache_size: int = 1) -> None:
        super().__init__(cache_size=cache_size)
        if factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        self.factor = factor

    def _squeeze_shape(self, shape: torch.Size) -> torch.Size:
        if len(shape) < 3 or shape[-2] % self.factor or shape[-1] % self.factor:
            raise ValueError(
                f"{type(self).__name__}({self.factor}) needs images [..., C, H, W] with H and W "
                f"divisible by {self.factor}, got {tuple(shape)}"
            )
        c, h, w = shape[-3:]
        return torch.Size((*shape[:-3], c * self.factor**2, h // self.factor, w // self.factor))

    def _unsqueeze_shape(self, shape: torch.Size) -> torch.Size:
        if len(shape) < 3 or shape[-3] % self.factor**2:
            raise ValueError(
                f"{type(self).__name__}({self.factor}) needs images [..., C, H, W] with C "
                f"divisible by {self.factor**2}, got {tuple(shape)}"
            )
        c, h, w = shape[-3:]
        return torch.Size((*shape[:-3], c // self.factor**2, h * self.factor, w * self.factor))

    def _squeeze(self, h: Tensor) -> Tensor:
        self._squeeze_shape(h.shape)
        return F.pixel_unshuffle(h, self.factor)

    def _unsqueeze(self, h: Tensor) -> Tensor:
        self._unsqueeze_shape(h.shape)
        return F.pixel_shuffle(h, self.factor)

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        return self._squeeze_shape(torch.Size(shape))

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        return self._unsqueeze_shape(torch.Size(shape))

    def forward_and_log_det(self, u: Tensor) -> tuple[Tensor, Tensor]:
        return self._squeeze(u), u.new_zeros(u.shape[:-3])

    def inverse_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._unsqueeze(x), x.new_zeros(x.shape[:-3])

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class Unsqueeze2d(Squeeze2d):
    r"""Depth-to-space (base → data): ``[..., C f², H, W]`` → ``[..., C, H f, W f]``.

    The inverse of :class:`Squeeze2d`, as a flow in its own right, so that a composition can
    end with it. :math:`\log|\det| = 0`.

    Example:
        >>> Unsqueeze2d()(torch.zeros(4, 6, 6)).shape
        torch.Size([1, 12, 12])
    """

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        return self._unsqueeze_shape(torch.Size(shape))

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        return self._squeeze_shape(torch.Size(shape))

    def forward_and_log_det(self, u: Tensor) -> tuple[Tensor, Tensor]:
        return self._unsqueeze(u), u.new_zeros(u.shape[:-3])

    def inverse_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._squeeze(x), x.new_zeros(x.shape[:-3])
