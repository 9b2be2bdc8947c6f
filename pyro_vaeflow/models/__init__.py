"""Models as Pyro model/guide pairs."""

from pyro_vaeflow.models.agave import AGAVE
from pyro_vaeflow.models.base import ImageModel
from pyro_vaeflow.models.glow import Glow, MultiscaleGlowDistribution
from pyro_vaeflow.models.registry import ARCHITECTURES, build_model, load_model, sample_options
from pyro_vaeflow.models.two_stage import SecondStageVAE, TwoStageVAE
from pyro_vaeflow.models.vaeflow import VAEFlow, default_architecture
from pyro_vaeflow.models.vlae import VLAE

__all__ = [
    "AGAVE",
    "ARCHITECTURES",
    "VLAE",
    "Glow",
    "ImageModel",
    "MultiscaleGlowDistribution",
    "SecondStageVAE",
    "TwoStageVAE",
    "VAEFlow",
    "build_model",
    "default_architecture",
    "load_model",
    "sample_options",
]
