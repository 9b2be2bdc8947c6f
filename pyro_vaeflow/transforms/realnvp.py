r"""Real NVP affine couplings on vectors, for the flow prior."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.nn import DenseNN
from torch import Tensor, nn
from torch.distributions import constraints

from pyro_vaeflow.transforms.base import ComposeFlow, Flow
from pyro_vaeflow.transforms.coupling import soft_clamp
from pyro_vaeflow.transforms.shapes import with_last

__all__ = ["AffineCoupling1d", "realnvp"]


class AffineCoupling1d(Flow):
    r"""A Real NVP affine coupling on vectors, with a soft-clamped log-scale.

    The vector splits into :math:`x_a` (the first :math:`\lfloor D/2 \rfloor` coordinates, or
    the last ones when ``reverse=True``) and :math:`x_b`. A ReLU MLP (Pyro's
    :class:`~pyro.nn.DenseNN`) gives :math:`(h, t) = \mathrm{NN}(x_a)` and

    .. math:: \log s = c \tanh(h / c), \qquad
              u_b = (x_b + t) \odot s \quad(\text{data} \to \text{base}), \qquad
              \log\left|\det \frac{\partial x}{\partial u}\right| = -\sum \log s,

    so each scale stays within :math:`(e^{-c}, e^{c})`. The last layer starts at zero, so the
    coupling starts as the identity.

    Args:
        dim: the vector size :math:`D \ge 2`.
        hidden_dims: widths of the MLP's hidden layers.
        reverse: which half conditions the other.
        scale_bound: :math:`c`.
        cache_size: see :class:`~pyro_vaeflow.transforms.Flow`.

    Example:
        >>> coupling = AffineCoupling1d(4, hidden_dims=(8, 8))
        >>> torch.equal(coupling(torch.ones(2, 4)), torch.ones(2, 4))
        True
    """

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)

    def __init__(
        self,
        dim: int,
        hidden_dims: Sequence[int] = (1024, 1024),
        reverse: bool = False,
        scale_bound: float = 3.0,
        cache_size: int = 1,
    ) -> None:
        super().__init__(cache_size=cache_size)
        if dim < 2:
            raise ValueError(f"AffineCoupling1d splits the vector and needs dim >= 2, got {dim}")
        self.dim = dim
        self.reverse = reverse
        self.scale_bound = scale_bound
        conditioning = dim // 2
        transformed = dim - conditioning
        self.split = transformed if reverse else conditioning
        self.net = DenseNN(conditioning, list(hidden_dims), param_dims=[transformed, transformed])
        nn.init.zeros_(self.net.layers[-1].weight)
        nn.init.zeros_(self.net.layers[-1].bias)

    def _halves(self, h: Tensor) -> tuple[Tensor, Tensor]:
        if h.dim() < 1 or h.shape[-1] != self.dim:
            raise ValueError(f"AffineCoupling1d expects [..., {self.dim}], got {tuple(h.shape)}")
        first, second = h[..., : self.split], h[..., self.split :]
        return (second, first) if self.reverse else (first, second)

    def _join(self, h_a: Tensor, h_b: Tensor) -> Tensor:
        return torch.cat([h_b, h_a] if self.reverse else [h_a, h_b], dim=-1)

    def _scale_shift(self, h_a: Tensor) -> tuple[Tensor, Tensor]:
        # A contiguous copy: the half is a view at offset 0 or ``split``, and a compiled network
        # would be specialised (and recompiled) on that offset.
        pre_scale, shift = self.net(h_a.contiguous())
        return soft_clamp(pre_scale, self.scale_bound), shift

    def forward_and_log_det(self, u: Tensor) -> tuple[Tensor, Tensor]:
        u_a, u_b = self._halves(u)
        log_s, shift = self._scale_shift(u_a)
        return self._join(u_a, u_b * torch.exp(-log_s) - shift), -log_s.sum(-1)

    def inverse_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = self._halves(x)
        log_s, shift = self._scale_shift(x_a)
        return self._join(x_a, (x_b + shift) * torch.exp(log_s)), -log_s.sum(-1)

    def expected_shape(self, shape: torch.Size) -> torch.Size:
        return with_last(shape, self.dim)

    def extra_repr(self) -> str:
        return f"{self.dim}, reverse={self.reverse}"


def realnvp(
    dim: int,
    num_layers: int = 16,
    hidden_dims: Sequence[int] = (1024, 1024),
    cache_size: int = 1,
) -> ComposeFlow:
    r"""The paper's flow prior: ``num_layers`` Real NVP couplings with alternating halves.

    Each layer is an :class:`AffineCoupling1d` whose conditioner has two fully connected ReLU
    layers (``hidden_dims``); consecutive layers swap which half conditions the other, and the
    whole flow starts as the identity. The log-determinant is the sum of the layers'.

    Args:
        dim: the latent size.
        num_layers: the number of couplings (16 in the paper).
        hidden_dims: the hidden widths of each conditioner ((1024, 1024) in the paper).
        cache_size: 1 to cache the last ``(u, x)`` pair and its log-determinant, 0 not to (see
            :class:`~pyro_vaeflow.transforms.Flow`).

    Example:
        >>> flow = realnvp(6, num_layers=4, hidden_dims=(32, 32))
        >>> z = torch.randn(10, 6)
        >>> torch.equal(flow(z), z)
        True
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    return ComposeFlow(
        [AffineCoupling1d(dim, hidden_dims, reverse=i % 2 == 1) for i in range(num_layers)],
        cache_size=cache_size,
    )
