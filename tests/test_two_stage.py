"""TwoStageVAE: the hierarchy's ELBO, the two training stages, sampling and persistence."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_vaeflow.checkpoint import save_checkpoint
from pyro_vaeflow.infer import elbo, log_likelihood
from pyro_vaeflow.models import TwoStageVAE, VAEFlow, load_model
from pyro_vaeflow.rundir import RunDir
from pyro_vaeflow.training import fit
from tests.helpers import changed, fashion_images, fashion_pixels, snapshot

TINY_VAE = {"base_channels": 4, "fc_dim": 16}
TINY = {**TINY_VAE, "second_hidden_dims": (16, 16)}


def tiny_two_stage(**overrides) -> TwoStageVAE:
    return TwoStageVAE((1, 28, 28), 4, **{**TINY, **overrides})


def test_the_first_stage_is_vaeflows_vae_with_a_normal_prior_and_isotropic_variance():
    torch.manual_seed(0)
    two = tiny_two_stage()
    plain = VAEFlow(
        (1, 28, 28), 4, prior="normal", decoder_variance="isotropic", glow_depth=0, **TINY_VAE
    )
    plain.load_state_dict(two.first_stage.state_dict())
    x = fashion_images(8)
    two.second_stage_enabled = False
    pyro.set_rng_seed(1)
    first = elbo(two.model, two.guide, x)
    pyro.set_rng_seed(1)
    torch.testing.assert_close(first, elbo(plain.model, plain.guide, x))
    assert poutine.trace(two.guide).get_trace(x).stochastic_nodes == ["data", "z"]


def test_the_elbo_is_that_of_the_whole_hierarchy():
    torch.manual_seed(0)
    two = tiny_two_stage().double()
    x = fashion_images(5).double()
    guide = poutine.trace(two.guide).get_trace(x)
    model = poutine.trace(poutine.replay(two.model, trace=guide)).get_trace(x)
    z, u = guide.nodes["z"]["value"], guide.nodes["u"]["value"]
    loc, scale = two.first_stage.encoder(x)
    u_loc, u_scale = two.second_stage.encode(z)
    expected = (
        dist.Normal(0.0, 1.0).log_prob(u).sum(-1)
        + two.second_stage.likelihood(u).log_prob(z)
        + two.first_stage.likelihood(z).log_prob(x)
        - dist.Normal(loc, scale).log_prob(z).sum(-1)
        - dist.Normal(u_loc, u_scale).log_prob(u).sum(-1)
    )
    model.compute_log_prob()
    guide.compute_log_prob()
    found = sum(model.nodes[n]["log_prob"] for n in ("u", "z", "x")) - sum(
        guide.nodes[n]["log_prob"] for n in ("z", "u")
    )
    torch.testing.assert_close(found, expected)


def test_stage_two_trains_only_the_second_stage():
    torch.manual_seed(0)
    two = tiny_two_stage()
    before = snapshot(two)
    fit(two, fashion_pixels(32), "first", epochs=1, batch_size=16, lr=1e-2, progress=False)
    assert changed(before, two, "second_stage.") == []
    assert changed(before, two, "first_stage.encoder.")
    assert changed(before, two, "first_stage.decoder.")
    assert two.second_stage_enabled
    after_first = snapshot(two)
    history = fit(
        two, fashion_pixels(32), "second", epochs=3, batch_size=16, lr=1e-2, progress=False
    )
    assert changed(after_first, two, "second_stage.")
    assert changed(after_first, two, "first_stage.") == []
    assert all(math.isfinite(row["train_bpd"]) for row in history)


def test_the_second_stage_fits_the_latents():
    """Stage 2 raises the ELBO of the hierarchy on the training images (it learns q(z))."""
    torch.manual_seed(0)
    two = tiny_two_stage(second_hidden_dims=(32, 32))
    pixels = fashion_pixels(64)
    fit(two, pixels, "first", epochs=2, batch_size=16, lr=3e-3, progress=False)
    x = fashion_images(64)
    pyro.set_rng_seed(0)
    start = elbo(two.model, two.guide, x, num_particles=8).mean()
    history = fit(two, pixels, "second", epochs=8, batch_size=16, lr=3e-3, progress=False)
    pyro.set_rng_seed(0)
    end = elbo(two.model, two.guide, x, num_particles=8).mean()
    assert history[-1]["train_bpd"] < history[0]["train_bpd"]
    assert end > start


def test_importance_sampling_bounds_the_elbo():
    torch.manual_seed(0)
    two = tiny_two_stage()
    x = fashion_images(6)
    pyro.set_rng_seed(0)
    bound = elbo(two.model, two.guide, x, num_particles=200).mean()
    pyro.set_rng_seed(0)
    assert log_likelihood(two.model, two.guide, x, num_samples=200).mean() >= bound


@pytest.mark.parametrize("stage_two", [True, False])
def test_samples_go_through_both_stages(stage_two):
    torch.manual_seed(0)
    two = tiny_two_stage()
    two.second_stage_enabled = stage_two
    torch.manual_seed(1)
    z = two.sample_latents(5)
    torch.manual_seed(1)
    u = torch.randn(5, 4)
    torch.testing.assert_close(z, two.second_stage.decode(u) if stage_two else u)
    torch.manual_seed(1)
    images = two.sample(5)
    torch.testing.assert_close(images, two.decoder_mean(z))
    assert images.shape == (5, 1, 28, 28)


def test_a_file_of_the_layout_before_composition_loads(tmp_path):
    """Files written when the first stage's parts sat at the top level (``encoder.*``)."""
    two = tiny_two_stage()
    old = {key.removeprefix("first_stage."): value for key, value in two.state_dict().items()}
    assert "encoder.net.0.weight" in old
    config = {**two.config, "min_scale": 1e-3, "depth": 2, "blocks_per_scale": 1}
    payload = {"kind": "model", "architecture": "two-stage", "config": config, "model": old}
    loaded = load_model(save_checkpoint(payload, tmp_path / "old.pt"))
    for name, value in two.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name


@pytest.mark.parametrize("option", ["prior", "glow_depth"])
def test_options_of_the_paper_model_are_refused(option):
    with pytest.raises(ValueError, match=option):
        TwoStageVAE((1, 28, 28), 4, **{option: 0})


def test_a_checkpoint_of_the_layout_before_composition_resumes(tmp_path):
    two, pixels = tiny_two_stage(), fashion_pixels(32)
    fit(two, pixels, "second", epochs=1, batch_size=16, run_dir=tmp_path, progress=False)
    run = RunDir(tmp_path)
    payload = run.load_checkpoint("second")
    payload["model"] = {key.removeprefix("first_stage."): v for key, v in payload["model"].items()}
    run.save_checkpoint("second", payload)
    resumed = tiny_two_stage()
    history = fit(resumed, pixels, "second", 2, 16, run_dir=tmp_path, resume=True, progress=False)
    assert [row["epoch"] for row in history] == [1, 2]
    assert torch.equal(
        resumed.first_stage.encoder.net[0].weight, two.first_stage.encoder.net[0].weight
    )
