"""VAEFlow: the Pyro model/guide, its queries, bad input and persistence."""

from __future__ import annotations

import pickle

import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vaeflow.checkpoint import CheckpointError
from pyro_vaeflow.models import VAEFlow
from tests.helpers import fashion_images, tiny_vae
from tests.registry import perturb


@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)], ids=str)
def test_defaults_build_a_working_model_for_the_usual_sizes(image_shape):
    vae = VAEFlow(image_shape)
    x = torch.rand(2, *image_shape)
    loss = Trace_ELBO().loss(vae.model, vae.guide, x)
    assert torch.isfinite(torch.tensor(loss))
    assert vae.sample(2).shape == (2, *image_shape)


@pytest.mark.parametrize("variance", ["diagonal", "isotropic", "fixed"])
@pytest.mark.parametrize("prior", ["flow", "normal"])
def test_every_configuration_trains_with_vectorised_particles(variance, prior):
    vae = tiny_vae(decoder_variance=variance, prior=prior)
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.differentiable_loss(vae.model, vae.guide, fashion_images(4))
    loss.backward()
    trained = [p for p in vae.parameters() if p.grad is not None]
    assert trained
    assert all(torch.isfinite(p.grad).all() for p in trained)


def test_decoder_scales_follow_the_variance_mode():
    z = torch.randn(3, 4)
    diagonal = tiny_vae().decoder_params(z)[1]
    isotropic = tiny_vae(decoder_variance="isotropic", decoder_scale_init=0.5).decoder_params(z)[1]
    fixed = tiny_vae(decoder_variance="fixed", decoder_scale_init=0.1).decoder_params(z)[1]
    assert diagonal.shape == (3, 1, 28, 28)
    assert (diagonal > 0).all()
    torch.testing.assert_close(isotropic, torch.full((3, 1, 28, 28), 0.5))
    torch.testing.assert_close(fixed, torch.full((3, 1, 28, 28), 0.1))


def test_the_identity_glow_layer_gives_exactly_the_plain_decoder_likelihood():
    """At the start of phase 2 the Glow decoder's log-likelihood equals the plain decoder's."""
    vae = tiny_vae()
    x, z = fashion_images(6), torch.randn(6, 4)
    with_glow = vae.likelihood(z).log_prob(x)
    vae.glow_enabled = False
    plain = vae.likelihood(z).log_prob(x)
    loc, scale = vae.decoder_params(z)
    assert torch.equal(with_glow, plain)
    torch.testing.assert_close(plain, dist.Normal(loc, scale).to_event(3).log_prob(x))


def test_queries_have_the_right_shapes():
    vae = perturb(tiny_vae(), scale=0.05)
    x = fashion_images(3)
    loc, scale = vae.encode(x)
    assert loc.shape == scale.shape == (3, 4)
    assert vae.decoder_mean(loc).shape == (3, 1, 28, 28)
    assert vae.decode(loc, temperature=0.5).shape == (3, 1, 28, 28)
    assert vae.reconstruct(x).shape == (3, 1, 28, 28)
    assert vae.sample(5, temperature=0.7, prior_temperature=0.9).shape == (5, 1, 28, 28)


def test_glow_at_temperature_zero_maps_the_mean():
    vae = perturb(tiny_vae(), scale=0.05)
    z = torch.randn(2, 4)
    torch.testing.assert_close(vae.decode(z, 0.0), vae.glow(vae.decoder_mean(z)))


def test_train_and_eval_modes_agree():
    vae = perturb(tiny_vae(), scale=0.05)
    x, z = fashion_images(3), torch.randn(3, 4)
    train = vae.likelihood(z).log_prob(x)
    vae.eval()
    torch.testing.assert_close(vae.likelihood(z).log_prob(x), train)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prior": "vamp"}, "prior"),
        ({"decoder_variance": "full"}, "decoder_variance"),
        ({"depth": 3}, "divisible by 8"),
    ],
)
def test_bad_configurations_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_vae(**kwargs)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_malicious_checkpoint_is_refused_without_side_effects(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"kind": "model", "config": _Exploit(target)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        VAEFlow.load(path)
    assert not target.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable checkpoint"),
        (b"garbage" * 10, "not a readable checkpoint"),
        (pickle.dumps([1, 2]), "not a readable checkpoint"),
    ],
    ids=["empty", "garbage", "foreign-pickle"],
)
def test_corrupt_checkpoints_raise(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        VAEFlow.load(path)


def test_truncated_and_mismatched_checkpoints_raise(tmp_path):
    tiny_vae().save(tmp_path / "model.pt")
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        VAEFlow.load(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        VAEFlow.load(tmp_path / "missing.pt")
    torch.save(
        {"kind": "model", "config": {"image_shape": (1, 28, 28), "latent_dim": 4}, "model": {}},
        tmp_path / "wrong.pt",
    )
    with pytest.raises(CheckpointError, match="do not fit"):
        VAEFlow.load(tmp_path / "wrong.pt")


@pytest.mark.parametrize("glow_depth", [0, 2])
@pytest.mark.parametrize("prior", ["flow", "normal"])
def test_temperature_zero_gives_the_mean_with_or_without_glow(glow_depth, prior):
    vae = tiny_vae(glow_depth=glow_depth, prior=prior)
    vae.glow_enabled = False
    z = torch.randn(3, 4)
    assert torch.equal(vae.decode(z, 0.0), vae.decoder_mean(z))
    assert vae.reconstruct(fashion_images(2)).shape == (2, 1, 28, 28)
    assert vae.sample(2, temperature=0.0, prior_temperature=0.0).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="temperature"):
        vae.decode(z, -1.0)
