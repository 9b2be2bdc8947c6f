"""Small real data and tiny models shared by the model, training and inference tests."""

from __future__ import annotations

import functools

import torch

from pyro_vaeflow.data import dequantize, load_images
from pyro_vaeflow.models import VAEFlow

TINY = {
    "base_channels": 4,
    "fc_dim": 16,
    "prior_layers": 2,
    "prior_hidden_dims": (16, 16),
    "glow_depth": 2,
    "glow_hidden_channels": 8,
}
"""The sizes of a tiny ``VAEFlow``, all but its latent dimension."""

TINY_TWO_STAGE = {"latent_dim": 4, "base_channels": 4, "fc_dim": 16, "second_hidden_dims": (16,)}
"""A tiny ``TwoStageVAE``."""

TINY_MODELS = {
    "glow-cpu": {"levels": 2, "depth": 1, "hidden_channels": 8},
    "vlae-binary-cpu": {
        "likelihood": "bernoulli",
        "latent_dim": 4,
        "base_channels": 4,
        "fc_dim": 16,
        "pixelcnn_channels": 8,
        "cond_channels": 2,
        "prior_hidden_dims": (8,),
    },
    "agave-cpu": {
        "latent_dim": 4,
        "base_channels": 4,
        "fc_dim": 16,
        "pixelcnn_channels": 8,
        "pixelcnn_layers": 2,
        "cond_channels": 4,
    },
}
"""Preset name → the model of a tiny single-phase baseline of that preset's architecture."""


@functools.cache
def fashion_pixels(n: int = 64, split: str = "test") -> torch.Tensor:
    """The first ``n`` real Fashion-MNIST images of ``split`` as ``uint8`` pixels."""
    return load_images("fashion-mnist", split)[:n].clone()


def fashion_images(n: int = 16, seed: int = 0) -> torch.Tensor:
    """The first ``n`` real Fashion-MNIST test images, dequantised with a fixed seed."""
    return dequantize(fashion_pixels(n), generator=torch.Generator().manual_seed(seed))


def tiny_vae(**overrides) -> VAEFlow:
    """A VAEFlow small enough for a unit test on 28×28 images."""
    return VAEFlow((1, 28, 28), 4, **{**TINY, **overrides})


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s state dict, to compare with after training."""
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module, prefix: str) -> list[str]:
    """The state-dict entries under ``prefix`` that differ from the ``before`` snapshot."""
    return [
        name
        for name, value in module.state_dict().items()
        if name.startswith(prefix) and not torch.equal(value, before[name])
    ]
