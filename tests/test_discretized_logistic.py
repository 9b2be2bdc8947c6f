"""The discretised logistic (a distribution over levels) and the dequantised density."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vaeflow.data import dequantize
from pyro_vaeflow.distributions import Dequantized, DiscretizedLogistic
from pyro_vaeflow.distributions.discretized_logistic import to_levels
from pyro_vaeflow.infer import bits_per_dim

LOCS = [-3.0, 0.0, 0.37, 1.0, 4.0]
SCALES = [1e-6, 1e-3, 0.05, 1.0, 1e3]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_bits", [1, 3, 8])
def test_sums_to_one_over_the_levels(dtype, n_bits):
    loc, scale = torch.meshgrid(
        torch.tensor(LOCS, dtype=dtype), torch.tensor(SCALES, dtype=dtype), indexing="ij"
    )
    d = DiscretizedLogistic(loc, scale, n_bits, validate_args=True)
    log_p = d.log_prob(d.enumerate_support())
    assert log_p.shape == (2**n_bits, *loc.shape)
    assert torch.isfinite(log_p).all()
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(log_p.logsumexp(0), torch.zeros_like(loc), rtol=0, atol=tolerance)


@pytest.mark.parametrize("loc", LOCS)
@pytest.mark.parametrize("scale", [0.01, 0.1, 1.0])
def test_matches_the_cdf_differences(float64, loc, scale):
    """log P(k) = log(σ((b_{k+1} - μ)/s) - σ((b_k - μ)/s)), edges ±∞, where that is accurate."""
    levels = 16
    d = DiscretizedLogistic(torch.tensor(loc), torch.tensor(scale), n_bits=4)
    k = torch.arange(levels, dtype=torch.float64)
    lower = torch.where(k == 0, -math.inf, k / levels)
    upper = torch.where(k == levels - 1, math.inf, (k + 1) / levels)
    naive = torch.sigmoid((upper - loc) / scale) - torch.sigmoid((lower - loc) / scale)
    accurate = naive > 1e-8
    torch.testing.assert_close(
        d.log_prob(k)[accurate], naive[accurate].log(), rtol=1e-9, atol=1e-12
    )


def test_far_tails_and_narrow_bins_are_finite_and_accurate(float64):
    # Deep in a tail: log P(k) ≈ log of the logistic density there, times the bin width.
    d = DiscretizedLogistic(torch.tensor(0.0), torch.tensor(1e-3), n_bits=8)
    k = torch.tensor(128.0)  # bin [0.5, 0.50390625), 500 scales away from the location
    a, b = 0.5 / 1e-3, (129 / 256) / 1e-3
    expected = -a + math.log1p(-math.exp(a - b))  # log(σ(-a) - σ(-b)), σ(-t) ≈ e^{-t}
    assert d.log_prob(k).item() == pytest.approx(expected, rel=1e-9)
    # A scale much wider than a bin: P(k) ≈ density at the centre × width.
    wide = DiscretizedLogistic(torch.tensor(0.3), torch.tensor(50.0), n_bits=8)
    centre = torch.tensor((100 + 0.5) / 256)
    z = (centre - 0.3) / 50.0
    density = torch.sigmoid(z) * torch.sigmoid(-z) / 50.0
    assert wide.log_prob(torch.tensor(100.0)).item() == pytest.approx(
        (density / 256).log().item(), rel=1e-6
    )


def test_gradients_are_finite_at_extremes():
    loc = torch.tensor([-5.0, 0.5, 5.0, 0.5], requires_grad=True)
    raw = torch.tensor([1e-4, 1e-4, 1e-4, 1e3]).log().requires_grad_()
    d = DiscretizedLogistic(loc, raw.exp(), n_bits=8)
    value = torch.tensor([0.0, 128.0, 255.0, 17.0])
    d.log_prob(value).sum().backward()
    assert torch.isfinite(loc.grad).all()
    assert torch.isfinite(raw.grad).all()


def test_samples_follow_the_probabilities():
    torch.manual_seed(0)
    d = DiscretizedLogistic(torch.tensor(0.4), torch.tensor(0.15), n_bits=3)
    draws = d.sample((40_000,))
    assert draws.dtype == torch.float32
    assert ((draws >= 0) & (draws <= 7) & (draws == draws.round())).all()
    frequencies = torch.bincount(draws.long(), minlength=8).float() / len(draws)
    probabilities = d.log_prob(torch.arange(8.0)).exp()
    assert (frequencies - probabilities).abs().sum() < 0.02


def test_shapes_expand_and_plates():
    d = DiscretizedLogistic(torch.zeros(3, 1), torch.ones(4), n_bits=2)
    assert d.batch_shape == (3, 4)
    assert d.event_shape == ()
    assert d.sample((5,)).shape == (5, 3, 4)
    assert d.enumerate_support(expand=False).shape == (4, 1, 1)
    wider = d.expand((2, 3, 4))
    assert wider.batch_shape == (2, 3, 4)
    assert wider.n_bits == 2
    assert wider.log_prob(torch.zeros(2, 3, 4)).shape == (2, 3, 4)
    assert d.mode.shape == (3, 4)

    def model():
        with pyro.plate("data", 6):
            pyro.sample("x", DiscretizedLogistic(0.5, 0.1, 8), obs=torch.arange(6.0))

    trace = pyro.poutine.trace(model).get_trace()
    trace.compute_log_prob()
    assert trace.nodes["x"]["log_prob"].shape == (6,)


@pytest.mark.parametrize("n_bits", [0, 17, 2.5, True, "8"])
def test_rejects_bad_bit_depths(n_bits):
    with pytest.raises(ValueError, match="n_bits"):
        DiscretizedLogistic(0.0, 1.0, n_bits)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan])
def test_rejects_bad_scales(scale):
    with pytest.raises(ValueError, match="scale"):
        DiscretizedLogistic(torch.tensor(0.0), torch.tensor(scale), validate_args=True)


@pytest.mark.parametrize("value", [-1.0, 4.0, 0.5])
def test_rejects_values_outside_the_levels(value):
    d = DiscretizedLogistic(0.5, 0.1, n_bits=2, validate_args=True)
    with pytest.raises(ValueError, match="support"):
        d.log_prob(torch.tensor(value))


@pytest.mark.parametrize("n_bits", [1, 5, 8])
def test_levels_are_recovered_from_any_pixel_scaling(n_bits):
    levels = 2**n_bits
    k = torch.arange(levels, dtype=torch.float64)
    pixels = (k * 2 ** (8 - n_bits)).to(torch.uint8)
    for values in (
        dequantize(pixels, n_bits, torch.Generator().manual_seed(0), dtype=torch.float64),
        dequantize(pixels, n_bits, torch.Generator().manual_seed(1)),
        (k + 0.5) / levels,
        k / (levels - 1),
    ):
        assert torch.equal(to_levels(values, n_bits), k.to(values.dtype))


def test_dequantized_density_gives_the_discrete_bits():
    logits = torch.randn(2, 1, 3, 3)
    base = dist.Bernoulli(logits=logits).to_event(3)
    d = Dequantized(base, n_bits=1, validate_args=True)
    assert d.batch_shape == (2,)
    assert d.event_shape == (1, 3, 3)
    x = torch.rand(2, 1, 3, 3)
    discrete = base.log_prob((x >= 0.5).float())
    torch.testing.assert_close(d.log_prob(x), discrete + 9 * math.log(2))
    torch.testing.assert_close(
        bits_per_dim(d.log_prob(x), 9, n_bits=1), -discrete / (9 * math.log(2))
    )
    sample = d.sample((4,))
    assert sample.shape == (4, 2, 1, 3, 3)
    assert ((sample >= 0) & (sample < 1)).all()
    assert d.expand((5, 2)).log_prob(x).shape == (5, 2)


def test_dequantized_logistic_is_a_density_on_the_unit_interval(float64):
    """∫ p(x) dx over [0, 1) = Σ_k P(k) = 1: each bin holds P(k) · 2^n of density × 2^-n width."""
    d = Dequantized(DiscretizedLogistic(torch.tensor(0.3), torch.tensor(0.2), 3), n_bits=3)
    grid = (torch.arange(8 * 64) + 0.5) / (8 * 64)
    integral = d.log_prob(grid).exp().mean()
    assert integral.item() == pytest.approx(1.0, abs=1e-12)
    draws = d.sample((1000,))
    assert ((draws >= 0) & (draws < 1)).all()


def test_dequantized_rejects_bad_inputs():
    with pytest.raises(TypeError, match="distribution"):
        Dequantized(torch.zeros(3), n_bits=1)
    d = Dequantized(dist.Bernoulli(0.5), n_bits=1, validate_args=True)
    with pytest.raises(ValueError, match="support"):
        d.log_prob(torch.tensor(1.5))
