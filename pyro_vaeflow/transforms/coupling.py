r"""Glow's channel coupling layers, additive and affine, and its default conditioner."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import constraints

from pyro_vaeflow.transforms.base import Flow
from pyro_vaeflow.transforms.shapes import check_image

__all__ = ["AdditiveCoupling2d", "AffineCoupling2d", "glow_conditioner", "soft_clamp"]


def soft_clamp(h: Tensor, bound: float) -> Tensor:
    r"""A smooth clamp to :math:`(-c, c)`: :math:`c \tanh(h / c)`, the identity near 0."""
    return bound * torch.tanh(h / bound)


def glow_conditioner(in_channels: int, out_channels: int, hidden_channels: int = 512) -> nn.Module:
    """Glow's coupling network: 3x3 conv → ReLU → 1x1 conv → ReLU → 3x3 conv.

    The last convolution starts at zero, so a coupling that uses it starts as the identity.

    Args:
        in_channels: channels of the conditioning half.
        out_channels: channels of the output (the shift, or shift and scale).
        hidden_channels: width of the two hidden layers.

    Example:
        >>> net = glow_conditioner(2, 4, hidden_channels=8)
        >>> net(torch.randn(1, 2, 5, 5)).abs().max().item()
        0.0
    """
    last = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden_channels, hidden_channels, 1),
        nn.ReLU(),
        last,
    )


class _Coupling2d(Flow):
    """Splits the channels into a conditioning half ``a`` and a transformed half ``b``."""

    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)
    out_factor = 1

    def __init__(
        self,
        channels: int,
        hidden_channels: int = 512,
        net: nn.Module | None = None,
        cache_size: int = 1,
    ) -> None:
        super().__init__(cache_size=cache_size)
        if channels < 2:
            raise ValueError(
                f"{type(self).__name__} splits channels and needs at least 2, got {channels}; "
                "squeeze a 1-channel image first (Squeeze2d, or glow(..., squeeze=1))"
            )
        self.channels = channels
        self.split = channels // 2
        out_channels = self.out_factor * (channels - self.split)
        self.net = (
            net if net is not None else glow_conditioner(self.split, out_channels, hidden_channels)
        )

    def _condition(self, h_a: Tensor) -> Tensor:
        batch, image = h_a.shape[:-3], h_a.shape[-3:]
        out = self.net(h_a.reshape(-1, *image))
        return out.reshape(*batch, *out.shape[-3:])

    def _halves(self, h: Tensor) -> tuple[Tensor, Tensor]:
        check_image(h, self.channels, type(self).__name__)
        return h[..., : self.split, :, :], h[..., self.split :, :, :]

    def extra_repr(self) -> str:
        return str(self.channels)


class AdditiveCoupling2d(_Coupling2d):
    r"""Additive (NICE) coupling over channels, volume preserving.

    With :math:`x = (x_a, x_b)` split along channels and :math:`t` the conditioner,

    .. math:: u_a = x_a,\quad u_b = x_b + t(x_a) \quad(\text{data} \to \text{base}),
              \qquad \log\left|\det \frac{\partial x}{\partial u}\right| = 0 .

    Args:
        channels: number of channels :math:`C \ge 2`; :math:`x_a` has :math:`\lfloor C/2 \rfloor`.
        hidden_channels: width of the default conditioner (:func:`glow_conditioner`).
        net: a custom conditioner mapping ``[N, C//2, H, W]`` to ``[N, C - C//2, H, W]``.
        cache_size: see :class:`~pyro_vaeflow.transforms.Flow`.

    Example:
        >>> coupling = AdditiveCoupling2d(4, hidden_channels=16)
        >>> x = torch.randn(3, 4, 6, 6)
        >>> torch.equal(coupling.inv(x), x)  # a new coupling is the identity
        True
    """

    def forward_and_log_det(self, u: Tensor) -> tuple[Tensor, Tensor]:
        u_a, u_b = self._halves(u)
        x = torch.cat([u_a, u_b - self._condition(u_a)], dim=-3)
        return x, u.new_zeros(u.shape[:-3])

    def inverse_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = self._halves(x)
        u = torch.cat([x_a, x_b + self._condition(x_a)], dim=-3)
        return u, x.new_zeros(x.shape[:-3])


class AffineCoupling2d(_Coupling2d):
    r"""Glow's affine coupling over channels, with a bounded scale.

    The conditioner returns :math:`(h, t)` from :math:`x_a`, and

    .. math:: \log s = c \tanh(h / c), \qquad
              u_b = (x_b + t)\odot s \quad(\text{data} \to \text{base}), \qquad
              \log\left|\det \frac{\partial x}{\partial u}\right| = -\sum \log s .

    The scale lies in :math:`(e^{-c}, e^{c})`, so both directions stay finite and invertible in
    float32, and a zero-initialised conditioner gives exactly the identity. (Glow's
    :math:`s = \sigma(h + 2)` is neither: it is 0.88 at :math:`h = 0` and can reach 0.)

    Args:
        channels: number of channels :math:`C \ge 2`; :math:`x_a` has :math:`\lfloor C/2 \rfloor`.
        hidden_channels: width of the default conditioner (:func:`glow_conditioner`).
        net: a custom conditioner mapping ``[N, C//2, H, W]`` to ``[N, 2(C - C//2), H, W]``
            (first the pre-scale :math:`h`, then the shift :math:`t`).
        scale_bound: :math:`c`.
        cache_size: see :class:`~pyro_vaeflow.transforms.Flow`.

    Example:
        >>> coupling = AffineCoupling2d(4, hidden_channels=16)
        >>> x = torch.randn(3, 4, 6, 6)
        >>> u, log_det = coupling.inverse_and_log_det(x)
        >>> torch.equal(u, x), log_det.abs().max().item()
        (True, 0.0)
    """

    out_factor = 2

    def __init__(
        self,
        channels: int,
        hidden_channels: int = 512,
        net: nn.Module | None = None,
        scale_bound: float = 3.0,
        cache_size: int = 1,
    ) -> None:
        super().__init__(channels, hidden_channels, net, cache_size)
        self.scale_bound = scale_bound

    def _scale_shift(self, h_a: Tensor) -> tuple[Tensor, Tensor]:
        pre_scale, shift = self._condition(h_a).chunk(2, dim=-3)
        return soft_clamp(pre_scale, self.scale_bound), shift

    def forward_and_log_det(self, u: Tensor) -> tuple[Tensor, Tensor]:
        u_a, u_b = self._halves(u)
        log_s, shift = self._scale_shift(u_a)
        x = torch.cat([u_a, u_b * torch.exp(-log_s) - shift], dim=-3)
        return x, -log_s.sum(dim=(-3, -2, -1))

    def inverse_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = self._halves(x)
        log_s, shift = self._scale_shift(x_a)
        u = torch.cat([x_a, (x_b + shift) * torch.exp(log_s)], dim=-3)
        return u, -log_s.sum(dim=(-3, -2, -1))
