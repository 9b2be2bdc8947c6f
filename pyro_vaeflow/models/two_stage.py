r"""The two-stage VAE of Dai & Wipf (2019), the baseline of the paper's Table 1."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import DenseNN
from torch import Tensor, nn

from pyro_vaeflow.models.base import ImageModel, Phase, Sampler
from pyro_vaeflow.models.vaeflow import VAEFlow, _DecoderScale

__all__ = ["SecondStageVAE", "TwoStageVAE"]


class SecondStageVAE(nn.Module):
    r"""A VAE over the first stage's latents :math:`z`: :math:`u \sim \mathcal{N}(0, I)`,
    :math:`z \mid u \sim \mathcal{N}(h_\mu(u), \gamma^2 I)`, :math:`q(u \mid z)` a diagonal
    Gaussian; both networks are MLPs (Dai & Wipf: depth 3, width 1024) and :math:`\gamma` is
    learned, as in their first stage.

    Args:
        latent_dim: the size of :math:`z` (and of :math:`u`).
        hidden_dims: the MLPs' hidden widths.
        scale_init: the initial :math:`\gamma`.
        min_scale: the floor of :math:`\gamma`.

    Example:
        >>> stage = SecondStageVAE(4, hidden_dims=(16, 16))
        >>> loc, scale = stage.encode(torch.zeros(3, 4))
        >>> loc.shape, stage.decode(loc).shape
        (torch.Size([3, 4]), torch.Size([3, 4]))
    """

    def __init__(
        self,
        latent_dim: int,
        hidden_dims: Sequence[int] = (1024, 1024, 1024),
        scale_init: float = 1.0,
        min_scale: float = 1e-3,
    ) -> None:
        super().__init__()
        self.encoder = DenseNN(latent_dim, list(hidden_dims), param_dims=[latent_dim, latent_dim])
        self.decoder = DenseNN(latent_dim, list(hidden_dims), param_dims=[latent_dim])
        self.scale = _DecoderScale("isotropic", scale_init, min_scale)

    def encode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The mean and standard deviation of :math:`q(u \\mid z)`."""
        loc, raw = self.encoder(z)
        return loc, nn.functional.softplus(raw) + 1e-4

    def decode(self, u: Tensor) -> Tensor:
        r"""The mean :math:`h_\mu(u)` of :math:`p(z \mid u)`."""
        return self.decoder(u)

    def likelihood(self, u: Tensor) -> dist.TorchDistribution:
        r""":math:`p(z \mid u) = \mathcal{N}(h_\mu(u), \gamma^2 I)`."""
        loc = self.decode(u)
        return dist.Normal(loc, self.scale(None, loc)).to_event(1)


class TwoStageVAE(ImageModel):
    r"""The two-stage VAE (Dai & Wipf, 2019): a VAE with a learned isotropic decoder variance,
    then a second VAE fitted to the first one's latents.

    .. math::
        u \sim \mathcal{N}(0, I), \quad z \mid u \sim \mathcal{N}(h_\mu(u), \gamma_2^2 I),
        \quad x \mid z \sim \mathcal{N}(g_\mu(z), \gamma_1^2 I),
        \qquad q(z, u \mid x) = q_\phi(z \mid x)\, q_\eta(u \mid z).

    Stage 1 (phase ``"first"``) trains the first VAE (:attr:`first_stage`) with the prior
    :math:`\mathcal{N}(0, I)` on :math:`z` (the second stage is switched off:
    ``second_stage_enabled=False``). Stage 2 (phase ``"second"``) trains only :math:`h`,
    :math:`\gamma_2` and :math:`q_\eta` (:attr:`second_stage`) on the ELBO of the whole
    hierarchy with the first stage frozen; its gradient is that of
    :math:`\mathbb{E}_{q_\phi(z \mid x)}[\mathrm{ELBO}_2(z)]`, the second VAE's objective on
    latents drawn from the encoder, as in Dai & Wipf. :meth:`model` and :meth:`guide` are that
    hierarchy, so ``pyro_vaeflow.infer.elbo`` and ``log_likelihood`` bound the two-stage
    model's :math:`\log p(x)` directly.

    The first stage is a :class:`VAEFlow` with no Glow layer and a standard normal prior, so
    that its architecture is that of the paper's model (the comparison the paper insists on).

    Args:
        image_shape: ``(C, H, W)``.
        latent_dim: the size of :math:`z` and :math:`u`.
        decoder_variance: the first stage's decoder variance (``"isotropic"``: Dai & Wipf's).
        second_hidden_dims: the second stage's MLP widths (Dai & Wipf: three of 1024).
        **kwargs: the first stage's network sizes, as for :class:`VAEFlow` (``depth``,
            ``base_channels``, ``blocks_per_scale``, ``fc_dim``, ``decoder_scale_init``,
            ``min_scale``, ``encoder``, ``decoder``).

    Example:
        >>> vae = TwoStageVAE((1, 28, 28), latent_dim=4, base_channels=4, fc_dim=16,
        ...                   second_hidden_dims=(16, 16))
        >>> vae.sample(3).shape
        torch.Size([3, 1, 28, 28])
    """

    architecture = "two-stage"
    """The name of the model class in :data:`~pyro_vaeflow.models.ARCHITECTURES`."""
    phases = MappingProxyType(
        {
            "first": Phase(
                trains=("first_stage",),
                switches_off=("second_stage_enabled",),
                description="stage 1: the first VAE, with an N(0, I) prior",
            ),
            "second": Phase(
                trains=("second_stage",),
                description="stage 2: the second VAE on the first one's latents",
            ),
        }
    )
    default_schedule = ("first", "second")

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int | None = None,
        *,
        decoder_variance: str = "isotropic",
        second_hidden_dims: Sequence[int] = (1024, 1024, 1024),
        **kwargs,
    ) -> None:
        super().__init__(image_shape)
        for fixed in ("prior", "prior_layers", "prior_hidden_dims", "glow_depth"):
            if fixed in kwargs:
                raise ValueError(f"a TwoStageVAE has no {fixed!r} option")
        self.first_stage = VAEFlow(
            self.image_shape,
            latent_dim,
            prior="normal",
            decoder_variance=decoder_variance,
            glow_depth=0,
            **kwargs,
        )
        self.second_stage = SecondStageVAE(
            self.latent_dim, second_hidden_dims, min_scale=self.first_stage.config["min_scale"]
        )
        self.second_stage_enabled = True

    @property
    def latent_dim(self) -> int:
        """The size of :math:`z` (and :math:`u`)."""
        return self.first_stage.latent_dim

    @classmethod
    def upgrade_state_dict(cls, state: dict) -> dict:
        """Files written before the first stage was a part of its own name its parts at the top
        level (``encoder.*``); they are now under ``first_stage.``."""
        return {
            key if key.startswith(("first_stage.", "second_stage.")) else f"first_stage.{key}": v
            for key, v in state.items()
        }

    def model(self, x: Tensor) -> None:
        r""":math:`p(u)\,p(z \mid u)\,p(x \mid z)`, or :math:`p(z)\,p(x \mid z)` in stage 1."""
        if not self.second_stage_enabled:
            return self.first_stage.model(x)
        self.check_images(x)
        self._register()
        with pyro.plate("data", x.shape[0]):
            zeros = self._zeros(x.shape[0], self.latent_dim)
            u = pyro.sample("u", dist.Normal(zeros, torch.ones_like(zeros)).to_event(1))
            z = pyro.sample("z", self.second_stage.likelihood(u))
            pyro.sample("x", self.first_stage.likelihood(z), obs=x)

    def guide(self, x: Tensor) -> None:
        r""":math:`q(z \mid x)\,q(u \mid z)`, or :math:`q(z \mid x)` in stage 1."""
        if not self.second_stage_enabled:
            return self.first_stage.guide(x)
        self.check_images(x)
        self._register()
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.first_stage.encoder(x)
            z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            u_loc, u_scale = self.second_stage.encode(z)
            pyro.sample("u", dist.Normal(u_loc, u_scale).to_event(1))

    # -- queries ---------------------------------------------------------------------------------

    def prior(self, temperature: float = 1.0) -> dist.TorchDistribution:
        r"""The first stage's prior :math:`\mathcal{N}(0, T^2 I)` on :math:`z`."""
        return self.first_stage.prior(temperature)

    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""The mean and standard deviation of :math:`q(z \mid x)`."""
        return self.first_stage.encode(x)

    @torch.no_grad()
    def decoder_mean(self, z: Tensor) -> Tensor:
        r"""The first stage's decoder mean :math:`g_\mu(z)`."""
        return self.first_stage.decoder_mean(z)

    @torch.no_grad()
    def decode(self, z: Tensor, temperature: float = 0.0) -> Tensor:
        r""":math:`g_\mu(z)` plus ``temperature`` times the first stage's noise."""
        return self.first_stage.decode(z, temperature)

    @torch.no_grad()
    def sample_latents(self, n: int, temperature: float = 1.0) -> Tensor:
        r"""``n`` latents :math:`z = h_\mu(u)`, :math:`u \sim \mathcal{N}(0, T^2 I)` (stage 1:
        :math:`z \sim \mathcal{N}(0, T^2 I)`)."""
        z = temperature * torch.randn_like(self._zeros(n, self.latent_dim))
        return self.second_stage.decode(z) if self.second_stage_enabled else z

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 0.0, prior_temperature: float = 1.0) -> Tensor:
        r"""``n`` images through both stages: :math:`g_\mu(h_\mu(u))` plus ``temperature``
        times the first stage's noise (0, the default, gives the decoder means, as Dai & Wipf
        sample)."""
        return self.decode(self.sample_latents(n, prior_temperature), temperature)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, temperature: float = 0.0) -> Tensor:
        """Decode the posterior mean of each image."""
        return self.decode(self.encode(x)[0], temperature)

    # -- evaluation declarations -----------------------------------------------------------------

    def fid_samplers(self, n: int, temperature: float, main_only: bool = False) -> dict:
        """``"fid"`` scores the decoder means of latents drawn through both stages."""
        z = self.sample_latents(n)
        position = [0]

        def draw(count: int) -> Tensor:
            batch = z[position[0] : position[0] + count]
            position[0] += count
            return self.decoder_mean(batch)

        return {"fid": Sampler("FID of samples (decoder means)", draw)}

    def figures(self) -> dict[str, str]:
        """Samples at three temperatures of the first stage's noise, and an interpolation."""
        return {"samples": "samples", "interpolation": "interpolation"}
