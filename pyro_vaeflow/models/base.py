"""What every model class shares: its name, input checks, size and persistence."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import ClassVar, TypeVar

import pyro
import torch
from torch import Tensor, nn

from pyro_vaeflow.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyro_vaeflow.models._checks import check_images

__all__ = ["ImageModel"]

Model = TypeVar("Model", bound="ImageModel")


class ImageModel(nn.Module):
    """The base of the image models: ``image_shape``, ``config`` and a ``architecture`` name.

    A subclass sets ``architecture`` (its key in :data:`~pyro_vaeflow.models.ARCHITECTURES`),
    ``self.image_shape`` and ``self.config`` (its constructor's arguments, with
    ``image_shape``), and gets :meth:`check_images`, :attr:`num_dims`, :meth:`save` and
    :meth:`load`.
    """

    architecture: ClassVar[str]
    image_shape: tuple[int, int, int]
    config: dict

    def check_images(self, x: Tensor) -> None:
        """Raise a ``ValueError`` naming the problem unless ``x`` is ``N×C×H×W`` in [0, 1]."""
        check_images(x, self.image_shape)

    def _register(self, *names: str) -> None:
        """``pyro.module`` each named child (every child by default) that has trainable
        parameters, so that SVI optimises them; a model and a guide each register what they use.
        """
        children = dict(self.named_children())
        for name in names or children:
            if not hasattr(self, name):
                raise AttributeError(f"{type(self).__name__} has no part {name!r} to register")
            module = children.get(name)
            if module is not None and any(p.requires_grad for p in module.parameters()):
                pyro.module(name, module)

    @property
    def num_dims(self) -> int:
        """The number of pixels times channels, :math:`D = CHW`."""
        return math.prod(self.image_shape)

    def save(self, path: str | os.PathLike) -> Path:
        """Save the configuration and weights atomically, readable with ``weights_only=True``.

        A model built with custom networks must be rebuilt by hand and given the weights with
        ``load_state_dict``; :meth:`load` rebuilds the default networks.
        """
        payload = {
            "kind": "model",
            "architecture": self.architecture,
            "config": self.config,
            "model": self.state_dict(),
        }
        return save_checkpoint(payload, path)

    @classmethod
    def load(
        cls: type[Model], path: str | os.PathLike, map_location: str | torch.device = "cpu"
    ) -> Model:
        """Load a model written by :meth:`save` (or a training checkpoint of ``fit``).

        Files holding arbitrary Python objects are refused before any of their code runs;
        corrupt or foreign files, and files of another model class, raise
        :class:`~pyro_vaeflow.checkpoint.CheckpointError`.
        """
        payload = load_checkpoint(path)
        if "config" not in payload or "model" not in payload:
            raise CheckpointError(f"{path} holds no model (kind {payload['kind']!r})")
        architecture = payload.get("architecture", "vaeflow")  # files before there were others
        if architecture != cls.architecture:
            raise CheckpointError(
                f"{path} holds a {architecture!r} model, not a {cls.__name__}; load it with "
                "pyro_vaeflow.models.load_model"
            )
        config = dict(payload["config"])
        try:
            model = cls(config.pop("image_shape"), **config)
        except TypeError as error:
            raise CheckpointError(f"{path} is not a {cls.__name__} ({error})") from None
        try:
            model.load_state_dict(payload["model"])
        except RuntimeError as error:
            raise CheckpointError(f"{path}: the weights do not fit the model ({error})") from None
        return model.to(map_location)
