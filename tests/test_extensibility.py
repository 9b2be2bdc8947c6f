"""A model class of a user's own, with two phases of its own, goes through the whole library:
``fit`` trains each phase, the run layer trains, evaluates (FID included) and reports it, and
``load_model`` reads it back, with no edit to the library."""

from __future__ import annotations

from types import MappingProxyType

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import Tensor, nn

from pyro_vaeflow.models import (
    ARCHITECTURES,
    LatentVariableModel,
    Phase,
    load_model,
    register_architecture,
)
from pyro_vaeflow.presets import Preset
from pyro_vaeflow.run import evaluate, make_figures, summary_table, train
from pyro_vaeflow.training import fit
from tests.helpers import changed, fashion_pixels, snapshot


class MeanThenScale(LatentVariableModel):
    """An MLP VAE that first fits the decoder's mean with a unit scale, then only the scale."""

    architecture = "test-mean-then-scale"
    phases = MappingProxyType(
        {
            "mean": Phase(
                trains=("encoder", "decoder"),
                switches_off=("learned_scale",),
                description="encoder and decoder mean, with a unit decoder scale",
            ),
            "scale": Phase(trains=("log_scale",), description="only the decoder's scale"),
        }
    )
    default_schedule = ("mean", "scale")

    def __init__(self, image_shape, latent_dim: int = 2, hidden: int = 16) -> None:
        super().__init__(image_shape)
        self.latent_dim, self.prior_flow, self.learned_scale = latent_dim, None, True
        pixels = self.num_dims
        self.encoder = _Encoder(pixels, hidden, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, pixels)
        )
        self.log_scale = _LogScale(self.image_shape)

    def _mean(self, z: Tensor) -> Tensor:
        return self.decoder(z).reshape(*z.shape[:-1], *self.image_shape)

    def model(self, x: Tensor) -> None:
        self.check_images(x)
        self._register("decoder", "log_scale")
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            loc = self._mean(z)
            scale = self.log_scale(loc) if self.learned_scale else torch.ones_like(loc)
            pyro.sample("x", dist.Normal(loc, scale).to_event(3), obs=x)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        return self._mean(self.sample_latents(n))


class _Encoder(nn.Module):
    def __init__(self, pixels: int, hidden: int, latent_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loc, raw = self.net(x.flatten(-3)).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw) + 1e-3


class _LogScale(nn.Module):
    def __init__(self, image_shape) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.full(image_shape, -1.0))

    def forward(self, like: Tensor) -> Tensor:
        return self.value.exp().expand_as(like)


@pytest.fixture
def registered():
    register_architecture(MeanThenScale)
    yield MeanThenScale
    del ARCHITECTURES[MeanThenScale.architecture]


def test_fit_trains_each_declared_phase_and_only_its_parts():
    model = MeanThenScale((1, 28, 28))
    pixels = fashion_pixels(32)
    before = snapshot(model)
    fit(model, pixels, "mean", epochs=1, batch_size=16, progress=False)
    assert changed(before, model, "encoder.")
    assert changed(before, model, "decoder.")
    assert changed(before, model, "log_scale.") == []
    assert model.learned_scale  # switched back on after the phase
    after_mean = snapshot(model)
    fit(model, pixels, "scale", epochs=1, batch_size=16, progress=False)
    assert changed(after_mean, model, "log_scale.")
    assert changed(after_mean, model, "encoder.") == []
    assert changed(after_mean, model, "decoder.") == []
    with pytest.raises(ValueError, match="has no phase 'glow'"):
        fit(model, pixels, "glow", progress=False)


def test_the_run_layer_trains_evaluates_and_reports_it(registered, tmp_path):
    preset = Preset(
        "mean-then-scale",
        "a user's own model",
        "fashion-mnist",
        (1, 28, 28),
        {"latent_dim": 2, "hidden": 16},
        architecture=registered.architecture,
        epochs={"mean": 2, "scale": 1},
        batch_size=32,
        train_images=64,
        elbo_images=8,
        is_images=2,
        is_samples=4,
        fid_samples=8,
    )
    _, history = train(preset, tmp_path, progress=False)
    assert [(row["phase"], row["epoch"]) for row in history] == [
        ("mean", 1),
        ("mean", 2),
        ("scale", 1),
    ]
    model = load_model(tmp_path / "model.pt")
    assert isinstance(model, MeanThenScale)
    metrics = evaluate(model, preset, tmp_path, fid_cache_dir=tmp_path / "cache", progress=False)
    assert 0 < metrics["test_elbo_bpd"] < 30
    assert metrics["fid"] > 0
    assert "fid_temperature" not in metrics  # its samples take no temperature
    table = summary_table(metrics, history)
    assert "| FID of samples (8 samples) |" in table
    assert "| phase mean: epochs, minutes | 2," in table
    assert "| phase scale: epochs, minutes | 1," in table
    figures = make_figures(model, history, tmp_path)
    assert sorted(path.stem for path in figures) == ["samples", "training_curves"]


def test_subclasses_and_mixins_record_their_config_and_star_args_are_refused(tmp_path):
    class Logged:
        def __init__(self, image_shape, **options) -> None:
            super().__init__(image_shape, **options)
            self.built = True

    class Mixed(Logged, MeanThenScale):
        architecture = "test-mixed"

    class Wider(MeanThenScale):
        architecture = "test-wider"

    assert Mixed((1, 28, 28), hidden=8).config == {"image_shape": (1, 28, 28), "hidden": 8}
    wider = Wider((1, 28, 28), 3)
    assert wider.config == {"image_shape": (1, 28, 28), "latent_dim": 3, "hidden": 16}
    assert Wider.load(wider.save(tmp_path / "wider.pt")).latent_dim == 3
    with pytest.raises(TypeError, match=r"takes \*args"):

        class Anything(MeanThenScale):
            def __init__(self, *args) -> None:
                super().__init__(*args)
