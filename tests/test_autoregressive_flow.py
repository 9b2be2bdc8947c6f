"""VLAE's autoregressive-flow prior, beyond the transform property suite (``registry.py``):
its autoregressive structure, its identity start and its argument checks."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from pyro_vaeflow.transforms import AutoregressiveFlow


def _trained_flow(affine: bool) -> AutoregressiveFlow:
    torch.manual_seed(0)
    flow = AutoregressiveFlow(3, num_steps=2, hidden_dims=(6,), affine=affine).double()
    for made in flow.mades:  # leave the identity initialisation
        torch.nn.init.normal_(made.layers[-1].weight, std=0.5)
    return flow


def test_flow_density_direction_is_autoregressive(float64):
    """One step: ε_j depends on z_{≤j} only (a triangular Jacobian), with ∂ε_j/∂z_j = e^{-s_j}."""
    torch.manual_seed(0)
    flow = AutoregressiveFlow(4, num_steps=1, hidden_dims=(8,), affine=True).double()
    torch.nn.init.normal_(flow.mades[0].layers[-1].weight)
    z = torch.randn(4)
    jac = jacobian(lambda v: flow._density(v)[0], z)
    assert torch.equal(torch.triu(jac, 1), torch.zeros(4, 4))
    assert (torch.tril(jac, -1) != 0).any()
    torch.testing.assert_close(jac.diagonal().log(), flow._density(z)[1])


def test_flow_starts_as_identity():
    flow = AutoregressiveFlow(4, num_steps=3, hidden_dims=(8,), affine=True)
    eps = torch.randn(2, 4)
    torch.testing.assert_close(flow(eps), eps)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"dim": 1}, "dim"), ({"num_steps": 0}, "num_steps"), ({"hidden_dims": (2,)}, "hidden")],
)
def test_flow_rejects_bad_arguments(kwargs, message):
    options = {"dim": 4, "num_steps": 2, "hidden_dims": (8,), **kwargs}
    with pytest.raises(ValueError, match=message):
        AutoregressiveFlow(**options)


@pytest.mark.parametrize("affine", [False, True], ids=["mean-only", "affine"])
def test_the_per_dimension_terms_sum_to_the_log_density(float64, affine):
    flow = _trained_flow(affine)
    eps = torch.randn(5, 3)
    z = flow(eps)
    log_det = flow.log_abs_det_jacobian(eps, z)
    log_normal = torch.distributions.Normal(0.0, 1.0).log_prob(eps).sum(-1)
    torch.testing.assert_close(flow.log_prob_per_dim(z.clone()).sum(-1), log_normal - log_det)
    if not affine:  # a mean-only flow preserves volume
        torch.testing.assert_close(log_det, torch.zeros(5))
