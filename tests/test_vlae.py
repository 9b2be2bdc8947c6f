"""VLAE: the AF prior, the local PixelCNN decoder, free bits, inference and persistence."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyro_vaeflow.data import DynamicallyBinarized, binarize, dequantize
from pyro_vaeflow.infer import bits_per_dim, elbo, log_likelihood
from pyro_vaeflow.models import VLAE
from pyro_vaeflow.training import fit
from tests.helpers import fashion_images, fashion_pixels

TINY = {
    "latent_dim": 4,
    "base_channels": 4,
    "fc_dim": 16,
    "cond_channels": 2,
    "pixelcnn_channels": 8,
    "window": 2,
    "prior_steps": 2,
    "prior_hidden_dims": (8,),
}


def tiny_vlae(**overrides) -> VLAE:
    return VLAE((1, 28, 28), **{**TINY, **overrides})


def binary_images(n: int = 8, seed: int = 0) -> torch.Tensor:
    return binarize(fashion_pixels(n), torch.Generator().manual_seed(seed))


def images_for(model: VLAE, n: int = 8) -> torch.Tensor:
    return binary_images(n) if model.likelihood_name == "bernoulli" else fashion_images(n)


# -- the model -------------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic"])
def test_the_observed_pixels_bit_depth_follows_the_likelihood(likelihood):
    model = tiny_vlae(likelihood=likelihood)
    z = model.sample_latents(3)
    assert model.likelihood(z, images_for(model, 3)).event_shape == (1, 28, 28)
    assert model.n_bits == (1 if likelihood == "bernoulli" else 8)


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic"])
def test_samples_are_pixel_levels(likelihood, capsys):
    model = tiny_vlae(likelihood=likelihood)
    samples = model.sample(2, progress=True)
    assert samples.shape == (2, 1, 28, 28)
    levels = samples * (2**model.n_bits - 1)
    torch.testing.assert_close(levels, levels.round())
    assert samples.min() >= 0
    assert samples.max() <= 1
    assert "VLAE sampling" in capsys.readouterr().err
    assert model.reconstruct(images_for(model, 2), progress=False).shape == (2, 1, 28, 28)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"likelihood": "gaussian"}, "likelihood"),
        ({"window": 0}, "window"),
        ({"free_bits": -1.0}, "free_bits"),
        ({"free_bits": math.inf}, "free_bits"),
        ({"free_bits_groups": 3}, "divide"),
        ({"prior_hidden_dims": (2,)}, "hidden"),
        ({"n_bits": 9}, "n_bits"),
        ({"min_scale": 0.0}, "min_scale"),
        ({"pixelcnn_channels": 0}, "multiple"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_vlae(**kwargs)


# -- free bits -------------------------------------------------------------------------------


def _informative(model: VLAE) -> VLAE:
    """Posterior means far from 0: every per-group KL is clearly positive (about 5 nats/dim)."""
    with torch.no_grad():
        model.encoder.net[-1].bias[: model.latent_dim] = 3.0
    return model


def _losses(model: VLAE, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training objective, true ELBO) as Trace_ELBO losses on the same draws of z."""
    pyro.set_rng_seed(seed)
    train = Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    model.eval()
    pyro.set_rng_seed(seed)
    true = Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    model.train()
    return train, true


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_free_bits_objective_is_the_elbo_above_the_threshold(groups):
    model = _informative(tiny_vlae(free_bits=1.0, free_bits_groups=groups))
    x = binary_images(16)
    pyro.set_rng_seed(1)
    z = poutine.trace(model.guide).get_trace(x).nodes["z"]["value"]
    kl = model.kl_per_group(x, z).mean(0)
    assert (kl > model.free_bits).all(), kl
    train, true = _losses(model, x, seed=1)
    torch.testing.assert_close(train, true)


@pytest.mark.parametrize("groups", [1, 4])
def test_free_bits_objective_below_the_threshold(groups):
    """Below λ, the objective pays λ per group instead of the KL, and the prior gets no KL pull."""
    model = _informative(tiny_vlae(free_bits=100.0, free_bits_groups=groups))
    x = binary_images(16)
    pyro.set_rng_seed(2)
    z = poutine.trace(model.guide).get_trace(x).nodes["z"]["value"]
    kl = model.kl_per_group(x, z).mean(0)
    assert (kl < model.free_bits).all()
    train, true = _losses(model, x, seed=2)
    expected = true + len(x) * (model.free_bits - kl).sum()
    torch.testing.assert_close(train, expected)
    # The prior appears only in the KL, which free bits switch off: no gradient reaches it.
    pyro.set_rng_seed(2)
    Trace_ELBO().differentiable_loss(model.model, model.guide, x).backward()
    for p in model.prior_flow.parameters():
        assert p.grad is None or p.grad.abs().max() < 1e-4


def test_free_bits_only_in_training():
    model = tiny_vlae(free_bits=0.5)
    x = binary_images(2)

    def sites():
        guide = poutine.trace(model.guide).get_trace(x)
        return set(poutine.trace(poutine.replay(model.model, guide)).get_trace(x).nodes)

    assert "free_bits" in sites()
    with torch.no_grad():
        assert "free_bits" not in sites()
    model.eval()
    assert "free_bits" not in sites()
    model.train()
    model.free_bits = 0.0
    assert "free_bits" not in sites()


# -- inference, training, persistence --------------------------------------------------------


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic"])
def test_fashion_mnist_smoke_fit_and_importance_sampling(likelihood):
    """A few steps on real Fashion-MNIST; then the importance-sampled log p(x) ≥ the ELBO."""
    model = tiny_vlae(likelihood=likelihood, free_bits=0.05)
    pixels = fashion_pixels(64, "train")
    data = DynamicallyBinarized(pixels) if likelihood == "bernoulli" else pixels
    history = fit(model, data, "all", epochs=1, batch_size=16, n_bits=model.n_bits, progress=False)
    assert math.isfinite(history[-1]["train_bpd"])
    model.eval()
    x = images_for(model, 6)
    bound = elbo(model.model, model.guide, x, num_particles=32)
    log_px = log_likelihood(model.model, model.guide, x, num_samples=32, progress=False)
    assert bound.shape == log_px.shape == (6,)
    assert log_px.mean() >= bound.mean()
    bpd = bits_per_dim(log_px.mean(), model.num_dims, model.n_bits)
    assert 0 < bpd < (1.2 if likelihood == "bernoulli" else 9.0)


def test_bits_per_dim_is_the_discrete_code_length():
    """The observed density carries D n log 2, so bits_per_dim recovers -log2 P(levels) / D."""
    model = tiny_vlae(likelihood="logistic", n_bits=5)
    model.eval()
    x = dequantize(fashion_pixels(2), n_bits=5)
    pyro.set_rng_seed(0)
    guide = poutine.trace(model.guide).get_trace(x)
    z = guide.nodes["z"]["value"]
    fn = model.likelihood(z, x)
    discrete = fn.base.log_prob(model.levels(x))
    bits = bits_per_dim(fn.log_prob(x), 784, n_bits=5)
    torch.testing.assert_close(bits, -discrete / (784 * math.log(2)))
