"""Every model class by name, to build one from a preset or load one from a file."""

from __future__ import annotations

import os

import torch

from pyro_vaeflow.checkpoint import CheckpointError, load_checkpoint
from pyro_vaeflow.models.agave import AGAVE
from pyro_vaeflow.models.base import ImageModel
from pyro_vaeflow.models.base import sample_options as sample_options  # its former home
from pyro_vaeflow.models.glow import Glow
from pyro_vaeflow.models.two_stage import TwoStageVAE
from pyro_vaeflow.models.vaeflow import VAEFlow
from pyro_vaeflow.models.vlae import VLAE

__all__ = ["ARCHITECTURES", "build_model", "load_model", "register_architecture"]

ARCHITECTURES: dict[str, type[ImageModel]] = {
    model.architecture: model for model in (VAEFlow, TwoStageVAE, Glow, VLAE, AGAVE)
}
"""Architecture name → model class (the ``architecture`` of a :class:`~pyro_vaeflow.Preset`)."""


def register_architecture(cls: type[ImageModel]) -> type[ImageModel]:
    """Make a model class of your own known by its ``architecture`` name, so that presets,
    :func:`build_model`, :func:`load_model` and the run layer can use it. Usable as a class
    decorator; registering the same class twice is harmless.

    Example:
        >>> class Tiny(VAEFlow):
        ...     architecture = "tiny-vaeflow"
        >>> register_architecture(Tiny) is ARCHITECTURES["tiny-vaeflow"]
        True
        >>> del ARCHITECTURES["tiny-vaeflow"]  # this example's class is not kept
    """
    if not (isinstance(cls, type) and issubclass(cls, ImageModel)):
        raise TypeError(f"expected a subclass of ImageModel, got {cls!r}")
    name = getattr(cls, "architecture", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} must set a class attribute architecture = '<name>'")
    if ARCHITECTURES.get(name, cls) is not cls:
        raise ValueError(f"the architecture name {name!r} is taken by {ARCHITECTURES[name]}")
    ARCHITECTURES[name] = cls
    return cls


def build_model(architecture: str, image_shape, **options) -> ImageModel:
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


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> ImageModel:
    """Load a model saved by any model class's ``save`` (or a training checkpoint).

    The file names its architecture; corrupt or foreign files raise
    :class:`~pyro_vaeflow.checkpoint.CheckpointError`.
    """
    payload = load_checkpoint(path)
    architecture = payload.get("architecture", "vaeflow")
    if architecture not in ARCHITECTURES:
        raise CheckpointError(f"{path} holds a model of unknown architecture {architecture!r}")
    return ARCHITECTURES[architecture].load(path, map_location=map_location)
