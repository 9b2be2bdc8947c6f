r"""The VAE with a normalizing-flow (Glow) decoder and a flow prior, as Pyro model and guide."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pyro_vaeflow.distributions import FlowDecoder, FlowPrior
from pyro_vaeflow.models.base import ImageModel
from pyro_vaeflow.nets import ResNetDecoder, ResNetEncoder
from pyro_vaeflow.transforms import glow, realnvp

__all__ = ["VAEFlow", "default_architecture"]

_DECODER_VARIANCES = ("diagonal", "isotropic", "fixed")
_PRIORS = ("flow", "normal")


def default_architecture(image_shape: Sequence[int]) -> dict:
    """Sensible network sizes for the usual image sizes (28×28, 32×32, 64×64).

    The ResNet depth halves the image down to 7×7 or 4×4, as Dai & Wipf's; 1-channel images get
    one squeeze in the Glow layer so that its couplings have channels to split.

    Example:
        >>> default_architecture((1, 28, 28))["depth"]
        2
    """
    channels, height, width = image_shape
    side = min(height, width)
    depth = 2 if side < 32 else 3 if side < 64 else 4
    return {
        "latent_dim": 32 if side < 32 else 64,
        "depth": depth,
        "glow_squeeze": 1 if channels == 1 else 0,
    }


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


class VAEFlow(ImageModel):
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
        super().__init__()
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")
        if prior not in _PRIORS:
            raise ValueError(f"prior must be one of {_PRIORS}, got {prior!r}")
        if decoder_variance not in _DECODER_VARIANCES:
            raise ValueError(
                f"decoder_variance must be one of {_DECODER_VARIANCES}, got {decoder_variance!r}"
            )
        defaults = default_architecture(image_shape)
        latent_dim = latent_dim or defaults["latent_dim"]
        depth = defaults["depth"] if depth is None else depth
        glow_squeeze = defaults["glow_squeeze"] if glow_squeeze is None else glow_squeeze
        channels = image_shape[0]
        self.image_shape = image_shape
        self.latent_dim = latent_dim
        self.config = {
            "image_shape": image_shape,
            "latent_dim": latent_dim,
            "prior": prior,
            "decoder_variance": decoder_variance,
            "decoder_scale_init": decoder_scale_init,
            "min_scale": min_scale,
            "depth": depth,
            "base_channels": base_channels,
            "blocks_per_scale": blocks_per_scale,
            "fc_dim": fc_dim,
            "prior_layers": prior_layers,
            "prior_hidden_dims": tuple(prior_hidden_dims),
            "glow_depth": glow_depth,
            "glow_hidden_channels": glow_hidden_channels,
            "glow_coupling": glow_coupling,
            "glow_squeeze": glow_squeeze,
            "glow_checkpoint": bool(glow_checkpoint),
        }
        net = {
            "depth": depth,
            "base_channels": base_channels,
            "blocks_per_scale": blocks_per_scale,
            "fc_dim": fc_dim,
        }
        out_channels = 2 * channels if decoder_variance == "diagonal" else channels
        self.encoder = encoder or ResNetEncoder(image_shape, latent_dim, **net)
        self.decoder = decoder or ResNetDecoder(image_shape, latent_dim, out_channels, **net)
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
                glow_squeeze,
                init="identity",
                checkpoint=glow_checkpoint,
            )
            if glow_depth > 0
            else None
        )

    # -- distributions -------------------------------------------------------------------------

    def prior(self, temperature: float = 1.0) -> dist.TorchDistribution:
        r"""The prior :math:`p(z)` (sampling temperature ``temperature``)."""
        if self.prior_flow is not None:
            return FlowPrior(self.latent_dim, self.prior_flow, temperature=temperature)
        zeros = self._zeros(self.latent_dim)
        return dist.Normal(zeros, temperature * torch.ones_like(zeros)).to_event(1)

    def decoder_params(self, z: Tensor) -> tuple[Tensor, Tensor]:
        r"""The mean :math:`g_\mu(z)` and scale :math:`g_\sigma(z)` of the base Gaussian."""
        out = self.decoder(z)
        if self.config["decoder_variance"] == "diagonal":
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

    def guide(self, x: Tensor) -> None:
        """The encoder :math:`q(z \\mid x)`, a diagonal Gaussian."""
        self.check_images(x)
        self._register("encoder")
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # -- queries ---------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The mean and standard deviation of :math:`q(z \\mid x)`."""
        self.check_images(x)
        return self.encoder(x)

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
    def sample_latents(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` latents :math:`z` from the prior at ``temperature``."""
        if self.prior_flow is not None:
            return self.prior(temperature).expand([n]).sample()
        return temperature * torch.randn_like(self._zeros(n, self.latent_dim))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 0.5, prior_temperature: float = 1.0) -> Tensor:
        """``n`` images: :meth:`sample_latents` at ``prior_temperature``, then :meth:`decode`."""
        return self.decode(self.sample_latents(n, prior_temperature), temperature)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, temperature: float = 0.0) -> Tensor:
        """Decode the posterior mean of each image (at temperature 0: the Glow map of the mean)."""
        return self.decode(self.encode(x)[0], temperature)

    # -- helpers ---------------------------------------------------------------------------------

    def _zeros(self, *shape: int) -> Tensor:
        reference = next(self.decoder.parameters())
        return torch.zeros(*shape, dtype=reference.dtype, device=reference.device)
