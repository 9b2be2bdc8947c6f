r"""The Variational Lossy Autoencoder (Chen et al., 2017): an autoregressive-flow prior and a
PixelCNN decoder with a small local window, as a Pyro model and guide."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_transform import TransformModule
from pyro.nn import AutoRegressiveNN
from torch import Tensor, nn
from torch.distributions import constraints
from torch.nn import functional as F

from pyro_vaeflow.distributions import Dequantized, DiscretizedLogistic, FlowPrior
from pyro_vaeflow.distributions.discretized_logistic import to_levels
from pyro_vaeflow.models.base import ImageModel
from pyro_vaeflow.models.vaeflow import default_architecture
from pyro_vaeflow.nets import PixelCNN, ResNetDecoder, ResNetEncoder

__all__ = ["VLAE", "AutoregressiveFlow"]

_LIKELIHOODS = ("bernoulli", "logistic")


def _check_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_number(name: str, value: float, low: float, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (strict and value == low):
        bound = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {bound} {low}, got {value!r}")
    return float(value)


class AutoregressiveFlow(TransformModule):
    r"""VLAE's autoregressive-flow (AF) prior transform :math:`z = f(\varepsilon)`, from MADEs.

    Each of the ``num_steps`` steps is, in the density direction (:math:`z \to \varepsilon`),

    .. math:: h' = \big(h - \mu(h)\big) \odot e^{-s(h)}, \qquad
              \log\left|\det \frac{\partial h'}{\partial h}\right| = -\sum_j s_j(h),

    where :math:`\mu_j, s_j` depend on :math:`h_{<j}` only (a MADE, Pyro's
    :class:`~pyro.nn.AutoRegressiveNN`); the steps alternate the variable order. The density
    direction is one parallel pass per step, so :math:`\log p(z)` costs as much as an IAF
    posterior (the paper's point); sampling (:math:`\varepsilon \to z`) is sequential,
    :math:`D` passes per step. ``affine=False`` is the paper's mean-only flow
    (:math:`s = 0`, volume-preserving), ``True`` adds the scale, :math:`s = 3 \tanh(\cdot / 3)`.
    The last layer of each MADE starts at zero, so the flow starts as the identity.

    Because each step's Jacobian is triangular, :math:`\log p(z)` splits into one term per
    dimension (:meth:`log_prob_per_dim`), which is what VLAE's free bits need.

    Args:
        dim: the dimension :math:`D` of :math:`z`.
        num_steps: the number of AF steps (the paper: 4).
        hidden_dims: the MADEs' hidden widths, each at least ``dim`` (the paper: 640, 640).
        affine: learn a scale as well as a shift.

    Example:
        >>> flow = AutoregressiveFlow(4, num_steps=2, hidden_dims=(16,), affine=True)
        >>> eps = torch.randn(3, 4)
        >>> z = flow(eps)
        >>> torch.allclose(flow.inv(z.clone()), eps, atol=1e-5)
        True
        >>> flow.log_prob_per_dim(z).shape
        torch.Size([3, 4])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        dim: int,
        num_steps: int = 4,
        hidden_dims: Sequence[int] = (256, 256),
        affine: bool = False,
    ) -> None:
        super().__init__(cache_size=0)
        _check_int("dim", dim, 2)
        _check_int("num_steps", num_steps, 1)
        hidden_dims = [int(h) for h in hidden_dims]
        if not hidden_dims or min(hidden_dims) < dim:
            raise ValueError(
                f"the MADE's hidden widths must be at least the latent dimension {dim}, got "
                f"{hidden_dims}"
            )
        self.dim, self.affine = dim, affine
        order = torch.arange(dim)
        self.mades = nn.ModuleList(
            AutoRegressiveNN(
                dim,
                hidden_dims,
                param_dims=[1, 1] if affine else [1],
                permutation=order if step % 2 == 0 else order.flip(0),
            )
            for step in range(num_steps)
        )
        for made in self.mades:
            nn.init.zeros_(made.layers[-1].weight)
            nn.init.zeros_(made.layers[-1].bias)

    def _params(self, step: int, h: Tensor) -> tuple[Tensor, Tensor | None]:
        out = self.mades[step](h)
        if not self.affine:
            return out, None
        shift, raw = out
        return shift, 3.0 * torch.tanh(raw / 3.0)

    def _density(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`\\varepsilon = f^{-1}(z)` and the per-dimension log-determinant terms."""
        h, log_det = z, torch.zeros_like(z)
        for step in range(len(self.mades)):
            shift, log_scale = self._params(step, h)
            if log_scale is None:
                h = h - shift
            else:
                h = (h - shift) * torch.exp(-log_scale)
                log_det = log_det - log_scale
        return h, log_det

    def _inverse(self, z: Tensor) -> Tensor:
        return self._density(z)[0]

    def _call(self, eps: Tensor) -> Tensor:
        h = eps
        for step in reversed(range(len(self.mades))):
            target, x = h, torch.zeros_like(h)
            for _ in range(self.dim):  # one more exact dimension per pass
                shift, log_scale = self._params(step, x)
                x = shift + (target if log_scale is None else target * torch.exp(log_scale))
            h = x
        return h

    def log_abs_det_jacobian(self, eps: Tensor, z: Tensor) -> Tensor:
        r""":math:`\log|\det \partial z / \partial \varepsilon|`, summed over the dimensions."""
        return -self._density(z)[1].sum(-1)

    def log_prob_per_dim(self, z: Tensor) -> Tensor:
        r"""The terms :math:`\log \mathcal{N}(\varepsilon_j; 0, 1) + \log|\partial\varepsilon_j /
        \partial h_j|` (summed over steps), ``[..., D]``; they sum to :math:`\log p(z)`."""
        eps, log_det = self._density(z)
        return -0.5 * eps**2 - 0.5 * math.log(2 * math.pi) + log_det


class _AutoregressiveVAE(ImageModel):
    """What VLAE and AGAVE share: checks, registration, persistence and the data's levels."""

    def _init_common(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")
        self.image_shape = image_shape
        return image_shape

    @property
    def n_bits(self) -> int:
        """The bit depth of the observed pixels: pass it to ``bits_per_dim`` and ``fit``."""
        raise NotImplementedError

    @property
    def num_levels(self) -> int:
        """The number of pixel levels, :math:`2^{n}`."""
        return 2**self.n_bits

    def levels(self, x: Tensor) -> Tensor:
        r"""The pixel levels :math:`\operatorname{clamp}(\lfloor 2^n x \rfloor, 0, 2^n - 1)` of
        images in :math:`[0, 1]`: exact for dequantised, level-centred and ``pixel / (2^n - 1)``
        inputs alike (:func:`~pyro_vaeflow.distributions.discretized_logistic.to_levels`)."""
        return to_levels(x, self.n_bits)

    def _network_input(self, levels: Tensor) -> Tensor:
        """Levels → :math:`[-1, 1]`, what the PixelCNN sees (never the dequantisation noise)."""
        return 2.0 * levels / (self.num_levels - 1) - 1.0

    def _from_network_input(self, values: Tensor) -> Tensor:
        levels = ((values + 1.0) * (self.num_levels - 1) / 2.0).round()
        return levels / (self.num_levels - 1)

    def _objective_active(self) -> bool:
        """Whether :meth:`model`/:meth:`guide` run the training objective instead of the ELBO."""
        return self.training and torch.is_grad_enabled()

    def _zeros(self, *shape: int) -> Tensor:
        reference = next(self.parameters())
        return torch.zeros(*shape, dtype=reference.dtype, device=reference.device)

    def guide(self, x: Tensor) -> None:
        """The encoder :math:`q(z \\mid x)`, a diagonal Gaussian."""
        self.check_images(x)
        self._register("encoder")
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            with self._kl_scale():
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def _kl_scale(self) -> AbstractContextManager:
        """The scale of the KL sites in training (1 here; AGAVE's λ)."""
        return nullcontext()

    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The mean and standard deviation of :math:`q(z \\mid x)`."""
        self.check_images(x)
        return self.encoder(x)


class VLAE(_AutoregressiveVAE):
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
    :class:`AutoregressiveFlow` (``prior_steps=0``: :math:`\mathcal{N}(0, I)`).

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

    the per-dimension terms :math:`\log p_j` of :meth:`AutoregressiveFlow.log_prob_per_dim`
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
    0.01 * D / free_bits_groups``.

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
        super().__init__()
        channels, _, _ = self._init_common(image_shape)
        if likelihood not in _LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {_LIKELIHOODS}, got {likelihood!r}")
        _check_int("latent_dim", latent_dim, 1)
        _check_int("n_bits", n_bits, 1)
        if n_bits > 8:
            raise ValueError(f"n_bits must be at most 8, got {n_bits}")
        _check_int("window", window, 1)
        _check_int("cond_channels", cond_channels, 1)
        _check_int("prior_steps", prior_steps, 0)
        free_bits = _check_number("free_bits", free_bits, 0.0)
        groups = latent_dim if free_bits_groups is None else free_bits_groups
        _check_int("free_bits_groups", groups, 1)
        if latent_dim % groups:
            raise ValueError(f"free_bits_groups ({groups}) must divide latent_dim ({latent_dim})")
        min_scale = _check_number("min_scale", min_scale, 0.0, strict=True)
        depth = default_architecture(self.image_shape)["depth"] if depth is None else depth
        self.latent_dim, self.likelihood_name = latent_dim, likelihood
        self._n_bits = 1 if likelihood == "bernoulli" else n_bits
        self.free_bits, self.free_bits_groups, self.min_scale = free_bits, groups, min_scale
        self.config = {
            "image_shape": self.image_shape,
            "latent_dim": latent_dim,
            "likelihood": likelihood,
            "n_bits": n_bits,
            "window": window,
            "free_bits": free_bits,
            "free_bits_groups": groups,
            "depth": depth,
            "base_channels": base_channels,
            "blocks_per_scale": blocks_per_scale,
            "fc_dim": fc_dim,
            "cond_channels": cond_channels,
            "pixelcnn_channels": pixelcnn_channels,
            "prior_steps": prior_steps,
            "prior_hidden_dims": tuple(int(h) for h in prior_hidden_dims),
            "prior_affine": bool(prior_affine),
            "min_scale": min_scale,
        }
        net = {
            "depth": depth,
            "base_channels": base_channels,
            "blocks_per_scale": blocks_per_scale,
            "fc_dim": fc_dim,
        }
        self.encoder = ResNetEncoder(self.image_shape, latent_dim, **net)
        self.decoder = ResNetDecoder(self.image_shape, latent_dim, cond_channels, **net)
        params = 1 if likelihood == "bernoulli" else 2
        self.pixelcnn = PixelCNN(
            channels, params, pixelcnn_channels, window, kernel_size=3, cond_channels=cond_channels
        )
        self.prior_flow = (
            AutoregressiveFlow(latent_dim, prior_steps, prior_hidden_dims, prior_affine)
            if prior_steps
            else None
        )

    @property
    def n_bits(self) -> int:
        """The bit depth of the observed pixels: 1 for Bernoulli, else ``n_bits``."""
        return self._n_bits

    # -- distributions -------------------------------------------------------------------------

    def prior(self, temperature: float = 1.0) -> dist.TorchDistribution:
        r"""The prior :math:`p(z)` (sampling temperature ``temperature``)."""
        if self.prior_flow is not None:
            return FlowPrior(self.latent_dim, self.prior_flow, temperature=temperature)
        zeros = self._zeros(self.latent_dim)
        return dist.Normal(zeros, temperature * torch.ones_like(zeros)).to_event(1)

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
        _check_int("n", n, 1)
        z = self.prior(prior_temperature).expand([n]).sample()
        return self.decode(z, progress)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, progress: bool = True) -> Tensor:
        """The paper's "decompression": :meth:`decode` of each image's posterior mean."""
        return self.decode(self.encode(x)[0], progress)
