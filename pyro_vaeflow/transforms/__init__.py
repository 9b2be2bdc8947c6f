"""Flows as Pyro ``TransformModule``\\ s mapping base → data.

Image flows act on ``[..., C, H, W]`` (event dimension 3); the priors' flows act on vectors
(event dimension 1): Real NVP couplings and VLAE's autoregressive flow. A conditional Glow
(:func:`conditional_glow`) is a Pyro ``ConditionalTransformModule`` whose ``condition(c)`` is
an image flow given a context :math:`c`. Every flow is a :class:`Flow`: it computes each
log-determinant once, and its cache never returns values computed with older parameters.
"""

from pyro_vaeflow.transforms.actnorm import ActNorm2d
from pyro_vaeflow.transforms.autoregressive import AutoregressiveFlow
from pyro_vaeflow.transforms.base import ComposeFlow, Flow, TransformFlow
from pyro_vaeflow.transforms.conditional import (
    ConditionalAdditiveCoupling2d,
    ConditionalAffineCoupling2d,
    ConditionalGlow,
    conditional_glow,
)
from pyro_vaeflow.transforms.conv1x1 import InvConv1x1
from pyro_vaeflow.transforms.coupling import (
    AdditiveCoupling2d,
    AffineCoupling2d,
    GlowConditioner,
    glow_conditioner,
)
from pyro_vaeflow.transforms.glow import glow
from pyro_vaeflow.transforms.realnvp import AffineCoupling1d, realnvp
from pyro_vaeflow.transforms.squeeze import Squeeze2d, Unsqueeze2d

__all__ = [
    "ActNorm2d",
    "AdditiveCoupling2d",
    "AffineCoupling1d",
    "AffineCoupling2d",
    "AutoregressiveFlow",
    "ComposeFlow",
    "ConditionalAdditiveCoupling2d",
    "ConditionalAffineCoupling2d",
    "ConditionalGlow",
    "Flow",
    "GlowConditioner",
    "InvConv1x1",
    "Squeeze2d",
    "TransformFlow",
    "Unsqueeze2d",
    "conditional_glow",
    "glow",
    "glow_conditioner",
    "realnvp",
]
