r"""AGAVE (Lucas & Verbeek, 2018): an auxiliary factorised VAE decoder that guides a conditional
PixelCNN, as a Pyro model and guide."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pyro_vaeflow.distributions import Dequantized, DiscretizedLogistic
from pyro_vaeflow.distributions.discretized_logistic import to_levels
from pyro_vaeflow.models.pixelcnn_vae import PixelCNNVAE
from pyro_vaeflow.nets import PixelCNN, ResNetSizes
from pyro_vaeflow.validation import check_int, check_number

__all__ = ["AGAVE"]


class _ChannelScale(nn.Module):
    """One learned logistic scale per colour, shared by every pixel (AGAVE's VAE decoder)."""

    def __init__(self, channels: int, init: float, floor: float) -> None:
        super().__init__()
        self.floor = floor
        raw = torch.log(torch.expm1(torch.tensor(float(init) - floor)))
        self.raw = nn.Parameter(raw.repeat(channels))

    def forward(self, like: Tensor) -> Tensor:
        scale = F.softplus(self.raw) + self.floor
        return scale[:, None, None].expand_as(like)


class AGAVE(PixelCNNVAE):
    r"""AGAVE: one encoder, a factorised decoder of an auxiliary image :math:`y`, and a PixelCNN
    decoder of :math:`x` conditioned on that decoder's output.

    .. math::
        z \sim \mathcal{N}(0, I), \qquad \hat y = g(z), \qquad
        p(y \mid z) = \prod_i \mathrm{DLogistic}(y_i; \hat y_i, s_{c(i)}), \qquad
        p(x \mid z) = \prod_i p\big(x_i \mid x_{<i}, \hat y\big),

    with :math:`q(z \mid x)` a diagonal Gaussian. The auxiliary image :math:`y` is a
    deterministic function of :math:`x`: the image itself (the default), or a reduced version
    with ``aux_levels`` colour levels (fewer than :math:`2^n`) and/or a resolution lower by
    ``aux_downsample`` (the mean over square blocks of that side, then requantised). The VAE
    decoder outputs the means :math:`\hat y` of one discretised logistic per pixel and colour,
    with one learned scale per colour (the paper's); :math:`\hat y` (upsampled if needed)
    conditions the :class:`~pyro_vaeflow.nets.PixelCNN`, through a small convolutional network
    whose features enter every PixelCNN layer, and is also the base of its logistic means.

    Objective. The paper trains with (its Eq. 7)

    .. math:: \mathcal{L}_{\alpha, \lambda}(x) = \mathbb{E}_q\big[\log p(x \mid z)
              + \alpha \log p(y \mid z)\big] - \lambda\, \mathrm{KL}\big(q(z \mid x) \,\|\,
              p(z)\big)
              = \mathrm{ELBO}(x) + \alpha\, \mathbb{E}_q \log p(y \mid z)
              - (\lambda - 1)\, \mathrm{KL},

    where the paper's :math:`\lambda` (``kl_weight``) weighs the KL term: :math:`\lambda = 1`
    is the ELBO of :math:`(x, y)` conditionally independent given :math:`z`, and
    :math:`\lambda = 2` the sum of the ELBOs of :math:`x` and of :math:`y` with a shared
    encoder; larger :math:`\lambda` push information out of :math:`z`. :math:`\alpha`
    (``aux_weight``, the paper's 1) weighs the auxiliary term. Since :math:`y` is discrete,
    :math:`\log p(y \mid z) \le 0`, so for :math:`\alpha \ge 0`, :math:`\lambda \ge 1`,
    :math:`\mathcal{L}_{\alpha, \lambda}(x) \le \mathrm{ELBO}(x) \le \log p(x)`: a valid but
    looser bound. With ``Trace_ELBO`` it is the ELBO of a model in which the latent site
    ``"z"`` is scaled by :math:`\lambda` (``poutine.scale``, in the model and in the guide) and
    ``y`` is observed at a site ``"aux"`` scaled by :math:`\alpha`.

    Evaluation. The marginal :math:`p(x) = \int p(z) p(x \mid z)\,dz` does not involve
    :math:`y`, so :math:`\alpha` and :math:`\lambda` only shape training: when the module is
    in ``eval()`` mode or gradients are off (as in :func:`~pyro_vaeflow.infer.elbo`,
    :func:`~pyro_vaeflow.infer.log_likelihood` and ``fit``'s validation), :meth:`model` and
    :meth:`guide` are the plain model of :math:`x` and the bounds are the true ELBO and
    importance-sampled :math:`\log p(x)`.

    Pixels are :math:`n`-bit levels read from the float images as
    :math:`\operatorname{clamp}(\lfloor 2^n x \rfloor, 0, 2^n - 1)` (dequantised images,
    ``pixel / (2^n - 1)`` or level centres), observed through
    :class:`~pyro_vaeflow.distributions.Dequantized`, so ``bits_per_dim(log_px, num_dims,
    n_bits)`` is the exact discrete bits/dim.

    Args:
        image_shape: ``(C, H, W)``.
        latent_dim: the size of :math:`z`.
        n_bits: the pixels' bit depth :math:`n` (:math:`2^n` levels).
        aux_levels: the colour levels of :math:`y`, a power of 2 at most :math:`2^n`
            (default :math:`2^n`: no reduction).
        aux_downsample: the factor by which :math:`y`'s resolution is lower (1: none); it
            must divide H and W.
        aux_weight: :math:`\alpha \ge 0`, the weight of the auxiliary log-likelihood.
        kl_weight: the paper's :math:`\lambda > 0` on the KL term (:math:`\ge 1` keeps the
            objective a lower bound).
        depth: scales of the ResNet encoder/decoder (default from the image size).
        base_channels: ResNet channels at full resolution.
        blocks_per_scale: residual blocks per scale.
        fc_dim: width of the ResNet's fully connected layer.
        cond_channels: features of :math:`\hat y` given to each PixelCNN layer.
        pixelcnn_channels: width of the PixelCNN (a multiple of ``C``).
        pixelcnn_layers: its masked layers :math:`L`.
        kernel_size: their odd size :math:`k`; the window radius is :math:`L (k - 1) / 2`.
        min_scale: the floor of the logistic scales, in :math:`[0, 1]` units.

    Example:
        >>> agave = AGAVE((1, 8, 8), latent_dim=4, depth=1, base_channels=4, fc_dim=8,
        ...               aux_levels=8, aux_downsample=2, pixelcnn_channels=4,
        ...               pixelcnn_layers=2, cond_channels=4)
        >>> agave.sample(2, progress=False).shape, agave.aux_shape
        (torch.Size([2, 1, 8, 8]), (1, 4, 4))
    """

    architecture = "agave"
    """The name of the model class in :data:`~pyro_vaeflow.models.ARCHITECTURES`."""

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int = 32,
        *,
        n_bits: int = 8,
        aux_levels: int | None = None,
        aux_downsample: int = 1,
        aux_weight: float = 1.0,
        kl_weight: float = 2.0,
        depth: int | None = None,
        base_channels: int = 16,
        blocks_per_scale: int = 1,
        fc_dim: int = 256,
        cond_channels: int = 16,
        pixelcnn_channels: int = 32,
        pixelcnn_layers: int = 4,
        kernel_size: int = 3,
        min_scale: float = 1e-3,
    ) -> None:
        super().__init__(image_shape)
        channels, height, width = self.image_shape
        check_int("latent_dim", latent_dim)
        check_int("n_bits", n_bits, high=8)
        levels = 2**n_bits
        aux_levels = levels if aux_levels is None else aux_levels
        check_int("aux_levels", aux_levels, 2)
        if aux_levels > levels or aux_levels & (aux_levels - 1):
            raise ValueError(
                f"aux_levels must be a power of 2 in 2..{levels} (2^n_bits), got {aux_levels}"
            )
        check_int("aux_downsample", aux_downsample)
        if height % aux_downsample or width % aux_downsample:
            raise ValueError(
                f"aux_downsample ({aux_downsample}) must divide the image's height and width "
                f"({height}×{width})"
            )
        aux_weight = check_number("aux_weight", aux_weight, 0.0)
        kl_weight = check_number("kl_weight", kl_weight, 0.0, strict=True)
        check_int("cond_channels", cond_channels)
        min_scale = check_number("min_scale", min_scale, 0.0, strict=True)
        self.latent_dim, self.n_bits, self.prior_flow = latent_dim, n_bits, None
        self.aux_bits = aux_levels.bit_length() - 1
        self.aux_downsample = aux_downsample
        self.aux_weight, self.kl_weight, self.min_scale = aux_weight, kl_weight, min_scale
        net = ResNetSizes(self.image_shape, depth, base_channels, blocks_per_scale, fc_dim)
        self.encoder = net.encoder(latent_dim)
        self.aux_decoder = net.decoder(latent_dim, channels)
        self.aux_scale = _ChannelScale(channels, 0.1, min_scale)
        self.cond_net = nn.Sequential(
            nn.Conv2d(channels, cond_channels, 3, padding=1),
            nn.ELU(),
            nn.Conv2d(cond_channels, cond_channels, 3, padding=1),
        )
        self.pixelcnn = PixelCNN(
            channels, 2, pixelcnn_channels, pixelcnn_layers, kernel_size, cond_channels
        )

    @property
    def aux_levels(self) -> int:
        """The colour levels of the auxiliary image."""
        return 2**self.aux_bits

    @property
    def aux_shape(self) -> tuple[int, int, int]:
        """``(C, H / aux_downsample, W / aux_downsample)``."""
        channels, height, width = self.image_shape
        return channels, height // self.aux_downsample, width // self.aux_downsample

    # -- the auxiliary image and decoder ---------------------------------------------------------

    def aux_target(self, x: Tensor) -> Tensor:
        r"""The auxiliary image :math:`y`, as levels :math:`0, \dots, L - 1` (``aux_levels``):
        the level centres of ``x``, averaged over blocks of ``aux_downsample`` squared pixels,
        requantised."""
        centres = (self.levels(x) + 0.5) / self.num_levels
        if self.aux_downsample > 1:
            centres = F.avg_pool2d(centres, self.aux_downsample)
        return to_levels(centres, self.aux_bits)

    def aux_mean(self, z: Tensor) -> Tensor:
        r"""The VAE decoder's output :math:`\hat y`, ``[..., C, H / f, W / f]`` in
        :math:`[0, 1]` intensity units (unconstrained)."""
        mean = 0.5 + self.aux_decoder(z)
        if self.aux_downsample > 1:
            batch = mean.shape[:-3]
            pooled = F.avg_pool2d(mean.reshape(-1, *mean.shape[-3:]), self.aux_downsample)
            mean = pooled.reshape(*batch, *pooled.shape[-3:])
        return mean

    def aux_likelihood(self, mean: Tensor) -> dist.TorchDistribution:
        r""":math:`p(y \mid z)`: a discretised logistic over ``aux_levels`` levels per pixel."""
        return DiscretizedLogistic(mean, self.aux_scale(mean), self.aux_bits).to_event(3)

    def _condition(self, mean: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`\\hat y` at full resolution, and its features for the PixelCNN."""
        if self.aux_downsample > 1:
            mean = mean.repeat_interleave(self.aux_downsample, -2)
            mean = mean.repeat_interleave(self.aux_downsample, -1)
        batch = mean.shape[:-3]
        features = self.cond_net(mean.reshape(-1, *mean.shape[-3:]))
        return mean, features.reshape(*batch, *features.shape[-3:])

    def _pixel_distribution(self, params: Tensor, base: Tensor) -> DiscretizedLogistic:
        scale = F.softplus(params[..., 1] - 2.0) + self.min_scale
        return DiscretizedLogistic(base + params[..., 0], scale, self.n_bits)

    def likelihood(self, z: Tensor, x: Tensor) -> dist.TorchDistribution:
        r""":math:`p(x \mid z)` at the images ``x`` (the PixelCNN sees their levels), over
        :math:`[0, 1]^D`: see :class:`~pyro_vaeflow.distributions.Dequantized`."""
        return self._likelihood(self.aux_mean(z), x)

    def _likelihood(self, mean: Tensor, x: Tensor) -> dist.TorchDistribution:
        base, features = self._condition(mean)
        params = self.pixelcnn(self._network_input(self.levels(x)), features)
        pixels = self._pixel_distribution(params.movedim(-3, -1), base)
        return Dequantized(pixels.to_event(3), self.n_bits)

    # -- Pyro model and guide --------------------------------------------------------------------

    def _kl_scale(self) -> AbstractContextManager:
        active = self._objective_active() and self.kl_weight != 1.0
        return pyro.poutine.scale(scale=self.kl_weight) if active else nullcontext()

    def model(self, x: Tensor) -> None:
        """The generative model of ``x`` (``N×C×H×W`` in [0, 1]); in training, with the
        auxiliary site ``"aux"`` and the KL weight (see the class docstring)."""
        self.check_images(x)
        self._register()
        with pyro.plate("data", x.shape[0]):
            with self._kl_scale():
                z = pyro.sample("z", self.prior())
            mean = self.aux_mean(z)
            if self._objective_active() and self.aux_weight > 0:
                with pyro.poutine.scale(scale=self.aux_weight):
                    pyro.sample("aux", self.aux_likelihood(mean), obs=self.aux_target(x))
            pyro.sample("x", self._likelihood(mean, x), obs=x)

    # -- queries ---------------------------------------------------------------------------------

    @torch.no_grad()
    def decode_aux(self, z: Tensor) -> Tensor:
        r"""The auxiliary decoder's means :math:`\hat y`, clamped to :math:`[0, 1]`."""
        return self.aux_mean(z).clamp(0.0, 1.0)

    @torch.no_grad()
    def decode(self, z: Tensor, progress: bool = True) -> Tensor:
        r"""Images :math:`x \sim p(x \mid z)`, drawn pixel by pixel (sequential), in [0, 1],
        as :math:`k / (2^n - 1)`."""
        base, features = self._condition(self.aux_mean(z))

        def draw(params: Tensor, index: tuple[int, int, int]) -> Tensor:
            loc = base[(slice(None), *index)]
            return self._network_input(self._pixel_distribution(params, loc).sample())

        shape = (z.shape[0], *self.image_shape)
        values = self.pixelcnn.sample(draw, shape, features, progress, desc="AGAVE sampling")
        return self._from_network_input(values)

    @torch.no_grad()
    def sample(self, n: int, progress: bool = True, prior_temperature: float = 1.0) -> Tensor:
        """``n`` images: :math:`z \\sim \\mathcal{N}(0, T^2 I)` at ``prior_temperature``
        :math:`T`, then :meth:`decode` (with a tqdm bar)."""
        check_int("n", n)
        return self.decode(self.sample_latents(n, prior_temperature), progress)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, progress: bool = True) -> Tensor:
        """:meth:`decode` of each image's posterior mean."""
        return self.decode(self.encode(x)[0], progress)
