r"""The Variational Lossy Autoencoder (Chen et al., 2017): an autoregressive-flow prior and a
PixelCNN decoder with a small local window, as a Pyro model and guide."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor
from torch.nn import functional as F

from pyro_vaeflow.distributions import Dequantized, DiscretizedLogistic
from pyro_vaeflow.models.pixelcnn_vae import PixelCNNVAE
from pyro_vaeflow.nets import PixelCNN, ResNetSizes
from pyro_vaeflow.transforms import AutoregressiveFlow
from pyro_vaeflow.validation import check_choice, check_int, check_number

__all__ = ["VLAE"]

_LIKELIHOODS = ("bernoulli", "logistic")


class VLAE(PixelCNNVAE):
    r"""VLAE: a VAE with an autoregressive-flow prior and a local PixelCNN decoder.

    .. math::
        z \sim p(z) = \text{AF prior}, \qquad
        p(x \mid z) = \prod_{i} p\big(x_i \mid z, x_{\text{WindowAround}(i)}\big), \qquad
        q(z \mid x) = \mathcal{N}\big(\mu(x), \operatorname{diag} \sigma(x)^2\big).

    The decoder is a ResNet that maps :math:`z` to a ``cond_channels`` feature map at full
    resolution, which conditions a :class:`~pyro_vaeflow.nets.PixelCNN` of ``window`` masked
    3×3 layers: each pixel's conditional sees at most ``window`` rows above and ``window``
    columns to either side (the paper: 6 layers, a window of 6). The small window leaves the
    global structure to :math:`z` (the paper's lossy code). The prior is
    :class:`~pyro_vaeflow.transforms.AutoregressiveFlow` (``prior_steps=0``:
    :math:`\mathcal{N}(0, I)`).

    Pixels. ``likelihood="bernoulli"``: binary pixels (:math:`n = 1`; e.g.
    :class:`~pyro_vaeflow.data.DynamicallyBinarized` data), one logit each. ``"logistic"``: a
    :class:`~pyro_vaeflow.distributions.DiscretizedLogistic` over :math:`2^n` levels
    (``n_bits``). The model reads the level of each pixel of its float input as
    :math:`k = \operatorname{clamp}(\lfloor 2^n x \rfloor, 0, 2^n - 1)`, which is exact for
    dequantised images (:func:`~pyro_vaeflow.data.dequantize` with ``n_bits``), for
    ``pixel / (2^n - 1)`` and for binary images; for the Bernoulli model other values in
    :math:`[0, 1]` are thresholded at 1/2. The PixelCNN sees the levels only, never the
    dequantisation noise, and ``x`` is observed through
    :class:`~pyro_vaeflow.distributions.Dequantized`: :math:`\log p(x \mid z) = \log P(k \mid z)
    + D n \log 2`, so ``bits_per_dim(log_likelihood(...), num_dims, n_bits=model.n_bits)`` is
    the exact discrete bits/dim, comparable with :class:`~pyro_vaeflow.models.VAEFlow`'s.

    Free bits (Kingma et al., 2016; VLAE used them). With ``free_bits = λ > 0`` the latent
    dimensions are split into ``free_bits_groups`` groups :math:`G_g` of consecutive
    dimensions, and training maximises

    .. math:: \tilde{\mathcal L} = \sum_n \mathbb{E}_q \log p(x_n \mid z)
              - N \sum_g \max\!\big(\lambda, \overline{\mathrm{KL}}_g\big), \qquad
              \overline{\mathrm{KL}}_g = \frac1N \sum_n \sum_{j \in G_g}
              \big[\log q(z_j \mid x_n) - \log p_j(z)\big],

    the per-dimension terms :math:`\log p_j` of
    :meth:`~pyro_vaeflow.transforms.AutoregressiveFlow.log_prob_per_dim`
    (they sum to :math:`\log p(z)`), averaged over the mini-batch. It is written as the ELBO
    plus a correction, so that ``Trace_ELBO`` stays the estimator:
    :math:`\tilde{\mathcal L} = \mathrm{ELBO} + \sum_n c`,
    :math:`c = -\sum_g \max(0, \lambda - \overline{\mathrm{KL}}_g)`, added with
    ``pyro.factor("free_bits", c)`` in the data plate (the model recomputes :math:`q`'s
    per-dimension terms with the encoder). A group whose KL exceeds :math:`\lambda` gets
    :math:`c = 0`: the objective *is* the ELBO when every group is above the threshold; below
    it, the correction cancels that group's KL gradient exactly. The correction is only in the
    training objective: when the module is in ``eval()`` mode or gradients are off (as in
    :func:`~pyro_vaeflow.infer.elbo`, :func:`~pyro_vaeflow.infer.log_likelihood` and ``fit``'s
    validation), :meth:`model` is the true model and the bounds are those of
    :math:`\log p(x)`. The paper's "0.01 nats per data dimension" is ``free_bits =
    0.01 * D / free_bits_groups``. Under data parallelism the batch average is over each
    process's share of the global batch, so with free bits a step's gradient is close to, not
    the same as, one process's (without them it is the same).

    Args:
        image_shape: ``(C, H, W)``.
        latent_dim: the size of :math:`z` (the paper: 64).
        likelihood: ``"bernoulli"`` or ``"logistic"``.
        n_bits: the bit depth of the logistic model (ignored, 1, for Bernoulli).
        window: the PixelCNN's masked 3×3 layers, which is its window radius in pixels.
        free_bits: :math:`\lambda`, nats per group (0: the plain ELBO).
        free_bits_groups: the number of groups, dividing ``latent_dim`` (default: one per
            dimension).
        depth: scales of the ResNet encoder/decoder (default from the image size).
        base_channels: ResNet channels at full resolution.
        blocks_per_scale: residual blocks per scale.
        fc_dim: width of the ResNet's fully connected layer.
        cond_channels: the decoder's feature map that conditions the PixelCNN (the paper: 4).
        pixelcnn_channels: width of the PixelCNN (a multiple of ``C``).
        prior_steps: AF steps of the prior (the paper: 4; 0: a standard normal prior).
        prior_hidden_dims: the MADEs' hidden widths (each at least ``latent_dim``).
        prior_affine: an affine AF (the paper's is mean-only).
        min_scale: the floor of the logistic scale, in :math:`[0, 1]` units.

    Example:
        >>> vlae = VLAE((1, 8, 8), latent_dim=4, depth=1, base_channels=4, fc_dim=8,
        ...             window=2, pixelcnn_channels=4, prior_steps=2, prior_hidden_dims=(8,))
        >>> x = vlae.sample(2, progress=False)
        >>> x.shape, sorted(x.unique().tolist()) in ([0.0], [1.0], [0.0, 1.0])
        (torch.Size([2, 1, 8, 8]), True)
    """

    architecture = "vlae"
    """The name of the model class in :data:`~pyro_vaeflow.models.ARCHITECTURES`."""

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int = 32,
        *,
        likelihood: str = "bernoulli",
        n_bits: int = 8,
        window: int = 3,
        free_bits: float = 0.0,
        free_bits_groups: int | None = None,
        depth: int | None = None,
        base_channels: int = 16,
        blocks_per_scale: int = 1,
        fc_dim: int = 256,
        cond_channels: int = 4,
        pixelcnn_channels: int = 32,
        prior_steps: int = 4,
        prior_hidden_dims: Sequence[int] = (256,),
        prior_affine: bool = False,
        min_scale: float = 1e-3,
    ) -> None:
        super().__init__(image_shape)
        channels = self.image_shape[0]
        check_choice("likelihood", likelihood, _LIKELIHOODS)
        check_int("latent_dim", latent_dim)
        check_int("n_bits", n_bits, high=8)
        check_int("window", window)
        check_int("cond_channels", cond_channels)
        check_int("prior_steps", prior_steps, 0)
        free_bits = check_number("free_bits", free_bits, 0.0)
        groups = latent_dim if free_bits_groups is None else free_bits_groups
        check_int("free_bits_groups", groups)
        if latent_dim % groups:
            raise ValueError(f"free_bits_groups ({groups}) must divide latent_dim ({latent_dim})")
        min_scale = check_number("min_scale", min_scale, 0.0, strict=True)
        self.latent_dim, self.likelihood_name = latent_dim, likelihood
        self.n_bits = 1 if likelihood == "bernoulli" else n_bits
        self.free_bits, self.free_bits_groups, self.min_scale = free_bits, groups, min_scale
        net = ResNetSizes(self.image_shape, depth, base_channels, blocks_per_scale, fc_dim)
        self.encoder = net.encoder(latent_dim)
        self.decoder = net.decoder(latent_dim, cond_channels)
        params = 1 if likelihood == "bernoulli" else 2
        self.pixelcnn = PixelCNN(
            channels, params, pixelcnn_channels, window, kernel_size=3, cond_channels=cond_channels
        )
        self.prior_flow = (
            AutoregressiveFlow(latent_dim, prior_steps, prior_hidden_dims, prior_affine)
            if prior_steps
            else None
        )

    def _pixel_distribution(self, params: Tensor) -> dist.TorchDistribution:
        """The distribution of the levels, from PixelCNN parameters ``[..., P]`` per pixel."""
        if self.likelihood_name == "bernoulli":
            return dist.Bernoulli(logits=params[..., 0])
        loc = 0.5 + params[..., 0]
        scale = F.softplus(params[..., 1] - 2.0) + self.min_scale
        return DiscretizedLogistic(loc, scale, self.n_bits)

    def likelihood(self, z: Tensor, x: Tensor) -> dist.TorchDistribution:
        r""":math:`p(x \mid z)` at the images ``x`` (the PixelCNN sees their levels), over
        :math:`[0, 1]^D`: see :class:`~pyro_vaeflow.distributions.Dequantized`."""
        cond = self.decoder(z)
        params = self.pixelcnn(self._network_input(self.levels(x)), cond)
        pixels = self._pixel_distribution(params.movedim(-3, -1)).to_event(3)
        return Dequantized(pixels, self.n_bits)

    # -- Pyro model and guide --------------------------------------------------------------------

    def model(self, x: Tensor) -> None:
        """The generative model :math:`p(z)\\,p(x \\mid z)` over ``x`` (``N×C×H×W`` in [0, 1]);
        in training, with the free-bits correction (see the class docstring)."""
        self.check_images(x)
        self._register()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            if self.free_bits > 0 and self._objective_active():
                pyro.factor("free_bits", self.free_bits_correction(x, z))
            pyro.sample("x", self.likelihood(z, x), obs=x)

    def kl_per_group(self, x: Tensor, z: Tensor) -> Tensor:
        r"""The single-sample estimates :math:`\sum_{j \in G_g} \log q(z_j \mid x) - \log p_j(z)`,
        ``[..., N, groups]``; they sum to :math:`\log q(z \mid x) - \log p(z)`."""
        loc, scale = self.encoder(x)
        log_q = dist.Normal(loc, scale).log_prob(z)
        if self.prior_flow is not None:
            log_p = self.prior_flow.log_prob_per_dim(z)
        else:
            log_p = dist.Normal(0.0, 1.0).log_prob(z)
        kl = log_q - log_p
        return kl.reshape(*kl.shape[:-1], self.free_bits_groups, -1).sum(-1)

    def free_bits_correction(self, x: Tensor, z: Tensor) -> Tensor:
        r"""Per datum, :math:`c = -\sum_g \max(0, \lambda - \overline{\mathrm{KL}}_g)`, the
        group KLs averaged over the batch (dim -2 of ``z``); ``[..., N]``."""
        kl = self.kl_per_group(x, z)
        shortfall = (self.free_bits - kl.mean(-2, keepdim=True)).clamp(min=0.0)
        return (-shortfall.sum(-1)).expand(kl.shape[:-1])

    # -- queries ---------------------------------------------------------------------------------

    @torch.no_grad()
    def decode(self, z: Tensor, progress: bool = True) -> Tensor:
        r"""Images :math:`x \sim p(x \mid z)`, drawn pixel by pixel (sequential), in [0, 1].

        Pixels are returned as :math:`k / (2^n - 1)`: binary images are in :math:`\{0, 1\}`,
        8-bit ones are ``pixel / 255`` (:func:`~pyro_vaeflow.data.quantize` gives the pixels
        back, and :meth:`levels` the levels).
        """
        cond = self.decoder(z)

        def draw(params: Tensor, index: tuple[int, int, int]) -> Tensor:
            return self._network_input(self._pixel_distribution(params).sample())

        shape = (z.shape[0], *self.image_shape)
        values = self.pixelcnn.sample(draw, shape, cond, progress, desc="VLAE sampling")
        return self._from_network_input(values)

    @torch.no_grad()
    def sample(self, n: int, progress: bool = True, prior_temperature: float = 1.0) -> Tensor:
        """``n`` images: latents from the prior, then :meth:`decode` (with a tqdm bar)."""
        check_int("n", n)
        return self.decode(self.prior(prior_temperature).expand([n]).sample(), progress)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, progress: bool = True) -> Tensor:
        """The paper's "decompression": :meth:`decode` of each image's posterior mean."""
        return self.decode(self.encode(x)[0], progress)
