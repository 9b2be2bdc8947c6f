"""AGAVE: the auxiliary image and decoder, the λ-weighted objective, inference, persistence."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyro_vaeflow.infer import bits_per_dim, elbo, log_likelihood
from pyro_vaeflow.models import AGAVE
from pyro_vaeflow.training import fit
from tests.helpers import fashion_images, fashion_pixels

TINY = {
    "latent_dim": 4,
    "base_channels": 4,
    "fc_dim": 16,
    "cond_channels": 4,
    "pixelcnn_channels": 8,
    "pixelcnn_layers": 2,
}


def tiny_agave(**overrides) -> AGAVE:
    return AGAVE((1, 28, 28), **{**TINY, **overrides})


@pytest.mark.parametrize(
    ("aux_levels", "aux_downsample", "shape"),
    [(None, 1, (1, 28, 28)), (32, 1, (1, 28, 28)), (None, 2, (1, 14, 14)), (4, 4, (1, 7, 7))],
)
def test_auxiliary_image(aux_levels, aux_downsample, shape):
    model = tiny_agave(aux_levels=aux_levels, aux_downsample=aux_downsample)
    x = fashion_images(3)
    y = model.aux_target(x)
    assert model.aux_shape == shape
    assert y.shape == (3, *shape)
    levels = model.aux_levels
    assert ((y >= 0) & (y < levels) & (y == y.round())).all()
    if aux_downsample == 1:  # fewer colour levels: the top bits of each pixel
        expected = torch.div(fashion_pixels(3).float(), 256 // levels, rounding_mode="floor")
        torch.testing.assert_close(y, expected)
    z = torch.randn(2, 3, 4)
    assert model.aux_mean(z).shape == (2, 3, *shape)
    assert model.aux_likelihood(model.aux_mean(z)).batch_shape == (2, 3)
    assert model.decode_aux(z[0]).shape == (3, *shape)


def _traces(model: AGAVE, x: torch.Tensor, seed: int):
    pyro.set_rng_seed(seed)
    guide = poutine.trace(model.guide).get_trace(x)
    trace = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(x)
    guide.compute_log_prob()
    trace.compute_log_prob()
    return trace, guide


@pytest.mark.parametrize(("aux_weight", "kl_weight"), [(1.0, 1.0), (1.0, 2.0), (0.5, 4.0)])
def test_training_objective_is_the_weighted_sum(aux_weight, kl_weight):
    r"""Trace_ELBO in training = ELBO + α E log p(y|z) - (λ - 1) KL, on the same z."""
    model = tiny_agave(aux_levels=16, aux_downsample=2, aux_weight=aux_weight, kl_weight=kl_weight)
    x = fashion_images(4)
    pyro.set_rng_seed(0)
    loss = Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    trace, guide = _traces(model, x, seed=0)
    assert trace.nodes["z"]["scale"] == kl_weight
    assert guide.nodes["z"]["scale"] == kl_weight
    assert trace.nodes["aux"]["scale"] == aux_weight
    log_x = trace.nodes["x"]["unscaled_log_prob"].sum()
    log_aux = trace.nodes["aux"]["unscaled_log_prob"].sum()
    kl = guide.nodes["z"]["unscaled_log_prob"].sum() - trace.nodes["z"]["unscaled_log_prob"].sum()
    true_elbo = log_x - kl
    torch.testing.assert_close(-loss, true_elbo + aux_weight * log_aux - (kl_weight - 1) * kl)
    # a valid but looser bound: the auxiliary term is a discrete log-probability
    assert log_aux <= 0
    assert -loss <= true_elbo + 1e-3


def test_evaluation_is_the_true_model():
    model = tiny_agave(aux_weight=2.0, kl_weight=3.0)
    x = fashion_images(2)
    with torch.no_grad():
        no_grad = _traces(model, x, seed=0)
    model.eval()
    evaluating = _traces(model, x, seed=0)
    model.train()
    for trace, guide in (no_grad, evaluating):
        assert "aux" not in trace.nodes
        assert trace.nodes["z"]["scale"] == 1.0
        assert guide.nodes["z"]["scale"] == 1.0
    pyro.set_rng_seed(0)
    with torch.no_grad():  # as fit's validation and SVI.evaluate_loss run it
        loss = Trace_ELBO().loss(model.model, model.guide, x)
    model.eval()
    pyro.set_rng_seed(0)
    true = Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    assert loss == pytest.approx(true.item(), rel=1e-6)


def test_no_auxiliary_site_without_its_weight():
    model = tiny_agave(aux_weight=0.0, kl_weight=1.0)
    trace, _ = _traces(model, fashion_images(2), seed=0)
    assert "aux" not in trace.nodes


def test_samples_are_pixel_levels(capsys):
    model = tiny_agave(n_bits=5, aux_levels=8)
    samples = model.sample(2)
    assert samples.shape == (2, 1, 28, 28)
    levels = samples * 31
    torch.testing.assert_close(levels, levels.round())
    assert "AGAVE sampling" in capsys.readouterr().err
    assert model.reconstruct(fashion_images(2), progress=False).shape == (2, 1, 28, 28)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"aux_levels": 3}, "power of 2"),
        ({"aux_levels": 512}, "power of 2"),
        ({"aux_levels": 1}, "aux_levels"),
        ({"aux_downsample": 3}, "divide"),
        ({"aux_downsample": 0}, "aux_downsample"),
        ({"aux_weight": -1.0}, "aux_weight"),
        ({"kl_weight": 0.0}, "kl_weight"),
        ({"kl_weight": math.nan}, "kl_weight"),
        ({"n_bits": 0}, "n_bits"),
        ({"kernel_size": 2}, "odd"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_agave(**kwargs)


def test_fashion_mnist_smoke_fit_and_importance_sampling():
    """A few steps on real Fashion-MNIST; then the importance-sampled log p(x) ≥ the ELBO."""
    model = tiny_agave(aux_levels=32, aux_downsample=2)
    history = fit(
        model, fashion_pixels(64, "train"), "all", epochs=1, batch_size=16, progress=False
    )
    assert math.isfinite(history[-1]["train_bpd"])
    x = fashion_images(6)
    bound = elbo(model.model, model.guide, x, num_particles=32)
    log_px = log_likelihood(model.model, model.guide, x, num_samples=32, progress=False)
    assert bound.shape == log_px.shape == (6,)
    assert log_px.mean() >= bound.mean()
    assert 0 < bits_per_dim(log_px.mean(), model.num_dims, model.n_bits) < 10
