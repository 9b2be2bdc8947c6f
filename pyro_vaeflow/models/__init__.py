"""Models as Pyro model/guide pairs, and what they declare for training and evaluation."""

from pyro_vaeflow.models.agave import AGAVE
from pyro_vaeflow.models.base import (
    ImageModel,
    Phase,
    Sampler,
    Variant,
    sample_options,
    switched_off,
)
from pyro_vaeflow.models.glow import Glow, MultiscaleGlowDistribution
from pyro_vaeflow.models.latent import LatentVariableModel
from pyro_vaeflow.models.pixelcnn_vae import PixelCNNVAE
from pyro_vaeflow.models.registry import (
    ARCHITECTURES,
    build_model,
    load_model,
    register_architecture,
)
from pyro_vaeflow.models.two_stage import SecondStageVAE, TwoStageVAE
from pyro_vaeflow.models.vaeflow import VAEFlow
from pyro_vaeflow.models.vlae import VLAE
from pyro_vaeflow.nets import default_architecture as default_architecture  # the old home

__all__ = [
    "AGAVE",
    "ARCHITECTURES",
    "VLAE",
    "Glow",
    "ImageModel",
    "LatentVariableModel",
    "MultiscaleGlowDistribution",
    "Phase",
    "PixelCNNVAE",
    "Sampler",
    "SecondStageVAE",
    "TwoStageVAE",
    "VAEFlow",
    "Variant",
    "build_model",
    "load_model",
    "register_architecture",
    "sample_options",
    "switched_off",
]
