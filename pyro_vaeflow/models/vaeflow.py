r"""The VAE with a normalizing-flow (Glow) decoder and a flow prior, as Pyro model and guide."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pyro_vaeflow.distributions import FlowDecoder
from pyro_vaeflow.models.base import Phase, Sampler, Variant
from pyro_vaeflow.models.latent import LatentVariableModel
from pyro_vaeflow.nets import ResNetSizes, default_architecture
from pyro_vaeflow.transforms import glow, realnvp
from pyro_vaeflow.validation import check_choice

__all__ = ["VAEFlow"]

_DECODER_VARIANCES = ("diagonal", "isotropic", "fixed")
_PRIORS = ("flow", "normal")


class _DecoderScale(nn.Module):
    """Maps the decoder's raw output to the scale g_σ(z) of the base Gaussian."""

    def __init__(self, mode: str, init: float, floor: float) -> None:
        super().__init__()
        self.mode = mode
        self.floor = floor
        if mode == "isotropic":
            raw = torch.log(torch.expm1(torch.tensor(float(init) - floor)))
            self.raw_gamma = nn.Parameter(raw)
        else:
            self.register_buffer("fixed", torch.tensor(float(init)))

    def forward(self, raw: Tensor | None, like: Tensor) -> Tensor:
        if self.mode == "diagonal":
            return nn.functional.softplus(raw) + self.floor
        if self.mode == "isotropic":
            return (nn.functional.softplus(self.raw_gamma) + self.floor).expand_as(like)
        return self.fixed.expand_as(like)


class VAEFlow(LatentVariableModel):
    r"""A VAE whose Gaussian decoder is pushed through an additive Glow flow (the paper's model).

    .. math::
        z \sim p_\psi(z) = \text{flow prior}, \qquad
        \bar x \mid z \sim \mathcal{N}\!\left(g_\mu(z), \operatorname{diag} g_\sigma(z)^2\right),
        \qquad x = f(\bar x),

    .. math::
        q_\phi(z \mid x) = \mathcal{N}\!\left(\mu_\phi(x), \operatorname{diag}\sigma_\phi(x)^2
        \right), \qquad
        \mathrm{ELBO}(x) = \mathbb{E}_q\!\left[\log p(x \mid z)\right]
        - \mathrm{KL}\!\left(q(z \mid x) \,\|\, p(z)\right).

    :meth:`model` and :meth:`guide` are ordinary Pyro functions, with the data in
    ``pyro.plate("data", N)`` over dim 0; ``x`` is a float tensor ``N×C×H×W`` in [0, 1]. The Glow
    layer :math:`f` starts as the exact identity (``init="identity"``), so phase 2 starts at the
    phase-1 reconstruction likelihood. ``glow_depth=0`` gives a plain VAE.

    ``glow_enabled`` switches the Glow layer off (phase 1 trains without it). The submodules
    ``encoder``, ``decoder``, ``decoder_scale``, ``prior_flow`` and ``glow`` are
    registered with Pyro one by one, and only when they have trainable parameters, so that a
    training phase freezes a part by turning its ``requires_grad`` off.

    Phases (:attr:`phases`): ``"vae"`` (phase 1: encoder, decoder and prior, with the Glow
    layer switched off), ``"glow"`` (phase 2: only the Glow layer), ``"prior"`` (only the flow
    prior, with early stopping, as the paper refitted it for CIFAR-10) and ``"joint"``
    (everything at once, the paper's ablation); a full training runs ``vae`` then ``glow``.

    Args:
        image_shape: ``(C, H, W)``.
        latent_dim: the size of :math:`z` (default from :func:`default_architecture`).
        prior: ``"flow"`` (Real NVP) or ``"normal"`` (:math:`\mathcal{N}(0, I)`).
        decoder_variance: ``"diagonal"`` (per-pixel, the paper's), ``"isotropic"`` (Dai & Wipf's
            learned :math:`\gamma`) or ``"fixed"``.
        decoder_scale_init: the initial :math:`\gamma` (isotropic) or the fixed scale.
        min_scale: the floor added to a learned decoder scale.
        depth: scales of the ResNet encoder/decoder.
        base_channels: ResNet channels at full resolution.
        blocks_per_scale: residual blocks per scale.
        fc_dim: width of the ResNet's fully connected layer.
        prior_layers: couplings of the flow prior.
        prior_hidden_dims: hidden widths of each prior coupling.
        glow_depth: steps of the Glow layer (0: none).
        glow_hidden_channels: width of each coupling's conditioner.
        glow_coupling: ``"additive"`` (the paper's) or ``"affine"``.
        glow_squeeze: squeezes around the Glow steps (default: 1 for 1-channel images).
        glow_checkpoint: gradient checkpointing over the Glow layer's steps (see
            :class:`~pyro_vaeflow.transforms.ComposeFlow`): less memory, about one more
            forward pass of the Glow layer per step; the gradients are the same.
        encoder: a custom encoder, ``x [..., C, H, W] → (loc, scale)`` of shape ``[..., d]``.
        decoder: a custom decoder, ``z [..., d] → [..., C', H, W]`` with :math:`C' = 2C` for
            a diagonal variance and :math:`C` otherwise.

    Example:
        >>> vae = VAEFlow((1, 28, 28), latent_dim=4, base_channels=4, fc_dim=16,
        ...               prior_layers=2, prior_hidden_dims=(8, 8), glow_depth=1,
        ...               glow_hidden_channels=8)
        >>> vae.sample(3, temperature=0.5).shape
        torch.Size([3, 1, 28, 28])
    """

    architecture = "vaeflow"
    """The name of the model class in :data:`~pyro_vaeflow.models.ARCHITECTURES`."""
    phases = MappingProxyType(
        {
            "vae": Phase(
                trains=("encoder", "decoder", "decoder_scale", "prior_flow"),
                switches_off=("glow_enabled",),
                description="phase 1: the VAE and its prior, without the Glow layer",
            ),
            "glow": Phase(
                trains=("glow",),
                description="phase 2: only the Glow layer; all else stays bit-identical",
                needs="a Glow layer (glow_depth > 0)",
            ),
            "prior": Phase(
                trains=("prior_flow",),
                patience=5,
                description="only the flow prior, with early stopping on a validation split",
                needs="a flow prior (prior='flow')",
            ),
            "joint": Phase(description="every part at once (the paper's ablation)"),
        }
    )
    default_schedule = ("vae", "glow")

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int | None = None,
        *,
        prior: str = "flow",
        decoder_variance: str = "diagonal",
        decoder_scale_init: float = 1.0,
        min_scale: float = 1e-3,
        depth: int | None = None,
        base_channels: int = 32,
        blocks_per_scale: int = 1,
        fc_dim: int = 512,
        prior_layers: int = 8,
        prior_hidden_dims: Sequence[int] = (256, 256),
        glow_depth: int = 8,
        glow_hidden_channels: int = 128,
        glow_coupling: str = "additive",
        glow_squeeze: int | None = None,
        glow_checkpoint: bool = False,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> None:
        super().__init__(image_shape)
        check_choice("prior", prior, _PRIORS)
        check_choice("decoder_variance", decoder_variance, _DECODER_VARIANCES)
        defaults = default_architecture(self.image_shape)
        self.latent_dim = latent_dim = latent_dim or defaults["latent_dim"]
        self.decoder_variance = decoder_variance
        net = ResNetSizes(self.image_shape, depth, base_channels, blocks_per_scale, fc_dim)
        channels = self.image_shape[0]
        out_channels = 2 * channels if decoder_variance == "diagonal" else channels
        self.encoder = encoder or net.encoder(latent_dim)
        self.decoder = decoder or net.decoder(latent_dim, out_channels)
        self.decoder_scale = _DecoderScale(decoder_variance, decoder_scale_init, min_scale)
        self.prior_flow = (
            realnvp(latent_dim, prior_layers, prior_hidden_dims) if prior == "flow" else None
        )
        self.glow_enabled = True
        self.glow = (
            glow(
                channels,
                glow_depth,
                glow_hidden_channels,
                glow_coupling,
                defaults["glow_squeeze"] if glow_squeeze is None else glow_squeeze,
                init="identity",
                checkpoint=glow_checkpoint,
            )
            if glow_depth > 0
            else None
        )

    # -- distributions -------------------------------------------------------------------------

    def decoder_params(self, z: Tensor) -> tuple[Tensor, Tensor]:
        r"""The mean :math:`g_\mu(z)` and scale :math:`g_\sigma(z)` of the base Gaussian."""
        out = self.decoder(z)
        if self.decoder_variance == "diagonal":
            loc, raw = out.chunk(2, dim=-3)
            return loc, self.decoder_scale(raw, loc)
        return out, self.decoder_scale(None, out)

    def likelihood(self, z: Tensor) -> dist.TorchDistribution:
        r""":math:`p(x \mid z)`: the base Gaussian pushed through the Glow layer, if any."""
        loc, scale = self.decoder_params(z)
        if self.glow is not None and self.glow_enabled:
            return FlowDecoder(loc, scale, self.glow)
        return dist.Normal(loc, scale).to_event(3)

    # -- Pyro model and guide --------------------------------------------------------------------

    def model(self, x: Tensor) -> None:
        """The generative model :math:`p(z)\\,p(x \\mid z)` over ``x`` (``N×C×H×W`` in [0, 1])."""
        self.check_images(x)
        self._register("prior_flow", "decoder", "decoder_scale", "glow")
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(z), obs=x)

    # -- queries ---------------------------------------------------------------------------------

    @torch.no_grad()
    def decoder_mean(self, z: Tensor) -> Tensor:
        r"""The underlying VAE's mean :math:`g_\mu(z)`, before the Glow layer."""
        return self.decoder_params(z)[0]

    @torch.no_grad()
    def decode(self, z: Tensor, temperature: float = 0.5) -> Tensor:
        r"""Images :math:`f(\bar x)`, :math:`\bar x \sim \mathcal{N}(g_\mu(z), (T g_\sigma)^2)`.

        At :math:`T = 0` this is :math:`f(g_\mu(z))`; without a Glow layer, :math:`f` is the
        identity.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        loc, scale = self.decoder_params(z)
        base = loc + temperature * scale * torch.randn_like(loc)
        return self.glow(base) if self.glow is not None and self.glow_enabled else base

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 0.5, prior_temperature: float = 1.0) -> Tensor:
        """``n`` images: :meth:`sample_latents` at ``prior_temperature``, then :meth:`decode`."""
        return self.decode(self.sample_latents(n, prior_temperature), temperature)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, temperature: float = 0.0) -> Tensor:
        """Decode the posterior mean of each image (at temperature 0: the Glow map of the mean)."""
        return self.decode(self.encode(x)[0], temperature)

    # -- evaluation declarations -----------------------------------------------------------------

    def fid_samplers(self, n: int, temperature: float, main_only: bool = False) -> dict:
        """``n`` latents are drawn once: ``"fid"`` scores the Glow samples at ``temperature``
        and ``"fid_vae_mean"`` the decoder means of the same latents, to measure what the Glow
        layer adds (without a Glow layer, ``"fid"`` scores the decoder means alone)."""
        z = self.sample_latents(n)
        position = {"fid": 0, "fid_vae_mean": 0}

        def latents(name: str, count: int) -> Tensor:
            batch = z[position[name] : position[name] + count]
            position[name] += count
            return batch

        means = Sampler(
            "FID of the VAE means", lambda count: self.decoder_mean(latents("fid_vae_mean", count))
        )
        if self.glow is None or not self.glow_enabled:
            return {"fid": means}
        samplers = {
            "fid": Sampler(
                "FID of Glow samples",
                lambda count: self.decode(latents("fid", count), temperature),
                uses_temperature=True,
            )
        }
        return samplers if main_only else {**samplers, "fid_vae_mean": means}

    def figures(self) -> dict[str, str]:
        """Samples at three Glow temperatures, the sharpening figure (with a Glow layer) and a
        latent interpolation."""
        names = ["samples", "sharpening", "interpolation"]
        return {name: name for name in names if name != "sharpening" or self.glow is not None}

    def elbo_variants(self) -> dict[str, Variant]:
        """With a Glow layer: the bound without it (the phase-1 model, as phase 2 trains only
        the Glow layer)."""
        if self.glow is None:
            return {}
        label = "test ELBO without the Glow layer (bits/dim)"
        return {"without_glow": Variant(label, ("glow_enabled",))}
