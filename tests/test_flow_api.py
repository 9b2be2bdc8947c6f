"""The flow distributions' API beyond the density: moments, support, tensor temperatures,
construction checks in the user's shapes, conditional flows, and compositions with Pyro's and
torch's transforms."""

from __future__ import annotations

import math

import pytest
import torch
from pyro.distributions.transforms import conditional_affine_coupling, spline_coupling
from torch.autograd.functional import jacobian
from torch.distributions.transforms import ReshapeTransform, SigmoidTransform

from pyro_vaeflow.distributions import FlowDecoder, FlowPrior, sample_moments
from pyro_vaeflow.transforms import ComposeFlow, TransformFlow, glow, realnvp
from tests.registry import perturb

IMAGE = (1, 4, 4)


def image_flow(**options):
    return perturb(glow(1, depth=2, hidden_channels=6, squeeze=1, init="identity", **options))


def sigmoid_decoder(loc: torch.Tensor, scale: float = 1.0) -> FlowDecoder:
    """A decoder whose flow ends in a sigmoid: its support is the unit interval."""
    identity = glow(1, depth=1, hidden_channels=4, squeeze=1, init="identity")
    return FlowDecoder(loc, scale, ComposeFlow([identity, SigmoidTransform()]))


@pytest.mark.parametrize("what", ["mean", "variance", "stddev"])
def test_moments_without_closed_form_say_what_to_use(what):
    d = FlowDecoder(torch.zeros(2, *IMAGE), 1.0, image_flow())
    with pytest.raises(NotImplementedError, match=rf"no closed form.*sample_moments.*\.{what}"):
        getattr(d, what)


@pytest.mark.parametrize(
    ("call", "hint"),
    [
        (lambda d: d.entropy(), "log_prob"),
        (lambda d: d.cdf(torch.zeros(2, *IMAGE)), "CDF"),
        (lambda d: d.icdf(torch.zeros(2, *IMAGE)), "sample"),
    ],
    ids=["entropy", "cdf", "icdf"],
)
def test_entropy_and_cdf_say_why_not(call, hint):
    d = FlowDecoder(torch.zeros(2, *IMAGE), 1.0, image_flow())
    with pytest.raises(NotImplementedError, match=hint):
        call(d)


def test_sample_moments_of_a_sigmoid_flow_match_quadrature():
    loc = torch.full((1, *IMAGE), 1.0)
    torch.manual_seed(0)
    moments = sample_moments(sigmoid_decoder(loc), num_samples=20000, chunk_size=5000)
    grid = torch.linspace(-9.0, 11.0, 200001, dtype=torch.float64)  # E[σ(X)], X ~ N(1, 1)
    density = torch.exp(-0.5 * (grid - 1.0) ** 2) / math.sqrt(2 * math.pi)
    step = grid[1] - grid[0]
    mean = float((torch.sigmoid(grid) * density).sum() * step)
    variance = float(((torch.sigmoid(grid) - mean) ** 2 * density).sum() * step)
    assert torch.all((moments.mean - mean).abs() < 5 * moments.stderr)
    assert abs(mean - torch.sigmoid(torch.tensor(1.0)).item()) > 10 * moments.stderr.max()
    torch.testing.assert_close(
        moments.variance, torch.full_like(moments.variance, variance), rtol=0.05, atol=0.0
    )
    torch.testing.assert_close(moments.stddev, moments.variance.sqrt())


def test_sample_moments_refuse_one_sample():
    with pytest.raises(ValueError, match="num_samples"):
        sample_moments(FlowDecoder(torch.zeros(*IMAGE), 1.0, image_flow()), num_samples=1)


def test_support_follows_the_flows_codomain():
    d = sigmoid_decoder(torch.zeros(2, *IMAGE))
    assert d.support.check(torch.full((2, *IMAGE), 0.5)).all()
    with pytest.raises(ValueError, match="outside the support"):
        d.log_prob(torch.full((2, *IMAGE), 1.5))
    assert torch.isfinite(d.log_prob(torch.full((2, *IMAGE), 0.25))).all()
    plain = FlowDecoder(torch.zeros(2, *IMAGE), 1.0, image_flow())
    assert plain.support.event_dim == 3
    assert plain.support.check(torch.full((2, *IMAGE), 1.5)).all()


def test_a_temperature_tensor_gives_one_temperature_per_image():
    flow = image_flow()
    loc = torch.randn(3, *IMAGE)
    temperature = torch.tensor([0.0, 1.0, 0.0])
    samples = FlowDecoder(loc, 0.5, flow, temperature=temperature).sample((4,))
    with torch.no_grad():
        mode = flow(loc)
    torch.testing.assert_close(samples[:, 0], mode[0].expand(4, *IMAGE))
    torch.testing.assert_close(samples[:, 2], mode[2].expand(4, *IMAGE))
    assert (samples[:, 1] - mode[1]).abs().max() > 0.1


@pytest.mark.parametrize(
    ("temperature", "message"),
    [
        (torch.tensor([0.5, 0.5]), "does not broadcast"),
        (torch.tensor([0.5, -1.0, 0.5]), "finite numbers >= 0"),
        (torch.tensor([1, 1, 1]), "floating point"),
        (-0.5, "temperature must be"),
    ],
)
def test_bad_temperatures_are_refused(temperature, message):
    with pytest.raises(ValueError, match=message):
        FlowDecoder(torch.zeros(3, *IMAGE), 0.5, image_flow(), temperature=temperature)


def test_a_channel_mismatch_is_named_in_the_users_shapes():
    flow = image_flow()  # 1 channel, squeezed to 4 inside
    with pytest.raises(ValueError, match=r"shape \(3, 4, 4\).*takes \(1, 4, 4\).*channels"):
        FlowDecoder(torch.zeros(2, 3, 4, 4), 1.0, flow)
    prior = realnvp(4, num_layers=2, hidden_dims=(8,))
    with pytest.raises(ValueError, match=r"shape \(5,\).*takes \(4,\).*size"):
        FlowPrior(5, prior)


def test_a_dtype_mismatch_names_both_dtypes():
    with pytest.raises(ValueError, match=r"loc is torch.float64 but the flow's.*torch.float32"):
        FlowDecoder(torch.zeros(2, *IMAGE, dtype=torch.float64), 1.0, image_flow())
    loc, scale = torch.zeros(2, *IMAGE), torch.ones(2, *IMAGE, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"scale is torch\.float64"):
        FlowDecoder(loc, scale, image_flow())


def test_without_validation_a_wrong_value_shape_is_still_named_in_the_users_shapes():
    d = FlowDecoder(torch.zeros(2, *IMAGE), 1.0, image_flow(), validate_args=False)
    with pytest.raises(ValueError, match=r"\[\.\.\., 1, 4, 4\].*got \(2, 1, 8, 8\)"):
        d.log_prob(torch.zeros(2, 1, 8, 8))


def test_a_conditional_flow_takes_its_context():
    torch.manual_seed(0)
    flow = conditional_affine_coupling(4, context_dim=3)
    context = torch.randn(5, 3)
    prior = FlowPrior(4, flow, context=context).expand([5])
    z = prior.sample()
    expected = FlowPrior(4, flow.condition(context)).expand([5]).log_prob(z)
    torch.testing.assert_close(prior.log_prob(z), expected)
    with pytest.raises(ValueError, match="no context"):
        FlowPrior(4, flow)
    with pytest.raises(ValueError, match="not conditional"):
        FlowPrior(4, realnvp(4, num_layers=2, hidden_dims=(8,)), context=context)


def test_compose_flow_takes_torch_and_pyro_transforms_on_other_event_dims():
    torch.manual_seed(0)
    flow = ComposeFlow(
        [
            ReshapeTransform((16,), IMAGE),
            image_flow(),
            ReshapeTransform(IMAGE, (16,)),
            spline_coupling(16, hidden_dims=[8]),
            SigmoidTransform(),
        ]
    )
    assert flow.domain.event_dim == 1
    assert flow.codomain.event_dim == 1
    assert isinstance(flow.parts[3], TransformFlow)
    u = torch.randn(16, dtype=torch.float64)
    flow = flow.double()
    x = flow(u)
    matrix = jacobian(lambda v: flow.forward_and_log_det(v)[0], u)
    torch.testing.assert_close(
        flow.log_abs_det_jacobian(u, x), torch.linalg.slogdet(matrix).logabsdet
    )
    torch.testing.assert_close(flow.inv(x.clone()), u)


def test_compose_flow_refuses_what_is_not_a_transform():
    with pytest.raises(TypeError, match=r"condition\(context\) first"):
        ComposeFlow([conditional_affine_coupling(4, context_dim=3)])
    with pytest.raises(TypeError, match="torch Transform"):
        ComposeFlow([torch.nn.Linear(2, 2)])


@pytest.mark.parametrize(
    "build",
    [
        lambda size: glow(1, depth=1, hidden_channels=4, squeeze=1, cache_size=size),
        lambda size: realnvp(4, num_layers=2, hidden_dims=(8,), cache_size=size),
    ],
    ids=["glow", "realnvp"],
)
def test_glow_and_realnvp_take_a_cache_size(build):
    assert build(1)._cache_size == 1
    flow = build(0)
    assert flow._cache_size == 0
    u = torch.randn(2, *IMAGE) if flow.domain.event_dim == 3 else torch.randn(2, 4)
    flow(u)
    assert flow._cached(u=u) is None
    with pytest.raises(ValueError, match="cache_size"):
        build(2)
