r"""Glow's channel coupling layers, additive and affine, and its default conditioner."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import constraints

from pyro_vaeflow.nets.precision import MixedPrecision
from pyro_vaeflow.transforms.base import Flow
from pyro_vaeflow.transforms.shapes import check_image, with_channels

__all__ = [
    "AdditiveCoupling2d",
    "AffineCoupling2d",
    "GlowConditioner",
    "glow_conditioner",
    "soft_clamp",
]


def soft_clamp(h: Tensor, bound: float) -> Tensor:
    r"""A smooth clamp to :math:`(-c, c)`: :math:`c \tanh(h / c)`, the identity near 0."""
    return bound * torch.tanh(h / bound)


def glow_conditioner(in_channels: int, out_channels: int, hidden_channels: int = 512) -> nn.Module:
    """Glow's coupling network: 3x3 conv → ReLU → 1x1 conv → ReLU → 3x3 conv.

    The last convolution starts at zero, so a coupling that uses it starts as the identity. On
    the CPU it runs as matrix products (see :class:`GlowConditioner`).

    Args:
        in_channels: channels of the conditioning half.
        out_channels: channels of the output (the shift, or shift and scale).
        hidden_channels: width of the two hidden layers.

    Example:
        >>> net = glow_conditioner(2, 4, hidden_channels=8)
        >>> net(torch.randn(1, 2, 5, 5)).abs().max().item()
        0.0
    """
    return GlowConditioner(in_channels, out_channels, hidden_channels)


class GlowConditioner(nn.Sequential, MixedPrecision):
    r"""Glow's coupling network, ``Sequential(Conv2d 3x3, ReLU, Conv2d 1x1, ReLU, Conv2d 3x3)``.

    The layers, parameters and state-dict keys (``0.weight`` … ``4.bias``) are those of a plain
    ``nn.Sequential``; only the CPU forward pass differs. On the CPU a batch ``[N, C, H, W]``
    runs as three matrix products over its pixels, with the same weights viewed as matrices and
    the hidden activations kept as contiguous ``[N, H, W, hidden]`` tensors (``[N·H·W, hidden]``
    matrices, on which ReLU and its backward run several times faster than on a permuted
    view):

    * the first 3x3 convolution: im2col (``F.unfold``: :math:`9C` values a pixel, few, since
      :math:`C` is the conditioning half), then ``F.linear``;
    * the 1x1 convolution: ``F.linear`` with the ``[out, in, 1, 1]`` weight viewed as a matrix;
    * the last 3x3 convolution: ``F.linear`` gives the contribution of each pixel to each of
      the 9 outputs around it (:math:`9 \times` ``out_channels`` values a pixel, with the
      kernel flipped), and col2im (``F.fold``) sums them into ``[N, out_channels, H, W]``.

    This is the same convolution with the sums in another order: in float64 the outputs and
    every gradient agree with the ``conv2d`` path to ~1e-15 relative
    (``tests/test_conditioner_speed_paths.py``).

    Why: oneDNN's NCHW ``conv2d`` reorders its input and output to a blocked layout and is
    inefficient on the thin convolutions (2 → 128 and 128 → 4 channels). Measured forward and
    backward at batch 64, interleaved against the ``conv2d`` ``Sequential`` with the same
    weights, on 2 cores of an AMD EPYC (Zen 4), torch 2.14, 1 thread (2 other jobs running, so
    the ratios vary from run to run): 1.3–1.85x as fast at 2 → 128 → 4 channels on 14×14 and
    1.1–1.65x at 4 → 128 → 8 on 7×7 (the two levels of ``Glow((1, 28, 28), levels=2,
    hidden_channels=128)``), 1.2–1.5x at 2 → 512 → 4 on 14×14 and at 6 → 512 → 12 on 16×16,
    1.0–1.1x at 12 → 512 → 24 on 8×8. That Glow's training step (log-likelihood, backward,
    Adam) became 1.25x as fast (1.13–1.31x over runs). Tried and not used, at 2 → 128 → 4 on
    14×14: the whole network in ``channels_last`` with ``conv2d``, 1.2–1.5x; only the 1x1 as a
    ``bmm`` in NCHW, 0.9–1.1x; the wide last convolution as ``unfold`` and a product, 0.3x;
    ReLU in place, 0.85x of this; a hand-written autograd function fusing the ReLU backward
    into the products, 1.05x on the step (not worth losing double backward).

    On other devices (CUDA keeps cuDNN's convolutions), for an input that is not a batch of
    images, once a layer has been replaced, reconfigured or given hooks, or under
    ``torch.compile`` (whose convolutions beat these products: 1.17–1.32x on the step above, at
    2 → 64 → 4, 2 → 128 → 4 on 14×14 and 6 → 512 → 12 on 16×16, 1 thread), the forward pass is
    ``nn.Sequential``'s. With ``compute_dtype`` set
    (:class:`~pyro_vaeflow.nets.precision.MixedPrecision`) the layers run in that precision and
    the output is cast back to the input's dtype.

    Args:
        in_channels: channels of the conditioning half.
        out_channels: channels of the output.
        hidden_channels: width of the two hidden layers.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int = 512) -> None:
        last = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        super().__init__(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 1),
            nn.ReLU(),
            last,
        )

    def forward(self, x: Tensor) -> Tensor:
        with self.autocast(x):
            out = self._forward_matmul(x) if self._use_matmul(x) else super().forward(x)
        return out.to(x.dtype)

    def _use_matmul(self, x: Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dim() == 4
            and not torch.compiler.is_compiling()
            and self._is_plain_glow()
        )

    def _is_plain_glow(self) -> bool:
        """Whether the layers are still Glow's, so that the matrix products compute them."""
        if len(self) != 5 or any(m._forward_hooks or m._forward_pre_hooks for m in self):
            return False
        first, relu1, middle, relu2, last = self
        if type(relu1) is not nn.ReLU or type(relu2) is not nn.ReLU:
            return False
        convs = ((first, 3, 1), (middle, 1, 0), (last, 3, 1))
        return all(
            type(conv) is nn.Conv2d
            and conv.kernel_size == (size, size)
            and conv.padding == (padding, padding)
            and conv.stride == (1, 1)
            and conv.dilation == (1, 1)
            and conv.groups == 1
            and conv.padding_mode == "zeros"
            for conv, size, padding in convs
        )

    def _forward_matmul(self, x: Tensor) -> Tensor:
        """The forward pass as matrix products over the pixels (see the class)."""
        first, _, middle, _, last = self
        height, width = x.shape[-2:]
        # [N, C_in·3·3, HW] → a row of 3x3 patch values a pixel, [N, H, W, C_in·3·3].
        patches = F.unfold(x, 3, padding=1).transpose(1, 2).unflatten(1, (height, width))
        # The hidden activations stay contiguous [N, H, W, hidden] matrices: ReLU and its
        # backward on a permuted view are several times slower.
        h = F.relu(F.linear(patches, first.weight.flatten(1), first.bias))
        h = F.relu(F.linear(h, middle.weight.flatten(1), middle.bias))
        # Pixel p adds W[:, :, 1 - i, 1 - j] h_p to the output at p + (i, j), i, j ∈ {-1, 0, 1};
        # fold sums these contributions, given as [N, C_out·3·3, HW] ordered (channel, i, j).
        spread = last.weight.flip(-2, -1).permute(0, 2, 3, 1).flatten(0, 2)
        contributions = F.linear(h, spread).flatten(1, 2).transpose(1, 2)
        out = F.fold(contributions, (height, width), 3, padding=1)
        return out if last.bias is None else out + last.bias[:, None, None]


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

    def expected_shape(self, shape: torch.Size) -> torch.Size:
        return with_channels(shape, self.channels)

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
