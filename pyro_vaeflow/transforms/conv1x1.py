r"""Glow's invertible 1x1 convolution with the LU parameterisation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import constraints

from pyro_vaeflow.transforms.base import Flow, VersionedCache
from pyro_vaeflow.transforms.shapes import check_image, with_channels

__all__ = ["InvConv1x1"]


def mix_channels(h: Tensor, weight: Tensor) -> Tensor:
    r"""Apply ``weight`` (:math:`C \times C`) to the channels of every pixel of ``h``.

    ``h`` has shape ``[..., C, H, W]`` with any number of batch dimensions, or none; the result
    has the same shape. The strategy depends on :math:`C`, from the CPU timings of
    ``benchmarks/bench_conv1x1.py`` (see ``docs/benchmarks.md``):

    * :math:`C < 48`: one ``bmm`` of ``weight``, expanded over the images without a copy, by
      each image flattened to :math:`C \times HW`. With a gradient it is several times faster
      than ``torch.matmul``'s broadcast, which copies the input, the output and the gradient to
      fold the batch into one ``mm``; an NCHW ``conv2d`` is slower at these sizes. The gradient
      coming back is made contiguous first: for one with zero strides, which ``out.sum()`` sends,
      ``bmm``'s backward would run one small ``mm`` per image.
    * :math:`C \ge 48` on CPU: a 1x1 ``conv2d`` (oneDNN), faster there as long as the memory
      allocator reuses its buffers; ``bmm``'s time is steadier. On CUDA it is always ``bmm``,
      since cuDNN's TF32 convolutions would make :math:`W^{-1}` after :math:`W` inexact.

    Neither materialises a :math:`B \times C \times C \times H \times W` product.
    """
    *batch, channels, height, width = h.shape
    images = math.prod(batch)
    if channels >= 48 and h.numel() > 0 and h.device.type == "cpu":
        kernel = weight[:, :, None, None]
        out = F.conv2d(h.reshape(images, channels, height, width), kernel)
    else:
        flat = h.reshape(images, channels, height * width)
        out = torch.bmm(weight.expand(images, channels, channels), flat)
        if out.requires_grad:  # see above: keep bmm's backward batched
            out.register_hook(lambda grad: None if grad is None else grad.contiguous())
    return out.reshape(h.shape)


class InvConv1x1(Flow):
    r"""An invertible 1x1 convolution, :math:`u_{:,i,j} = W x_{:,i,j}` (data → base).

    :math:`W` is parameterised by its LU decomposition (Kingma & Dhariwal, 2018, eq. 10),

    .. math:: W = P L \left(U + \operatorname{diag}(\sigma \odot e^{\ell})\right),

    with :math:`P` a fixed permutation, :math:`L` unit lower triangular, :math:`U` strictly
    upper triangular, :math:`\sigma` fixed signs and :math:`\ell` = ``log_s``. The data → base
    map has :math:`\log|\det| = HW\sum_c \ell_c`, so the base → data map :math:`x = W^{-1}u`
    used for sampling has

    .. math:: \log\left|\det \frac{\partial x}{\partial u}\right| = -H W \sum_c \ell_c .

    :math:`W^{-1}` is computed by triangular solves and cached until a parameter changes.

    Args:
        channels: the number of channels :math:`C`.
        init: ``"rotation"`` (a random rotation, Glow's) or ``"identity"``.
        cache_size: see :class:`~pyro_vaeflow.transforms.Flow`.

    Example:
        >>> conv = InvConv1x1(4)
        >>> x = torch.randn(2, 4, 3, 3)
        >>> torch.allclose(conv(conv.inv(x)), x, atol=1e-5)
        True
    """

    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)

    def __init__(self, channels: int, init: str = "rotation", cache_size: int = 1) -> None:
        super().__init__(cache_size=cache_size)
        if init not in ("rotation", "identity"):
            raise ValueError(f'init must be "rotation" or "identity", got {init!r}')
        self.channels = channels
        if init == "rotation":
            rotation = torch.linalg.qr(torch.randn(channels, channels))[0]
            permutation, lower, upper = torch.linalg.lu(rotation)
            diagonal = upper.diagonal()
        else:
            permutation = lower = torch.eye(channels)
            upper, diagonal = torch.zeros(channels, channels), torch.ones(channels)
        self.register_buffer("permutation", permutation)
        self.register_buffer("diag_sign", diagonal.sign())
        self.register_buffer("lower_mask", torch.ones(channels, channels).tril(-1))
        self.lower = nn.Parameter(lower.tril(-1).clone())
        self.upper = nn.Parameter(upper.triu(1).clone())
        self.log_s = nn.Parameter(diagonal.abs().log())
        self._inverse_cache = VersionedCache(self)

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.diag_sign * self.log_s.exp())
        return lower, upper

    def weight(self) -> Tensor:
        r"""The matrix :math:`W` of the data → base map."""
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def inverse_weight(self) -> Tensor:
        r"""The matrix :math:`W^{-1} = U^{-1} L^{-1} P^\top` of the base → data map.

        It is cached until a parameter changes, but only when it carries no autograd graph
        (gradients off, or the parameters frozen), so that two outputs never share a graph that
        one backward pass could free. With ``cache_size=0`` it is never cached.
        """
        cached = self._inverse_cache.get() if self._cache_size else None
        if cached is not None:
            return cached[0]
        lower, upper = self._factors()
        eye = torch.eye(self.channels, dtype=lower.dtype, device=lower.device)
        lower_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        inverse = torch.linalg.solve_triangular(upper, lower_inv @ self.permutation.T, upper=True)
        if self._cache_size and not inverse.requires_grad:
            self._inverse_cache.put(inverse)
        return inverse

    def _log_det(self, h: Tensor) -> Tensor:
        height, width = h.shape[-2:]
        return (-height * width * self.log_s.sum()).expand(h.shape[:-3])

    def forward_and_log_det(self, u: Tensor) -> tuple[Tensor, Tensor]:
        check_image(u, self.channels, type(self).__name__)
        return mix_channels(u, self.inverse_weight()), self._log_det(u)

    def inverse_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_image(x, self.channels, type(self).__name__)
        return mix_channels(x, self.weight()), self._log_det(x)

    def expected_shape(self, shape: torch.Size) -> torch.Size:
        return with_channels(shape, self.channels)

    def extra_repr(self) -> str:
        return str(self.channels)
