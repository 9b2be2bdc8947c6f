r"""Glow (Kingma & Dhariwal, 2018) as a standalone multi-scale model: the flow baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import pyro
import torch
from pyro.distributions import TorchDistribution
from torch import Tensor, nn
from torch.distributions import constraints

from pyro_vaeflow.models.base import ImageModel
from pyro_vaeflow.transforms import Squeeze2d, glow
from pyro_vaeflow.validation import check_choice, check_int, check_number

__all__ = ["Glow", "MultiscaleGlowDistribution"]

_COUPLINGS = ("additive", "affine")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _normal_log_prob(z: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """:math:`\\log \\mathcal{N}(z; \\mu, e^{2 s})`, summed over the last three dimensions."""
    standardized = (z - loc) * torch.exp(-log_scale)
    return (-0.5 * standardized**2 - log_scale - _HALF_LOG_2PI).sum(dim=(-3, -2, -1))


def _max_levels(height: int, width: int) -> int:
    """The number of 2x2 squeezes an ``height × width`` image allows."""
    levels = 0
    while height % 2 == 0 and width % 2 == 0:
        height, width, levels = height // 2, width // 2, levels + 1
    return levels


def _floored(raw: Tensor, log_floor: float) -> Tensor:
    r""":math:`\log(e^{r} + \sigma_\min)`: a log-scale that stays above
    :math:`\log \sigma_\min`, smoothly."""
    return torch.logaddexp(raw, torch.full_like(raw, log_floor))


class _SplitPrior(nn.Module):
    r""":math:`p(z \mid h) = \mathcal{N}(\mu(h), (e^{s(h)} + \sigma_\min)^2)`, with
    :math:`(\mu, s)` a zero-initialised 3x3 convolution of the kept half :math:`h`
    (openai/glow's ``split2d``)."""

    def __init__(self, kept_channels: int, latent_channels: int, log_floor: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(kept_channels, 2 * latent_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.log_floor = log_floor

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        loc, raw = self.conv(h).chunk(2, dim=-3)
        return loc, _floored(raw, self.log_floor)


class _TopPrior(nn.Module):
    """The prior of the last level's output: learned per position (from zero), or N(0, I)."""

    def __init__(self, shape: Sequence[int], learn: bool, log_floor: float) -> None:
        super().__init__()
        self.log_floor = log_floor
        self.learn = learn
        if learn:
            self.loc = nn.Parameter(torch.zeros(*shape))
            self.log_scale = nn.Parameter(torch.zeros(*shape))
        else:
            self.register_buffer("loc", torch.zeros(*shape), persistent=False)
            self.register_buffer("log_scale", torch.zeros(*shape), persistent=False)

    def forward(self, like: Tensor) -> tuple[Tensor, Tensor]:
        log_scale = _floored(self.log_scale, self.log_floor) if self.learn else self.log_scale
        return self.loc.expand_as(like), log_scale.expand_as(like)


class _Level(nn.Module):
    """One scale: K Glow steps on the squeezed image, then (except last) a split prior."""

    def __init__(self, flow: nn.Module, prior: _SplitPrior | None) -> None:
        super().__init__()
        self.flow = flow
        self.prior = prior


class Glow(ImageModel):
    r"""Glow's multi-scale flow (Kingma & Dhariwal, 2018) as a Pyro model, the flow baseline.

    Read data → latent, with :math:`h_0 = x - \tfrac12` for images :math:`x \in [0, 1]^{C
    \times H \times W}`, each of the :math:`L` levels squeezes (space to depth, 2x2), runs
    :math:`K` steps of actnorm → 1x1 convolution → coupling (:func:`~pyro_vaeflow.transforms.glow`
    with data-dependent actnorm), and, except the last, factors out half of the channels:

    .. math:: (h_l, z_l) = \operatorname{split}\big(g_l^{-1}(\operatorname{squeeze}(h_{l-1}))
              \big), \quad l < L, \qquad z_L = g_L^{-1}(\operatorname{squeeze}(h_{L-1})) .

    Each factored-out half has a learned conditional prior
    :math:`p(z_l \mid h_l) = \mathcal{N}(\mu_l(h_l), \operatorname{diag} e^{2 s_l(h_l)})`, a
    zero-initialised 3x3 convolution of the kept half, and the top has
    :math:`p(z_L) = \mathcal{N}(\mu, \operatorname{diag} e^{2 s})` with :math:`\mu, s` learned
    per position from zero (``learn_top``) or :math:`\mathcal{N}(0, I)`. With the flows
    :math:`g_l` mapping base → data, as every :class:`~pyro_vaeflow.transforms.Flow` does,

    .. math:: \log p(x) = \sum_{l<L} \log p(z_l \mid h_l) + \log p(z_L)
              - \sum_{l=1}^{L} \log\left|\det \frac{\partial g_l}{\partial u}\right| ,

    summed over the event dimensions (the squeezes, splits and shift have unit Jacobian). A
    1×28×28 image has latents 2×14×14 and 8×7×7 with ``levels=2``.

    :meth:`model` observes ``x`` from :meth:`distribution` in ``pyro.plate("data", N)`` and
    :meth:`guide` samples nothing, so ``Trace_ELBO``'s ELBO and
    :func:`~pyro_vaeflow.infer.elbo` are the exact :math:`\log p(x)`, and
    :func:`~pyro_vaeflow.training.fit` trains it with the phase ``"all"``. Sampling at
    temperature :math:`T` multiplies every Gaussian scale by :math:`T` (the paper samples at
    0.7). Actnorm initialises on the first batch it sees: train, or call :meth:`log_prob` on a
    batch of data, before sampling.

    Args:
        image_shape: ``(C, H, W)``, with :math:`H` and :math:`W` divisible by :math:`2^L`.
        levels: the number of scales :math:`L`.
        depth: the steps :math:`K` per level.
        hidden_channels: width of each coupling's conditioner.
        coupling: ``"affine"`` (the paper's best) or ``"additive"``.
        learn_top: learn the top prior's mean and scale per position.
        min_scale: the floor :math:`\sigma_\min` of the learned priors' scales, which enter
            as :math:`e^{s} + \sigma_\min` (as :class:`VAEFlow`'s decoder scale has one).
            Without it, a scale learned on nearly constant pixels (Fashion-MNIST's background)
            collapses, and one unusual batch then costs millions of bits/dim (measured: 5.7 →
            5·10⁷ at step 154 of lr 1e-3).
        checkpoint: gradient checkpointing over each level's steps (see
            :class:`~pyro_vaeflow.transforms.ComposeFlow`): less memory for about one more
            forward pass per training step; the gradients are the same.

    Example:
        >>> model = Glow((1, 8, 8), levels=2, depth=1, hidden_channels=8)
        >>> x = torch.rand(5, 1, 8, 8)
        >>> model.log_prob(x).shape  # the first call initialises actnorm on x
        torch.Size([5])
        >>> [tuple(z.shape) for z in model.encode(x)]
        [(5, 2, 4, 4), (5, 8, 2, 2)]
        >>> torch.allclose(model.decode(model.encode(x)), x, atol=1e-5)
        True
        >>> model.sample(3, temperature=0.7).shape
        torch.Size([3, 1, 8, 8])
    """

    architecture = "glow"
    """The name of the model class in :data:`~pyro_vaeflow.models.ARCHITECTURES`."""

    def __init__(
        self,
        image_shape: Sequence[int],
        levels: int = 3,
        depth: int = 32,
        hidden_channels: int = 512,
        coupling: str = "affine",
        learn_top: bool = True,
        min_scale: float = 1e-3,
        checkpoint: bool = False,
    ) -> None:
        super().__init__(image_shape)
        check_choice("coupling", coupling, _COUPLINGS)
        check_int("levels", levels)
        check_int("depth", depth)
        log_floor = math.log(check_number("min_scale", min_scale, low=0.0, strict=True))
        channels, height, width = image_shape = self.image_shape
        factor = 2**levels
        if height % factor or width % factor:
            most = _max_levels(height, width)
            raise ValueError(
                f"Glow with levels={levels} squeezes {levels} times and needs H and W divisible "
                f"by {factor}, got image_shape {image_shape}; "
                + (f"use levels <= {most}" if most else "H and W must be even")
            )
        self.squeeze = Squeeze2d()
        steps, shapes = [], []
        for level in range(levels):
            channels, height, width = 4 * channels, height // 2, width // 2
            flow = glow(
                channels, depth, hidden_channels, coupling, squeeze=0, checkpoint=checkpoint
            )
            prior = None
            if level < levels - 1:
                kept = channels // 2
                prior = _SplitPrior(kept, channels - kept, log_floor)
                shapes.append((channels - kept, height, width))
                channels = kept
            steps.append(_Level(flow, prior))
        shapes.append((channels, height, width))
        self.levels = nn.ModuleList(steps)
        self.top = _TopPrior(shapes[-1], learn_top, log_floor)
        # The shapes (C, H, W) of the latents of encode(): each split's, then the top's.
        self.latent_shapes: list[tuple[int, int, int]] = shapes

    # -- the bijection ---------------------------------------------------------------------------

    def _check_values(self, x: Tensor, what: str = "x") -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            kind = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{what} must be a float tensor, got {kind}")
        if x.dim() < 3 or tuple(x.shape[-3:]) != self.image_shape:
            expected = ", ".join(map(str, self.image_shape))
            raise ValueError(f"{what} must have shape [..., {expected}], got {tuple(x.shape)}")

    def _encode(self, x: Tensor) -> tuple[list[Tensor], list[tuple[Tensor, Tensor]], Tensor]:
        """Latents, their priors' ``(loc, log_scale)`` and :math:`\\log|\\det \\partial z /
        \\partial x|`, for images ``[B, C, H, W]``."""
        h = x - 0.5
        log_det = x.new_zeros(x.shape[:-3])
        latents, priors = [], []
        for level in self.levels:
            h = self.squeeze.forward_and_log_det(h)[0]
            h, base_to_data = level.flow.inverse_and_log_det(h)
            log_det = log_det - base_to_data
            if level.prior is not None:
                h, z = h.chunk(2, dim=-3)
                latents.append(z)
                priors.append(level.prior(h))
        latents.append(h)
        priors.append(self.top(h))
        return latents, priors, log_det

    def _flat_images(self, x: Tensor) -> tuple[Tensor, torch.Size]:
        self._check_values(x)
        return x.reshape(-1, *self.image_shape), x.shape[:-3]

    def encode(self, x: Tensor, standardize: bool = False) -> list[Tensor]:
        r"""The latents :math:`z_1, \dots, z_{L-1}, z_L` of images ``x`` ``[..., C, H, W]``.

        With ``standardize``, each is replaced by its standardised noise
        :math:`\epsilon_l = (z_l - \mu_l) e^{-s_l}`, which is :math:`\mathcal{N}(0, I)` under the
        model. Shapes: ``[..., *latent_shapes[l]]``.
        """
        flat, batch = self._flat_images(x)
        latents, priors, _ = self._encode(flat)
        if standardize:
            latents = [
                (z - loc) * torch.exp(-log_scale)
                for z, (loc, log_scale) in zip(latents, priors, strict=True)
            ]
        return [z.reshape(*batch, *z.shape[1:]) for z in latents]

    def decode(
        self, latents: Sequence[Tensor], standardized: bool = False, temperature: float = 1.0
    ) -> Tensor:
        r"""Images from latents, the exact inverse of :meth:`encode`.

        With ``standardized``, ``latents`` are noises :math:`\epsilon_l` and each latent is
        :math:`z_l = \mu_l + T e^{s_l} \epsilon_l`, top first (the conditional priors depend on
        the levels above); ``temperature`` :math:`T` only applies then.
        """
        temperature = check_number("temperature", temperature, low=0.0)
        if len(latents) != len(self.latent_shapes):
            raise ValueError(
                f"expected {len(self.latent_shapes)} latents of shapes {self.latent_shapes}, got "
                f"{len(latents)}"
            )
        for index, (z, shape) in enumerate(zip(latents, self.latent_shapes, strict=True)):
            if not isinstance(z, Tensor) or z.dim() < 3 or tuple(z.shape[-3:]) != shape:
                got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
                raise ValueError(f"latent {index} must have shape [..., {shape}], got {got}")
        batch = latents[-1].shape[:-3]
        flat = [z.reshape(-1, *z.shape[-3:]) for z in latents]

        def latent(z: Tensor, prior: tuple[Tensor, Tensor]) -> Tensor:
            return prior[0] + temperature * torch.exp(prior[1]) * z if standardized else z

        h = latent(flat[-1], self.top(flat[-1]))
        for index in reversed(range(len(self.levels))):
            level = self.levels[index]
            if level.prior is not None:
                h = torch.cat([h, latent(flat[index], level.prior(h))], dim=-3)
            h = level.flow.forward_and_log_det(h)[0]
            h = self.squeeze.inverse_and_log_det(h)[0]
        return (h + 0.5).reshape(*batch, *self.image_shape)

    # -- distributions ---------------------------------------------------------------------------

    def _log_prob(self, x: Tensor) -> Tensor:
        flat, batch = self._flat_images(x)
        latents, priors, log_det = self._encode(flat)
        log_p = log_det
        for z, (loc, log_scale) in zip(latents, priors, strict=True):
            log_p = log_p + _normal_log_prob(z, loc, log_scale)
        return log_p.reshape(batch)

    def log_prob(self, x: Tensor) -> Tensor:
        r""":math:`\log p(x)` in nats of images ``[..., C, H, W]`` (shape: the batch shape).

        It is the density of :math:`x` as a point of :math:`\mathbb{R}^{CHW}`; on dequantised
        data in [0, 1], :func:`~pyro_vaeflow.infer.bits_per_dim` converts it to bits/dim.
        """
        return self._log_prob(x)

    def distribution(self, temperature: float = 1.0) -> MultiscaleGlowDistribution:
        """The model as a Pyro distribution over images, sampled at ``temperature``."""
        return MultiscaleGlowDistribution(self, temperature)

    # -- Pyro model and guide --------------------------------------------------------------------

    def model(self, x: Tensor) -> None:
        """Observes ``x`` (``N×C×H×W`` in [0, 1]) from :meth:`distribution`."""
        self.check_images(x)
        self._register()
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", self.distribution(), obs=x)

    def guide(self, x: Tensor) -> None:
        """The empty guide: the model has no latent sites (its latents are a function of x)."""
        self.check_images(x)

    # -- queries ---------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 0.7) -> Tensor:
        """``n`` images ``[n, C, H, W]`` at ``temperature``, in data space (not clamped)."""
        check_int("n", n, low=0)
        return self.distribution(temperature).sample(torch.Size([n]))


class MultiscaleGlowDistribution(TorchDistribution):
    r"""A :class:`Glow` model as a Pyro distribution over images ``[..., C, H, W]``.

    :meth:`log_prob` is :meth:`Glow.log_prob` (the density at :math:`T = 1`; the temperature,
    as for :class:`~pyro_vaeflow.distributions.FlowNormal`, only affects sampling) broadcast to
    the batch shape; :meth:`rsample` draws every Gaussian latent with its scale multiplied by
    ``temperature`` and maps them to data, differentiably. ``event_shape`` is the image shape;
    the batch shape is ``()`` until :meth:`expand` or a ``pyro.plate`` sets it.

    Args:
        glow: the model.
        temperature: the sampling temperature :math:`T \ge 0`.
        batch_shape: the batch shape.
        validate_args: as for any Pyro distribution; with validation on, values of the wrong
            shape or with NaN/Inf raise a ``ValueError``.

    Example:
        >>> model = Glow((1, 4, 4), levels=1, depth=1, hidden_channels=4)
        >>> d = model.distribution(temperature=0.5).expand([3])
        >>> d.batch_shape, d.event_shape, d.sample().shape
        (torch.Size([3]), torch.Size([1, 4, 4]), torch.Size([3, 1, 4, 4]))
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    support = constraints.independent(constraints.real, 3)
    has_rsample = True

    def __init__(
        self,
        glow: Glow,
        temperature: float = 1.0,
        batch_shape: Sequence[int] = (),
        validate_args: bool | None = None,
    ) -> None:
        self.glow = glow
        self.temperature = check_number("temperature", temperature, low=0.0)
        super().__init__(
            torch.Size(batch_shape), torch.Size(glow.image_shape), validate_args=validate_args
        )

    def expand(self, batch_shape, _instance=None) -> MultiscaleGlowDistribution:
        new = self._get_checked_instance(MultiscaleGlowDistribution, _instance)
        new.glow, new.temperature = self.glow, self.temperature
        TorchDistribution.__init__(
            new, torch.Size(batch_shape), self.event_shape, validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        batch = self._extended_shape(torch.Size(sample_shape))[:-3]
        reference = next(self.glow.parameters())
        noise = [
            torch.randn(batch + shape, dtype=reference.dtype, device=reference.device)
            for shape in self.glow.latent_shapes
        ]
        return self.glow.decode(noise, standardized=True, temperature=self.temperature)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_p = self.glow._log_prob(value)
        return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))

    def _validate_sample(self, value: Tensor) -> None:
        name = type(self).__name__
        self.glow._check_values(value, f"{name}.log_prob's value")
        batch = value.shape[:-3]
        try:
            torch.broadcast_shapes(batch, self.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"{name}.log_prob: the batch shape {tuple(batch)} of the value does not "
                f"broadcast with the distribution's {tuple(self.batch_shape)}"
            ) from None
        if not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(f"{name}.log_prob got {bad} NaN or infinite values")
