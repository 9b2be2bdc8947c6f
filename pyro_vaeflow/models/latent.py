r"""What the VAEs share: a latent :math:`z`, its prior, and a diagonal Gaussian encoder."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pyro_vaeflow.distributions import FlowPrior
from pyro_vaeflow.models.base import ImageModel

__all__ = ["LatentVariableModel"]


class LatentVariableModel(ImageModel):
    r"""An image model with a latent :math:`z \in \mathbb{R}^d`, a prior :math:`p(z)` and the
    guide :math:`q(z \mid x) = \mathcal{N}(\mu(x), \operatorname{diag}\sigma(x)^2)`.

    A subclass sets ``latent_dim``, ``encoder`` (images → ``(loc, scale)``) and ``prior_flow``
    (a flow on :math:`\mathbb{R}^d`, or ``None`` for :math:`\mathcal{N}(0, I)`), and writes its
    ``model``; :meth:`guide`, :meth:`prior`, :meth:`encode` and :meth:`sample_latents` come
    from here.
    """

    latent_dim: int
    encoder: nn.Module
    prior_flow: nn.Module | None

    def prior(self, temperature: float = 1.0) -> dist.TorchDistribution:
        r"""The prior :math:`p(z)` (sampling temperature ``temperature``)."""
        if self.prior_flow is not None:
            return FlowPrior(self.latent_dim, self.prior_flow, temperature=temperature)
        zeros = self._zeros(self.latent_dim)
        return dist.Normal(zeros, temperature * torch.ones_like(zeros)).to_event(1)

    def guide(self, x: Tensor) -> None:
        """The encoder :math:`q(z \\mid x)`, a diagonal Gaussian."""
        self.check_images(x)
        self._register("encoder")
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            with self._kl_scale():
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def _kl_scale(self) -> AbstractContextManager:
        """The scale of the latent site in training (1 here; AGAVE's λ)."""
        return nullcontext()

    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The mean and standard deviation of :math:`q(z \\mid x)`."""
        self.check_images(x)
        return self.encoder(x)

    @torch.no_grad()
    def sample_latents(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` latents :math:`z` from the prior at ``temperature``."""
        if self.prior_flow is not None:
            return self.prior(temperature).expand([n]).sample()
        return temperature * torch.randn_like(self._zeros(n, self.latent_dim))
