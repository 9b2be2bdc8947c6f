"""Models as Pyro model/guide pairs."""

from pyro_vaeflow.models.vaeflow import VAEFlow, default_architecture

__all__ = ["VAEFlow", "default_architecture"]
