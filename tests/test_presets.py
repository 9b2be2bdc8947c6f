"""Every preset builds its model and takes a training step of each phase on tiny real data."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from pyro_vaeflow.models import build_model
from pyro_vaeflow.presets import PRESETS, Preset, get_preset, override
from pyro_vaeflow.run import schedule
from pyro_vaeflow.training import fit
from tests.helpers import fashion_pixels


def real_pixels(image_shape, n=2):
    """Real Fashion-MNIST images padded/resized to ``image_shape`` (grey copied to RGB)."""
    channels, height, width = image_shape
    pixels = fashion_pixels(n).float()
    if height != 28:
        pixels = F.interpolate(F.pad(pixels, (2, 2, 2, 2)), size=(height, width))
    return pixels.expand(n, channels, height, width).round().to(torch.uint8).contiguous()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_builds_and_trains_one_step_per_phase(name):
    preset = PRESETS[name]
    vae = build_model(preset.architecture, preset.image_shape, **preset.model)
    pixels = real_pixels(preset.image_shape)
    phases = [phase_name for phase_name, _ in schedule(preset, vae)]
    assert phases == list(vae.default_schedule)
    for phase_name in phases:
        history = fit(
            vae,
            pixels,
            phase_name,
            epochs=1,
            batch_size=2,
            lr=preset.lr,
            clip_norm=preset.clip_norm,
            progress=False,
        )
        assert math.isfinite(history[-1]["train_bpd"])


def test_paper_presets_have_the_paper_sizes():
    for name, depth in (("paper-cifar10", 3), ("paper-celeba", 4)):
        preset = PRESETS[name]
        assert preset.model["glow_depth"] == 32
        assert preset.model["glow_hidden_channels"] == 512
        assert preset.model["glow_coupling"] == "additive"
        assert preset.model["glow_squeeze"] == 1  # as openai/glow (see presets.py)
        assert preset.model["prior_layers"] == 16
        assert preset.model["prior_hidden_dims"] == (1024, 1024)
        assert preset.model["depth"] == depth
        assert preset.epochs == {"vae": 1000, "glow": 1000}
        assert (preset.lr, preset.lr_halve_every) == (1e-4, 250)


def test_overrides_and_unknown_presets():
    assert override(get_preset("cpu", vae_epochs=2), vae_epochs=None).vae_epochs == 2
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("gpu")


@pytest.mark.parametrize(
    ("name", "aliases", "epochs"),
    [
        ("cpu", {"vae_epochs": 2, "glow_epochs": 3}, {"vae": 2, "glow": 3}),
        ("cpu", {"glow_epochs": 0}, {"vae": 6, "glow": 0}),
        ("cpu", {"vae_epochs": 60, "glow_epochs": 40, "joint": True}, {"joint": 100}),
        ("two-stage-cpu", {"vae_epochs": 2, "glow_epochs": 3}, {"first": 2, "second": 3}),
        ("glow-cpu", {"vae_epochs": 7, "glow_epochs": 0}, {"all": 7}),
    ],
)
def test_the_old_epoch_fields_are_aliases_of_the_phases(name, aliases, epochs):
    preset = get_preset(name, **aliases)
    assert preset.epochs == epochs
    assert preset.vae_epochs == next(iter(epochs.values()))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_reads_back_from_its_json(name):
    assert Preset.from_dict(json.loads(json.dumps(PRESETS[name].to_dict()))) == PRESETS[name]


@pytest.mark.parametrize(
    ("architecture", "legacy", "epochs"),
    [
        ("vaeflow", {"vae_epochs": 6, "glow_epochs": 4, "joint": False}, {"vae": 6, "glow": 4}),
        ("vaeflow", {"vae_epochs": 6, "glow_epochs": 4, "joint": True}, {"joint": 10}),
        (
            "two-stage",
            {"vae_epochs": 6, "glow_epochs": 4, "joint": False},
            {"first": 6, "second": 4},
        ),
        ("glow", {"vae_epochs": 10, "glow_epochs": 0, "joint": False}, {"all": 10}),
    ],
)
def test_a_config_written_before_epochs_per_phase_still_reads(architecture, legacy, epochs):
    data = {**PRESETS["cpu"].to_dict(), "architecture": architecture, **legacy}
    del data["epochs"]
    assert Preset.from_dict(data).epochs == epochs


def test_joint_is_ignored_with_a_warning_by_a_model_without_a_joint_phase():
    with pytest.warns(UserWarning, match="no joint phase"):
        assert get_preset("glow-cpu", joint=True).epochs == {"all": 10}
    legacy = {**PRESETS["glow-cpu"].to_dict(), "vae_epochs": 3, "glow_epochs": 0, "joint": True}
    del legacy["epochs"]
    assert Preset.from_dict(legacy).epochs == {"all": 3}


def test_bad_presets_are_refused():
    with pytest.raises(ValueError, match="field 'epochs' must be a non-empty dict"):
        override(PRESETS["cpu"], epochs={})
    with pytest.raises(ValueError, match=r"epochs \(integers >= 0\), got \{'vae': -1\}"):
        override(PRESETS["cpu"], epochs={"vae": -1})
    with pytest.raises(ValueError, match="unknown preset fields"):
        Preset.from_dict({**PRESETS["cpu"].to_dict(), "colour": "red"})
