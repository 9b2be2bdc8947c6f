"""Every model class by name, to build one from a preset or load one from a file."""

from __future__ import annotations

import inspect
import os

import torch
from torch import nn

from pyro_vaeflow.checkpoint import CheckpointError, load_checkpoint
from pyro_vaeflow.models.agave import AGAVE
from pyro_vaeflow.models.glow import Glow
from pyro_vaeflow.models.two_stage import TwoStageVAE
from pyro_vaeflow.models.vaeflow import VAEFlow
from pyro_vaeflow.models.vlae import VLAE

__all__ = ["ARCHITECTURES", "build_model", "load_model", "sample_options"]

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "vaeflow": VAEFlow,
    "two-stage": TwoStageVAE,
    "glow": Glow,
    "vlae": VLAE,
    "agave": AGAVE,
}
"""Architecture name → model class (the ``architecture`` of a :class:`~pyro_vaeflow.Preset`)."""


def build_model(architecture: str, image_shape, **options) -> nn.Module:
    """A new model of class ``ARCHITECTURES[architecture]``.

    Example:
        >>> build_model("two-stage", (1, 28, 28), latent_dim=4, base_channels=4, fc_dim=8,
        ...             second_hidden_dims=(8,)).architecture
        'two-stage'
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[architecture](image_shape, **options)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a model saved by any model class's ``save`` (or a training checkpoint).

    The file names its architecture; corrupt or foreign files raise
    :class:`~pyro_vaeflow.checkpoint.CheckpointError`.
    """
    payload = load_checkpoint(path)
    architecture = payload.get("architecture", "vaeflow")
    if architecture not in ARCHITECTURES:
        raise CheckpointError(f"{path} holds a model of unknown architecture {architecture!r}")
    return ARCHITECTURES[architecture].load(path, map_location=map_location)


def sample_options(model: nn.Module, **options) -> dict:
    """The ``options`` that ``model.sample`` accepts (temperatures, ``progress``, ...).

    Models differ in how they sample: a ``VAEFlow`` takes a Glow and a prior temperature, the
    standalone Glow one temperature, the PixelCNN models a progress bar.

    Example:
        >>> vae = build_model("two-stage", (1, 28, 28), latent_dim=2, base_channels=2,
        ...                   fc_dim=4, second_hidden_dims=(4,))
        >>> sample_options(vae, temperature=0.5, colour="red")
        {'temperature': 0.5}
    """
    accepted = inspect.signature(model.sample).parameters
    return {name: value for name, value in options.items() if name in accepted}
