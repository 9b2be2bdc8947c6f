"""FlowDecoder and FlowPrior: densities, shapes, temperature, Pyro integration, bad input."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.optim import Adam
from torch import nn
from torch.autograd.functional import jacobian

from pyro_vaeflow.distributions import FlowDecoder, FlowPrior
from pyro_vaeflow.transforms import glow, realnvp
from tests.registry import perturb

IMAGE = (1, 4, 4)


def image_flow():
    return perturb(glow(1, depth=2, hidden_channels=6, coupling="affine", squeeze=1, init="data"))


def decoder(batch_shape=(3,), temperature=1.0, flow=None):
    loc = torch.randn(*batch_shape, *IMAGE)
    scale = 0.5 + torch.rand(*batch_shape, *IMAGE)
    return FlowDecoder(loc, scale, flow or image_flow(), temperature=temperature)


def brute_force_log_prob(d, x):
    """log N(f⁻¹(x); loc, scale) + log|det ∂f⁻¹/∂x| with an autograd Jacobian, one image."""
    shape = x.shape
    inverse = d.flow.inv
    matrix = jacobian(lambda v: inverse(v.reshape(shape)).reshape(-1), x.reshape(-1))
    u = inverse(x.clone())
    normal = torch.distributions.Normal(d.loc, d.scale).log_prob(u).sum()
    return normal + torch.linalg.slogdet(matrix).logabsdet


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_log_prob_is_the_change_of_variables(float64, temperature):
    d = decoder(batch_shape=(), temperature=temperature)
    x = d.flow(torch.randn(*IMAGE))
    torch.testing.assert_close(d.log_prob(x.clone()), brute_force_log_prob(d, x))


def test_log_prob_of_an_identity_flow_is_the_gaussian():
    d = decoder(flow=glow(1, depth=1, hidden_channels=4, squeeze=1, init="identity"))
    x = torch.randn(3, *IMAGE)
    expected = dist.Normal(d.loc, d.scale).to_event(3).log_prob(x)
    torch.testing.assert_close(d.log_prob(x), expected)


@pytest.mark.parametrize("sample_shape", [(), (2,), (4, 2)], ids=str)
def test_sample_shapes(sample_shape):
    d = decoder(batch_shape=(3,))
    for draw in (d.sample(sample_shape), d.rsample(sample_shape)):
        assert draw.shape == (*torch.Size(sample_shape), 3, *IMAGE)
    assert d.log_prob(d.sample(sample_shape)).shape == (*torch.Size(sample_shape), 3)


def test_rsample_is_differentiable_and_sample_is_not():
    d = decoder()
    d.loc.requires_grad_(True)
    assert d.has_rsample
    assert d.rsample().requires_grad
    assert not d.sample().requires_grad


def test_temperature_scales_the_base_standard_deviation_exactly(float64):
    flow = image_flow()
    d = decoder(flow=flow)
    draws = {}
    for temperature in (1.0, 0.3):
        pyro.set_rng_seed(1)
        draws[temperature] = flow.inv(
            FlowDecoder(d.loc, d.scale, flow, temperature=temperature).sample().clone()
        )
    torch.testing.assert_close(draws[0.3] - d.loc, 0.3 * (draws[1.0] - d.loc))


def test_temperature_does_not_change_log_prob():
    d = decoder()
    x = d.sample()
    cold = FlowDecoder(d.loc, d.scale, d.flow, temperature=0.1)
    torch.testing.assert_close(cold.log_prob(x.clone()), d.log_prob(x.clone()))


def test_expand_gives_the_batch_shape_and_keeps_the_flow():
    d = decoder(batch_shape=(3,), temperature=0.7)
    e = d.expand([2, 3])
    assert e.batch_shape == (2, 3)
    assert e.event_shape == IMAGE
    assert e.flow is d.flow
    assert e.temperature == 0.7
    assert e.sample().shape == (2, 3, *IMAGE)
    x = d.sample()
    torch.testing.assert_close(e.log_prob(x), d.log_prob(x).expand(2, 3))


def test_event_and_batch_shape():
    d = decoder(batch_shape=(2, 5))
    assert d.batch_shape == (2, 5)
    assert d.event_shape == IMAGE
    assert d.support.event_dim == 3


class TinyVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.flow = image_flow()
        self.decode = nn.Linear(2, 16)
        self.encode = nn.Linear(16, 4)
        self.log_scale = nn.Parameter(torch.zeros(IMAGE))

    def model(self, x):
        pyro.module("vae", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            loc = self.decode(z).reshape(-1, *IMAGE)
            scale = nn.functional.softplus(self.log_scale) + 1e-3
            pyro.sample("x", FlowDecoder(loc, scale.expand_as(loc), self.flow), obs=x)

    def guide(self, x):
        pyro.module("vae", self)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encode(x.reshape(x.shape[0], -1)).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def test_every_parameter_gets_a_finite_gradient_from_trace_elbo():
    vae = TinyVAE()
    x = torch.rand(8, *IMAGE)
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    loss.backward()
    for name, parameter in vae.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


def test_svi_with_the_same_obs_matches_a_fresh_computation_at_every_step():
    """Pyro issue #2564: an identity-keyed cache would score `obs` with the first step's flow."""
    vae = TinyVAE()
    x = torch.rand(8, *IMAGE)
    svi = SVI(vae.model, vae.guide, Adam({"lr": 0.05}), Trace_ELBO())
    d = FlowDecoder(torch.zeros(8, *IMAGE), 1.0, vae.flow)
    previous = None
    for _ in range(4):
        svi.step(x)
        cached_path = d.log_prob(x)
        u, log_det = vae.flow.inverse_and_log_det(x.clone())
        fresh = dist.Normal(0.0, 1.0).log_prob(u).sum((-3, -2, -1)) - log_det
        torch.testing.assert_close(cached_path, fresh)
        assert previous is None or not torch.allclose(cached_path, previous)
        previous = cached_path.detach()


def test_predictive_and_poutine_handlers_work():
    vae = TinyVAE()
    x = torch.rand(8, *IMAGE)
    samples = Predictive(vae.model, guide=vae.guide, num_samples=3, return_sites=["x"])(x)
    assert samples["x"].shape == (3, 8, *IMAGE)
    trace = pyro.poutine.trace(pyro.poutine.scale(vae.model, scale=0.5)).get_trace(x)
    trace.compute_log_prob()
    assert trace.nodes["x"]["log_prob"].shape == (8,)


def test_flow_prior_log_prob_is_the_change_of_variables(float64):
    flow = perturb(realnvp(3, num_layers=3, hidden_dims=(8, 8)))
    prior = FlowPrior(3, flow)
    z = torch.randn(3)
    matrix = jacobian(lambda v: flow.inv(v), z)
    expected = dist.Normal(0.0, 1.0).log_prob(flow.inv(z.clone())).sum()
    expected = expected + torch.linalg.slogdet(matrix).logabsdet
    torch.testing.assert_close(prior.log_prob(z), expected)


def test_flow_prior_temperature_and_plate():
    flow = realnvp(4, num_layers=2, hidden_dims=(8, 8))
    with pyro.plate("data", 1000):
        z = pyro.sample("z", FlowPrior(4, flow, temperature=0.5))
    assert z.shape == (1000, 4)
    assert abs(z.std().item() - 0.5) < 0.05


def test_flow_prior_follows_the_flow_dtype(float64):
    flow = realnvp(4, num_layers=1, hidden_dims=(4,))
    assert FlowPrior(4, flow).sample().dtype == torch.float64


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixels_raise(bad):
    d = decoder()
    x = d.sample()
    x[0, 0, 1, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        d.log_prob(x)


def test_wrong_event_shape_names_the_expected_shape():
    with pytest.raises(ValueError, match=r"\[\.\.\., 1, 4, 4\]"):
        decoder().log_prob(torch.rand(3, 1, 4, 5))


def test_wrong_channels_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"event shape \(1, 4, 4\)"):
        decoder().log_prob(torch.rand(3, 3, 4, 4))


def test_non_broadcasting_batch_raises():
    with pytest.raises(ValueError, match="does not broadcast"):
        decoder(batch_shape=(3,)).log_prob(torch.rand(2, *IMAGE))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"loc": torch.zeros(4, 4)}, ValueError, "at least 3 dimensions"),
        ({"scale": -1.0}, ValueError, "scale"),
        ({"temperature": -0.5}, ValueError, "temperature"),
        ({"temperature": math.nan}, ValueError, "temperature"),
        ({"flow": nn.Linear(2, 2)}, TypeError, "Transform"),
    ],
)
def test_bad_arguments_raise(kwargs, error, message):
    arguments = {"loc": torch.zeros(1, 4, 4), "scale": 1.0, "flow": image_flow()}
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        FlowDecoder(**arguments)


def test_validation_off_skips_the_checks():
    d = FlowDecoder(torch.zeros(1, 4, 4), 1.0, image_flow(), validate_args=False)
    x = torch.zeros(1, 4, 4)
    x[0, 0, 0] = math.nan
    assert torch.isnan(d.log_prob(x))
