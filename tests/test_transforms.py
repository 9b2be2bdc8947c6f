"""The property suite: every flow of ``registry.CASES`` and its inverse, in float64."""

from __future__ import annotations

from copy import deepcopy

import pytest
import torch
from torch.autograd.functional import jacobian

from tests.registry import CASES

DIRECTIONS = ["forward", "inv"]


def build(case, direction):
    _, factory, event_shape = case
    flow = factory()
    if direction == "forward":
        return flow, flow, torch.Size(event_shape)
    return flow, flow.inv, flow.forward_shape(torch.Size(event_shape))


@pytest.fixture(params=CASES, ids=[case[0] for case in CASES])
def case(request, float64):
    return request.param


@pytest.fixture(params=DIRECTIONS)
def direction(request):
    return request.param


def test_contract(case, direction):
    _, transform, event_shape = build(case, direction)
    assert transform.bijective
    assert transform.domain.event_dim == len(event_shape)
    assert transform.codomain.event_dim == len(event_shape)


def test_round_trip_bypassing_cache(case, direction):
    _, transform, event_shape = build(case, direction)
    u = torch.randn(3, *event_shape)
    x = transform(u.clone())
    torch.testing.assert_close(transform.inv(x.clone()), u)


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)], ids=str)
def test_shapes(case, direction, batch_shape):
    _, transform, event_shape = build(case, direction)
    u = torch.randn(*batch_shape, *event_shape)
    x = transform(u)
    data_shape = transform.forward_shape(event_shape)
    assert x.shape == torch.Size(batch_shape) + data_shape
    assert transform.inverse_shape(data_shape) == event_shape
    assert transform.log_abs_det_jacobian(u, x).shape == torch.Size(batch_shape)
    assert transform.inv(x.clone()).shape == u.shape


def test_log_det_matches_autograd_jacobian(case, direction):
    _, transform, event_shape = build(case, direction)
    u = torch.randn(2, *event_shape)
    log_det = transform.log_abs_det_jacobian(u, transform(u))
    for i in range(2):
        matrix = jacobian(lambda v: transform(v.reshape(event_shape)).reshape(-1), u[i].reshape(-1))
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(matrix).logabsdet)


def test_cache_returns_the_pair_it_computed(case, direction):
    _, transform, event_shape = build(case, direction)
    u = torch.randn(2, *event_shape)
    x = transform(u)
    assert transform.inv(x) is u
    assert transform(u) is x


def fresh(flow, direction):
    """The same flow with an empty cache."""
    copy = deepcopy(flow)
    return copy if direction == "forward" else copy.inv


def test_cache_is_not_stale_after_a_parameter_changes(case, direction):
    flow, transform, event_shape = build(case, direction)
    parameters = list(flow.parameters())
    if not parameters:
        pytest.skip("no parameters")
    u = torch.randn(2, *event_shape)
    x = transform(u)
    log_det = transform.log_abs_det_jacobian(u, x)
    with torch.no_grad():
        for parameter in parameters:
            parameter.add_(0.1)
    new_x = transform(u)
    new_log_det = transform.log_abs_det_jacobian(u, new_x)
    reference = fresh(flow, direction)
    expected_x = reference(u)
    expected_log_det = reference.log_abs_det_jacobian(u, expected_x)
    assert not torch.allclose(expected_x, x) or not torch.allclose(expected_log_det, log_det)
    torch.testing.assert_close(new_x, expected_x)
    torch.testing.assert_close(new_log_det, expected_log_det)
    torch.testing.assert_close(transform.inv(new_x), u)


def test_cache_does_not_reuse_a_freed_graph(case, direction):
    flow, transform, event_shape = build(case, direction)
    if not any(p.requires_grad for p in flow.parameters()):
        pytest.skip("no parameters")
    u = torch.randn(2, *event_shape)
    for _ in range(2):
        x = transform(u)
        (x.sum() + transform.log_abs_det_jacobian(u, x).sum()).backward()


def test_cache_size_zero_never_caches(case, direction):
    _, factory, event_shape = case
    flow = factory()
    flow._cache_size = 0
    u = torch.randn(2, *event_shape)
    x = flow(u)
    assert flow.inv(x) is not u
    torch.testing.assert_close(flow.inv(x), u)
