r"""The single-scale Glow flow of the paper's decoder."""

from __future__ import annotations

from pyro_vaeflow.transforms.actnorm import ActNorm2d
from pyro_vaeflow.transforms.base import ComposeFlow, Flow
from pyro_vaeflow.transforms.conv1x1 import InvConv1x1
from pyro_vaeflow.transforms.coupling import AdditiveCoupling2d, AffineCoupling2d
from pyro_vaeflow.transforms.squeeze import Squeeze2d, Unsqueeze2d
from pyro_vaeflow.validation import check_choice, check_int

__all__ = ["glow"]

_COUPLINGS = {"additive": AdditiveCoupling2d, "affine": AffineCoupling2d}


def glow(
    channels: int,
    depth: int = 32,
    hidden_channels: int = 512,
    coupling: str = "additive",
    squeeze: int = 0,
    init: str = "data",
    checkpoint: bool = False,
    cache_size: int = 1,
) -> ComposeFlow:
    r"""Glow without the multi-scale split: ``depth`` steps of actnorm → 1x1 conv → coupling.

    Read data → base, as in Glow, every step applies :class:`ActNorm2d`, then
    :class:`InvConv1x1`, then a coupling layer. The returned flow maps base → data, so its
    parts are those steps inverted and in reverse order. ``squeeze=k`` wraps the steps in
    :math:`k` squeezes: data → base is squeeze\ :sup:`k`, the steps, unsqueeze\ :sup:`k`, so the
    shape stays :math:`C \times H \times W` and a 1-channel image gets :math:`4^k` channels to
    couple. Its log-determinant is the sum of its parts', computed in one pass:

    .. math:: \log\left|\det \frac{\partial x}{\partial u}\right|
              = \sum_{k=1}^{K} \left( HW \sum_c s^{(k)}_c - HW \sum_c \ell^{(k)}_c
                + \log\left|\det J_{\text{coupling}_k}\right| \right),

    with :math:`s^{(k)}` the actnorm log-scales and :math:`\ell^{(k)}` the 1x1 convolutions'
    ``log_s`` (the couplings' term is 0 when additive).

    Args:
        channels: image channels :math:`C` (before any squeeze).
        depth: the number of steps :math:`K`.
        hidden_channels: width of each coupling's conditioner.
        coupling: ``"additive"`` (the paper's) or ``"affine"``.
        squeeze: the number of 2x2 squeezes around the steps.
        init: ``"data"`` for Glow's initialisation (data-dependent actnorm, random-rotation
            1x1 convolutions), or ``"identity"`` for the exact identity map (unit actnorm
            without data-dependent initialisation, identity 1x1 convolutions); couplings start
            at the identity either way.
        checkpoint: gradient checkpointing over the steps' layers (see :class:`ComposeFlow`):
            only each layer's input is kept for the backward pass, which recomputes the
            couplings' conditioner activations; less memory for about one more forward pass.
        cache_size: 1 to cache the last ``(u, x)`` pair and its log-determinant, 0 not to (see
            :class:`~pyro_vaeflow.transforms.Flow`; the steps' own caches are bypassed).

    Example:
        >>> flow = glow(1, depth=2, hidden_channels=16, squeeze=1, init="identity")
        >>> x = torch.rand(8, 1, 28, 28)
        >>> torch.equal(flow.inv(x), x)
        True
    """
    check_choice("coupling", coupling, sorted(_COUPLINGS))
    check_choice("init", init, ("data", "identity"))
    check_int("depth", depth)
    check_int("squeeze", squeeze, 0)
    inner = channels * 4**squeeze
    data_to_base: list[Flow] = []
    for _ in range(depth):
        data_to_base += [
            ActNorm2d(inner, init=init),
            InvConv1x1(inner, init="identity" if init == "identity" else "rotation"),
            _COUPLINGS[coupling](inner, hidden_channels),
        ]
    squeezes: list[Flow] = [Squeeze2d() for _ in range(squeeze)]
    unsqueezes: list[Flow] = [Unsqueeze2d() for _ in range(squeeze)]
    return ComposeFlow(
        squeezes + data_to_base[::-1] + unsqueezes, cache_size=cache_size, checkpoint=checkpoint
    )
