"""The conditional Glow beyond one fixed context (that is ``registry.CASES``'s), in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian

from pyro_vaeflow.distributions import FlowDecoder
from pyro_vaeflow.transforms import (
    ConditionalAdditiveCoupling2d,
    ConditionalGlow,
    Flow,
    InvConv1x1,
    conditional_glow,
)
from tests.registry import perturb

EVENT = (1, 4, 4)
K = 3


@pytest.fixture(params=["additive", "affine"])
def coupling(request, float64):
    return request.param


@pytest.fixture
def flow(coupling):
    """A small conditional Glow, its actnorm initialised on data, perturbed."""
    flow = conditional_glow(1, K, depth=2, hidden_channels=6, coupling=coupling, squeeze=1)
    flow.condition(torch.zeros(K)).inv(0.5 + 0.2 * torch.randn(16, *EVENT))
    return perturb(flow)


def test_condition_gives_a_flow_sharing_the_parameters(flow):
    conditioned = flow.condition(torch.randn(K))
    assert isinstance(conditioned, Flow)
    assert {id(p) for p in conditioned.parameters()} == {id(p) for p in flow.parameters()}


def test_different_contexts_give_different_maps(flow, coupling):
    x = torch.randn(4, *EVENT)
    u1, log_det1 = flow.condition(torch.tensor([1.0, 0.0, 0.0])).inverse_and_log_det(x)
    u2, log_det2 = flow.condition(torch.tensor([0.0, 1.0, 0.0])).inverse_and_log_det(x)
    assert not torch.allclose(u1, u2)
    # Additive couplings preserve volume at every context; affine ones do not.
    assert torch.allclose(log_det1, log_det2) == (coupling == "additive")


@pytest.mark.parametrize("direction", ["forward_and_log_det", "inverse_and_log_det"])
def test_batched_context_maps_each_datum_by_its_own_context(flow, direction):
    contexts, h = torch.randn(4, K), torch.randn(4, *EVENT)
    value, log_det = getattr(flow.condition(contexts), direction)(h)
    for i in range(4):
        value_i, log_det_i = getattr(flow.condition(contexts[i]), direction)(h[i])
        torch.testing.assert_close(value[i], value_i)
        torch.testing.assert_close(log_det[i], log_det_i)


def test_context_broadcasts_with_particle_dimensions(flow):
    x = torch.randn(4, *EVENT)
    contexts = torch.randn(2, 4, K)  # e.g. a latent z with 2 particles
    u, log_det = flow.condition(contexts).inverse_and_log_det(x)
    assert u.shape == (2, 4, *EVENT)
    assert log_det.shape == (2, 4)
    u_1, log_det_1 = flow.condition(contexts[1]).inverse_and_log_det(x)
    torch.testing.assert_close(u[1], u_1)
    torch.testing.assert_close(log_det[1], log_det_1)
    # and the other way round: a [B, K] context for inputs [S, B, C, H, W]
    u_particles = flow.condition(contexts[0]).inv(torch.stack([x, 2 * x]))
    torch.testing.assert_close(u_particles[0], u[0])


def test_log_det_matches_autograd_with_a_batched_context(flow):
    batch, size = 2, 16
    conditioned = flow.condition(torch.randn(batch, K))
    u = torch.randn(batch, *EVENT)
    log_det = conditioned.log_abs_det_jacobian(u, conditioned(u))
    matrix = jacobian(
        lambda v: conditioned(v.reshape(batch, *EVENT)).reshape(-1), u.reshape(-1)
    ).reshape(batch, size, batch, size)
    for i in range(batch):
        for j in range(batch):
            if i != j:  # a datum's image does not depend on another datum
                assert matrix[i, :, j].abs().max() == 0
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(matrix[i, :, i]).logabsdet)


def test_gradients_reach_the_context_with_and_without_checkpointing(flow):
    x = torch.randn(3, *EVENT)
    gradients = []
    for checkpoint in (False, True):
        flow.checkpoint = checkpoint
        context = torch.randn(3, K, generator=torch.Generator().manual_seed(1))
        context.requires_grad_(True)
        u, log_det = flow.condition(context).inverse_and_log_det(x)
        (u.square().sum() - log_det.sum()).backward()
        gradients.append(context.grad)
    assert gradients[0].abs().min() > 0
    torch.testing.assert_close(gradients[1], gradients[0])


def test_an_integer_one_hot_context_is_a_float_one(flow):
    labels = torch.tensor([2, 0, 1])
    x = torch.randn(3, *EVENT)
    torch.testing.assert_close(
        flow.condition(F.one_hot(labels, K)).inv(x),
        flow.condition(F.one_hot(labels, K).double()).inv(x),
    )


@pytest.mark.parametrize(
    "context",
    [torch.randn(2), torch.randn(4, K + 1), torch.tensor(1.0), [1.0, 0.0, 0.0]],
    ids=["last-dim", "batched-last-dim", "scalar", "list"],
)
def test_a_context_of_the_wrong_size_is_refused(flow, context):
    with pytest.raises(ValueError, match=r"context of shape \[\.\.\., 3\]"):
        flow.condition(context)


@pytest.mark.parametrize("batch", [(5,), (2, 5), (4, 2)], ids=str)
def test_a_context_that_does_not_broadcast_is_refused(flow, batch):
    conditioned = flow.condition(torch.randn(*batch, K))
    with pytest.raises(ValueError, match=r"input's batch shape \(4,\).*\[\.\.\., 3\]"):
        conditioned.inv(torch.randn(4, *EVENT))


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="coupling must be one of"):
        conditional_glow(1, K, coupling="spline")
    with pytest.raises(ValueError, match="context_dim must be an integer"):
        conditional_glow(1, 0)
    with pytest.raises(ValueError, match="at least 2"):
        ConditionalAdditiveCoupling2d(1, K)
    with pytest.raises(ValueError, match="context_dim=3"):
        ConditionalGlow([InvConv1x1(2), ConditionalAdditiveCoupling2d(2, 4)], K)
    with pytest.raises(TypeError, match="got Linear"):
        ConditionalGlow([torch.nn.Linear(2, 2)], K)


def test_identity_init_is_the_identity_at_every_context():
    flow = conditional_glow(1, K, depth=2, hidden_channels=6, squeeze=1, init="identity")
    x = torch.randn(4, *EVENT)
    assert torch.equal(flow.condition(torch.randn(4, K)).inv(x), x)


def test_flow_decoder_takes_the_context(flow):
    labels = torch.tensor([0, 2, 1, 2])
    context = F.one_hot(labels, K).double()
    loc, x = torch.randn(4, *EVENT), torch.randn(4, *EVENT)
    decoder = FlowDecoder(loc, 0.5, flow, context=context, temperature=0.7)
    assert decoder.batch_shape == (4,)
    assert decoder.event_shape == EVENT
    assert decoder.rsample().shape == (4, *EVENT)
    assert decoder.rsample((3,)).shape == (3, 4, *EVENT)
    log_px = decoder.log_prob(x)
    assert log_px.shape == (4,)
    torch.testing.assert_close(log_px, FlowDecoder(loc, 0.5, flow.condition(context)).log_prob(x))
    for i in range(4):  # per-datum contexts
        alone = FlowDecoder(loc[i], 0.5, flow, context=context[i])
        torch.testing.assert_close(log_px[i], alone.log_prob(x[i]))


def test_flow_decoder_gradient_reaches_a_latent_context(flow):
    z = torch.randn(2, 4, K, requires_grad=True)  # 2 particles of a latent z
    decoder = FlowDecoder(torch.zeros(2, 4, *EVENT), 0.5, flow, context=z)
    log_px = decoder.log_prob(torch.randn(4, *EVENT))
    assert log_px.shape == (2, 4)
    log_px.sum().backward()
    assert z.grad.abs().min() > 0
