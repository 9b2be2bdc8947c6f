"""Every flow of the package, built small and perturbed away from its initialisation.

Each case is ``(id, factory, event_shape)``: ``factory()`` builds the flow in the current
default dtype and ``event_shape`` is the shape of its base (input) event. A new flow gets the
whole property suite of ``test_transforms.py`` by adding one line here.
"""

from __future__ import annotations

import torch
from pyro.distributions.transforms import Permute, affine_autoregressive, spline_coupling

from pyro_vaeflow.transforms import (
    ActNorm2d,
    AdditiveCoupling2d,
    AffineCoupling1d,
    AffineCoupling2d,
    AutoregressiveFlow,
    ComposeFlow,
    InvConv1x1,
    Squeeze2d,
    Unsqueeze2d,
    conditional_glow,
    glow,
    realnvp,
)


def perturb(flow, scale: float = 0.3):
    """Move every parameter away from its (often zero or identity) initial value."""
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return flow


def initialised_glow(**kwargs):
    flow = glow(**kwargs)
    flow.inv(3.0 + 2.0 * torch.randn(16, kwargs["channels"], 4, 4))
    return perturb(flow)


def conditioned_glow(coupling: str):
    """A conditional Glow at a fixed unbatched context, its actnorm initialised on data."""
    flow = conditional_glow(2, 3, depth=2, hidden_channels=6, coupling=coupling, squeeze=1)
    conditioned = flow.condition(torch.tensor([1.0, -0.5, 2.0]))
    conditioned.inv(3.0 + 2.0 * torch.randn(16, 2, 4, 4))
    return perturb(conditioned)


CASES = [
    ("ActNorm2d", lambda: perturb(ActNorm2d(2, init="identity")), (2, 4, 4)),
    ("InvConv1x1", lambda: perturb(InvConv1x1(3)), (3, 4, 4)),
    ("AdditiveCoupling2d", lambda: perturb(AdditiveCoupling2d(2, hidden_channels=6)), (2, 4, 4)),
    ("AffineCoupling2d", lambda: perturb(AffineCoupling2d(3, hidden_channels=6)), (3, 4, 4)),
    ("Squeeze2d", lambda: Squeeze2d(), (1, 4, 4)),
    ("Unsqueeze2d", lambda: Unsqueeze2d(), (4, 2, 2)),
    (
        "glow-additive-identity",
        lambda: perturb(glow(2, depth=2, hidden_channels=6, init="identity")),
        (2, 4, 4),
    ),
    (
        "glow-affine-squeeze",
        lambda: perturb(
            glow(1, depth=2, hidden_channels=6, coupling="affine", squeeze=1, init="identity")
        ),
        (1, 4, 4),
    ),
    (
        "glow-data-init",
        lambda: initialised_glow(channels=2, depth=2, hidden_channels=6),
        (2, 4, 4),
    ),
    ("conditional_glow-additive", lambda: conditioned_glow("additive"), (2, 4, 4)),
    ("conditional_glow-affine", lambda: conditioned_glow("affine"), (2, 4, 4)),
    ("AffineCoupling1d", lambda: perturb(AffineCoupling1d(5, hidden_dims=(8, 8))), (5,)),
    ("realnvp", lambda: perturb(realnvp(4, num_layers=3, hidden_dims=(8, 8))), (4,)),
    (
        "AutoregressiveFlow-affine",
        lambda: perturb(AutoregressiveFlow(4, num_steps=2, hidden_dims=(8,), affine=True)),
        (4,),
    ),
    (
        "ComposeFlow-pyro-transforms",
        lambda: perturb(
            ComposeFlow(
                [
                    spline_coupling(6, hidden_dims=[8]),
                    Permute(torch.arange(5, -1, -1)),
                    affine_autoregressive(6, hidden_dims=[12]),
                ]
            ),
            scale=0.1,
        ),
        (6,),
    ),
    (
        "AutoregressiveFlow-shift",
        lambda: perturb(AutoregressiveFlow(3, num_steps=3, hidden_dims=(6, 6))),
        (3,),
    ),
]
