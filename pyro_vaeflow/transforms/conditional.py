r"""Conditional Glow: couplings whose conditioner also sees a context vector :math:`c`.

A context :math:`c \in \mathbb{R}^K` (a one-hot class label, a latent :math:`z`, ...) is
broadcast over the :math:`H \times W` pixels and concatenated with the conditioning half
:math:`x_a` as :math:`K` extra input channels of the coupling's network, so every coupling, and
hence the whole flow, is a different bijection for every context. The conditional modules are
Pyro :class:`~pyro.distributions.conditional.ConditionalTransformModule`\ s: they own the
parameters, and ``condition(c)`` returns a :class:`~pyro_vaeflow.transforms.Flow` bound to
:math:`c` that shares them.

The context broadcasts against the batch shape of the flow's input, like the parameters of
:class:`torch.distributions.AffineTransform`: a context ``[K]`` serves any batch, a context
``[B, K]`` a batch ``[B, C, H, W]`` or ``[S, B, C, H, W]``, and a context ``[S, B, K]`` (a
latent with particle dimensions) an input ``[B, C, H, W]``, whose image then has the batch shape
``[S, B]``. Integer contexts (``F.one_hot``'s) are converted to the input's dtype. A conditioned
flow keeps a reference to its context: condition again rather than modify the context in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from torch import Tensor, nn

from pyro_vaeflow.transforms.actnorm import ActNorm2d
from pyro_vaeflow.transforms.base import ComposeFlow, Flow
from pyro_vaeflow.transforms.conv1x1 import InvConv1x1
from pyro_vaeflow.transforms.coupling import (
    AdditiveCoupling2d,
    AffineCoupling2d,
    glow_conditioner,
)
from pyro_vaeflow.transforms.shapes import check_image
from pyro_vaeflow.transforms.squeeze import Squeeze2d, Unsqueeze2d
from pyro_vaeflow.validation import check_choice, check_int

__all__ = [
    "ConditionalAdditiveCoupling2d",
    "ConditionalAffineCoupling2d",
    "ConditionalGlow",
    "conditional_glow",
]


def check_context(context: Tensor, context_dim: int, name: str) -> Tensor:
    """``context`` if it is a tensor ``[..., context_dim]``; else a ``ValueError``."""
    if not isinstance(context, Tensor) or context.dim() < 1 or context.shape[-1] != context_dim:
        found = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
        raise ValueError(f"{name} expects a context of shape [..., {context_dim}], got {found}")
    return context


class _Conditioned:
    """A coupling at one context: its network sees ``[x_a, c]``, ``c`` repeated over H×W.

    Mixed in before :class:`AdditiveCoupling2d` or :class:`AffineCoupling2d`, whose maths it
    reuses; only the conditioner's input changes, and the input is first broadcast against the
    context's batch shape.
    """

    def __init__(
        self, channels: int, net: nn.Module, context: Tensor, name: str, **options
    ) -> None:
        super().__init__(channels, net=net, **options)
        self.context = context
        self.name = name

    def _broadcast(self, h: Tensor) -> Tensor:
        check_image(h, self.channels, self.name)
        try:
            batch = torch.broadcast_shapes(h.shape[:-3], self.context.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"{self.name}: a context of shape {tuple(self.context.shape)} does not broadcast "
                f"with the input's batch shape {tuple(h.shape[:-3])}; expected a context "
                f"[..., {self.context.shape[-1]}] whose batch dimensions broadcast with it"
            ) from None
        return h.expand(*batch, *h.shape[-3:])

    def _condition(self, h_a: Tensor) -> Tensor:
        height, width = h_a.shape[-2:]
        context = self.context.to(h_a.dtype)[..., None, None]
        context = context.expand(*h_a.shape[:-3], context.shape[-3], height, width)
        return super()._condition(torch.cat([h_a, context], dim=-3))

    def forward_and_log_det(self, u: Tensor) -> tuple[Tensor, Tensor]:
        return super().forward_and_log_det(self._broadcast(u))

    def inverse_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return super().inverse_and_log_det(self._broadcast(x))

    def extra_repr(self) -> str:
        return f"{self.channels}, context_shape={tuple(self.context.shape)}"


class _ConditionedAdditiveCoupling2d(_Conditioned, AdditiveCoupling2d):
    """:class:`ConditionalAdditiveCoupling2d` at one context."""


class _ConditionedAffineCoupling2d(_Conditioned, AffineCoupling2d):
    """:class:`ConditionalAffineCoupling2d` at one context."""


class _ConditionalCoupling2d(ConditionalTransformModule):
    """Owns the conditioner of ``[x_a, c]``; ``condition(c)`` binds it to a context."""

    conditioned: type[_Conditioned]

    def __init__(
        self,
        channels: int,
        context_dim: int,
        hidden_channels: int = 512,
        net: nn.Module | None = None,
        cache_size: int = 1,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if channels < 2:
            raise ValueError(
                f"{name} splits channels and needs at least 2, got {channels}; squeeze a "
                "1-channel image first (Squeeze2d, or conditional_glow(..., squeeze=1))"
            )
        self.channels = channels
        self.context_dim = check_int("context_dim", context_dim)
        self.cache_size = cache_size
        split = channels // 2
        out_channels = self.conditioned.out_factor * (channels - split)
        self.net = (
            net
            if net is not None
            else glow_conditioner(split + context_dim, out_channels, hidden_channels)
        )

    def _options(self) -> dict:
        return {"cache_size": self.cache_size}

    def condition(self, context: Tensor) -> Flow:
        """The coupling at ``context`` (shape ``[..., K]``), sharing this module's network."""
        name = type(self).__name__
        check_context(context, self.context_dim, name)
        return self.conditioned(self.channels, self.net, context, name, **self._options())

    def extra_repr(self) -> str:
        return f"{self.channels}, context_dim={self.context_dim}"


class ConditionalAdditiveCoupling2d(_ConditionalCoupling2d):
    r"""The additive coupling of :class:`~pyro_vaeflow.transforms.AdditiveCoupling2d`, given c.

    With :math:`x = (x_a, x_b)` split along channels and :math:`t` the conditioner, which sees
    :math:`x_a` and the context :math:`c` repeated at every pixel,

    .. math:: u_a = x_a,\quad u_b = x_b + t(x_a, c) \quad(\text{data} \to \text{base}),
              \qquad \log\left|\det \frac{\partial x}{\partial u}\right| = 0 .

    The map is volume preserving for every :math:`c`; :math:`c` only moves it.

    Args:
        channels: number of channels :math:`C \ge 2`; :math:`x_a` has :math:`\lfloor C/2 \rfloor`.
        context_dim: the size :math:`K` of the context.
        hidden_channels: width of the default conditioner, a
            :class:`~pyro_vaeflow.transforms.GlowConditioner` with :math:`\lfloor C/2 \rfloor + K`
            input channels.
        net: a custom conditioner mapping ``[N, C//2 + K, H, W]`` to ``[N, C - C//2, H, W]``.
        cache_size: the ``cache_size`` of the conditioned flows.

    Example:
        >>> coupling = ConditionalAdditiveCoupling2d(4, context_dim=3, hidden_channels=16)
        >>> x, c = torch.randn(5, 4, 6, 6), torch.randn(5, 3)
        >>> torch.equal(coupling.condition(c).inv(x), x)  # a new coupling is the identity
        True
    """

    conditioned = _ConditionedAdditiveCoupling2d


class ConditionalAffineCoupling2d(_ConditionalCoupling2d):
    r"""The affine coupling of :class:`~pyro_vaeflow.transforms.AffineCoupling2d`, given c.

    The conditioner returns :math:`(h, t)` from :math:`x_a` and the context :math:`c` repeated
    at every pixel, and

    .. math:: \log s = b \tanh(h / b), \qquad
              u_b = (x_b + t)\odot s \quad(\text{data} \to \text{base}), \qquad
              \log\left|\det \frac{\partial x}{\partial u}\right| = -\sum \log s ,

    with :math:`s` and :math:`t` functions of :math:`(x_a, c)`, so the volume change also
    depends on the context.

    Args:
        channels: number of channels :math:`C \ge 2`; :math:`x_a` has :math:`\lfloor C/2 \rfloor`.
        context_dim: the size :math:`K` of the context.
        hidden_channels: width of the default conditioner (:math:`\lfloor C/2 \rfloor + K` inputs).
        net: a custom conditioner mapping ``[N, C//2 + K, H, W]`` to ``[N, 2(C - C//2), H, W]``
            (first the pre-scale :math:`h`, then the shift :math:`t`).
        scale_bound: :math:`b`.
        cache_size: the ``cache_size`` of the conditioned flows.

    Example:
        >>> coupling = ConditionalAffineCoupling2d(4, context_dim=3, hidden_channels=16)
        >>> flow = coupling.condition(torch.randn(3))  # one context for every image
        >>> u, log_det = flow.inverse_and_log_det(torch.randn(5, 4, 6, 6))
        >>> u.shape, log_det.shape
        (torch.Size([5, 4, 6, 6]), torch.Size([5]))
    """

    conditioned = _ConditionedAffineCoupling2d

    def __init__(
        self,
        channels: int,
        context_dim: int,
        hidden_channels: int = 512,
        net: nn.Module | None = None,
        scale_bound: float = 3.0,
        cache_size: int = 1,
    ) -> None:
        super().__init__(channels, context_dim, hidden_channels, net, cache_size)
        self.scale_bound = scale_bound

    def _options(self) -> dict:
        return {**super()._options(), "scale_bound": self.scale_bound}


class ConditionalGlow(ConditionalTransformModule):
    r"""A flow base → data whose conditional parts are bound to a context by :meth:`condition`.

    ``parts`` mixes :class:`~pyro_vaeflow.transforms.Flow`\ s (actnorm, 1x1 convolutions,
    squeezes) and conditional couplings, in base → data order; ``condition(c)`` returns the
    :class:`~pyro_vaeflow.transforms.ComposeFlow` of the flows themselves and the couplings
    bound to :math:`c`, so every conditioned flow shares this module's parameters (and
    :class:`~pyro_vaeflow.transforms.ActNorm2d`'s data-dependent initialisation happens once,
    on the first call of any of them). Its log-determinant is the sum of its parts', as for
    :func:`~pyro_vaeflow.transforms.glow`. Build one with :func:`conditional_glow`.

    Args:
        parts: the flows and conditional couplings, base → data.
        context_dim: the size :math:`K` of the context.
        cache_size: the ``cache_size`` of the conditioned flows.
        checkpoint: gradient checkpointing in the conditioned flows (see
            :class:`~pyro_vaeflow.transforms.ComposeFlow`); gradients still reach the context.

    Example:
        >>> flow = conditional_glow(2, context_dim=4, depth=1, hidden_channels=8)
        >>> conditioned = flow.condition(torch.randn(4))
        >>> type(conditioned).__name__
        'ComposeFlow'
        >>> {id(p) for p in conditioned.parameters()} == {id(p) for p in flow.parameters()}
        True
    """

    def __init__(
        self,
        parts: Sequence[Flow | ConditionalTransformModule],
        context_dim: int,
        cache_size: int = 1,
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.context_dim = check_int("context_dim", context_dim)
        for part in parts:
            if not isinstance(part, (Flow, ConditionalTransformModule)):
                raise TypeError(
                    "parts must be pyro_vaeflow Flows or ConditionalTransformModules, "
                    f"got {type(part).__name__}"
                )
            if getattr(part, "context_dim", context_dim) != context_dim:
                raise ValueError(
                    f"every conditional part needs context_dim={context_dim}, "
                    f"got {type(part).__name__} with {part.context_dim}"
                )
        self.parts = nn.ModuleList(parts)
        self.cache_size = cache_size
        self.checkpoint = bool(checkpoint)

    def condition(self, context: Tensor) -> ComposeFlow:
        """The flow at ``context``, shape ``[..., K]`` (see the module for the broadcasting)."""
        check_context(context, self.context_dim, type(self).__name__)
        parts = [
            part.condition(context) if isinstance(part, ConditionalTransformModule) else part
            for part in self.parts
        ]
        return ComposeFlow(parts, cache_size=self.cache_size, checkpoint=self.checkpoint)

    def extra_repr(self) -> str:
        return f"context_dim={self.context_dim}"


_COUPLINGS = {"additive": ConditionalAdditiveCoupling2d, "affine": ConditionalAffineCoupling2d}


def conditional_glow(
    channels: int,
    context_dim: int,
    depth: int = 32,
    hidden_channels: int = 512,
    coupling: str = "additive",
    squeeze: int = 0,
    init: str = "data",
    cache_size: int = 1,
    checkpoint: bool = False,
) -> ConditionalGlow:
    r""":func:`~pyro_vaeflow.transforms.glow` with couplings conditioned on a context :math:`c`.

    The same ``depth`` steps of actnorm → 1x1 conv → coupling (read data → base), wrapped in
    ``squeeze`` squeezes, but every coupling's network also sees :math:`c \in \mathbb{R}^K`
    (:class:`ConditionalAdditiveCoupling2d`, :class:`ConditionalAffineCoupling2d`). The
    actnorm and 1x1 convolutions do not depend on :math:`c`. For each context,

    .. math:: \log\left|\det \frac{\partial x}{\partial u}\right|
              = \sum_{k=1}^{L} \left( HW \sum_j s^{(k)}_j - HW \sum_j \ell^{(k)}_j
                + \log\left|\det J_{\text{coupling}_k}(x_a, c)\right| \right),

    with :math:`L` = ``depth``, :math:`s^{(k)}` the actnorm log-scales and :math:`\ell^{(k)}`
    the 1x1 convolutions' ``log_s``, as for :func:`~pyro_vaeflow.transforms.glow`; the
    couplings' term is 0 when additive.

    Args:
        channels: image channels :math:`C` (before any squeeze).
        context_dim: the size :math:`K` of the context.
        depth: the number of steps :math:`L`.
        hidden_channels: width of each coupling's conditioner.
        coupling: ``"additive"`` or ``"affine"``.
        squeeze: the number of 2x2 squeezes around the steps.
        init: ``"data"`` for Glow's initialisation (data-dependent actnorm, random-rotation
            1x1 convolutions), or ``"identity"`` for the exact identity map at every context;
            couplings start at the identity either way.
        cache_size: the ``cache_size`` of the conditioned flows.
        checkpoint: gradient checkpointing over the steps' layers (see
            :class:`~pyro_vaeflow.transforms.ComposeFlow`).

    Example:
        >>> import torch.nn.functional as F
        >>> flow = conditional_glow(1, context_dim=10, depth=2, hidden_channels=16, squeeze=1)
        >>> labels = F.one_hot(torch.tensor([3, 7, 7]), 10)
        >>> x = torch.rand(3, 1, 28, 28)
        >>> u, log_det = flow.condition(labels).inverse_and_log_det(x)
        >>> u.shape, log_det.shape
        (torch.Size([3, 1, 28, 28]), torch.Size([3]))
        >>> torch.allclose(flow.condition(labels)(u), x, atol=1e-5)
        True
    """
    check_choice("coupling", coupling, sorted(_COUPLINGS))
    check_choice("init", init, ("data", "identity"))
    check_int("context_dim", context_dim)
    check_int("depth", depth)
    check_int("squeeze", squeeze, 0)
    inner = channels * 4**squeeze
    data_to_base: list[Flow | ConditionalTransformModule] = []
    for _ in range(depth):
        data_to_base += [
            ActNorm2d(inner, init=init),
            InvConv1x1(inner, init="identity" if init == "identity" else "rotation"),
            _COUPLINGS[coupling](inner, context_dim, hidden_channels),
        ]
    squeezes: list[Flow] = [Squeeze2d() for _ in range(squeeze)]
    unsqueezes: list[Flow] = [Unsqueeze2d() for _ in range(squeeze)]
    return ConditionalGlow(
        squeezes + data_to_base[::-1] + unsqueezes,
        context_dim,
        cache_size=cache_size,
        checkpoint=checkpoint,
    )
