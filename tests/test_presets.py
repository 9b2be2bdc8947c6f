"""Every preset builds its model and takes a training step of each phase on tiny real data."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pyro_vaeflow.experiment import schedule
from pyro_vaeflow.models import build_model
from pyro_vaeflow.presets import PRESETS, get_preset, override
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
    assert len(phases) == (1 if preset.architecture not in ("vaeflow", "two-stage") else 2)
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
        assert (preset.vae_epochs, preset.glow_epochs) == (1000, 1000)
        assert (preset.lr, preset.lr_halve_every) == (1e-4, 250)


def test_overrides_and_unknown_presets():
    assert override(get_preset("cpu", vae_epochs=2), vae_epochs=None).vae_epochs == 2
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("gpu")
