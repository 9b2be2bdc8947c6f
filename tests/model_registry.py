"""Every model architecture, built tiny, for the model contract suite.

Each case is a :class:`ModelCase`: ``build()`` returns a fresh model (seeded by the suite's
fixture) and ``images(n)`` real Fashion-MNIST test images in the form the model observes. A new
architecture gets the whole contract of ``test_model_contract.py`` by adding one case here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pyro_vaeflow.data import binarize
from pyro_vaeflow.models import AGAVE, VLAE, Glow, ImageModel, TwoStageVAE, VAEFlow
from tests.helpers import TINY, TINY_MODELS, TINY_TWO_STAGE, fashion_images, fashion_pixels
from tests.registry import perturb


def binary_images(n: int) -> torch.Tensor:
    """The first ``n`` test images, binarised with a fixed seed."""
    return binarize(fashion_pixels(n), torch.Generator().manual_seed(0))


@dataclass(frozen=True)
class ModelCase:
    """A tiny model of one architecture and the data it observes."""

    id: str
    build: Callable[[], ImageModel]
    images: Callable[[int], torch.Tensor] = fashion_images
    samples_on_levels: bool = False
    """Whether its samples are pixel levels ``k / (2^n - 1)`` (else real-valued images)."""


def _vaeflow(**overrides) -> Callable[[], VAEFlow]:
    # Perturbed, so that the identity Glow layer is not the identity any more.
    return lambda: perturb(VAEFlow((1, 28, 28), 4, **{**TINY, **overrides}), scale=0.05)


def _glow() -> Glow:
    model = Glow((1, 28, 28), **TINY_MODELS["glow-cpu"])
    model.log_prob(fashion_images(16))  # actnorm's data-dependent initialisation
    return perturb(model, scale=0.05)


def _vlae(**overrides) -> Callable[[], VLAE]:
    # Perturbed, so that the prior's flow is not the identity (its last layers start at 0).
    options = {**TINY_MODELS["vlae-binary-cpu"], **overrides}
    return lambda: perturb(VLAE((1, 28, 28), **options), scale=0.05)


def _agave(**overrides) -> Callable[[], AGAVE]:
    return lambda: AGAVE((1, 28, 28), **{**TINY_MODELS["agave-cpu"], **overrides})


CASES = [
    ModelCase("vaeflow", _vaeflow()),
    ModelCase(
        "vaeflow-affine-checkpointed", _vaeflow(glow_coupling="affine", glow_checkpoint=True)
    ),
    ModelCase(
        "vaeflow-isotropic-normal-prior", _vaeflow(decoder_variance="isotropic", prior="normal")
    ),
    ModelCase("vaeflow-without-glow", _vaeflow(glow_depth=0)),
    ModelCase("two-stage", lambda: TwoStageVAE((1, 28, 28), **TINY_TWO_STAGE)),
    ModelCase("glow", _glow),
    ModelCase("vlae-bernoulli", _vlae(), binary_images, samples_on_levels=True),
    ModelCase(
        "vlae-logistic-free-bits",
        _vlae(likelihood="logistic", free_bits=0.1, prior_affine=True),
        samples_on_levels=True,
    ),
    ModelCase("agave", _agave(), samples_on_levels=True),
    ModelCase(
        "agave-downsampled-aux",
        _agave(aux_downsample=2, aux_levels=16, kl_weight=3.0),
        samples_on_levels=True,
    ),
]
