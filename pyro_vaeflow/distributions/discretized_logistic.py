r"""The discretised logistic of PixelCNN++, and the density of dequantised discrete pixels.

Conventions, shared by the autoregressive models (:class:`~pyro_vaeflow.models.VLAE`,
:class:`~pyro_vaeflow.models.AGAVE`). An :math:`n`-bit pixel is an integer *level*
:math:`k \in \{0, \dots, K - 1\}`, :math:`K = 2^n`, which owns the bin
:math:`[k / K, (k + 1) / K)` of the unit interval, exactly as
:func:`~pyro_vaeflow.data.dequantize` places it. :class:`DiscretizedLogistic` is a distribution
over the levels whose location and scale are in the units of :math:`[0, 1]` intensities; the
models observe their float images in :math:`[0, 1]` through :class:`Dequantized`, whose
log-density is the levels' log-probability plus :math:`D n \log 2`, so that
:func:`~pyro_vaeflow.infer.bits_per_dim` of it is the discrete model's exact code length.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all
from torch.nn import functional as F

from pyro_vaeflow.validation import check_int

__all__ = ["Dequantized", "DiscretizedLogistic", "to_levels"]


def _check_bits(n_bits: int, high: int = 16) -> int:
    return check_int("n_bits", n_bits, low=1, high=high)


def to_levels(x: Tensor, n_bits: int) -> Tensor:
    r"""The integer levels :math:`k = \operatorname{clamp}(\lfloor 2^n x \rfloor, 0, 2^n - 1)`,
    as floats of ``x``'s dtype.

    This recovers the level of a dequantised value :math:`(k + u) / 2^n`,
    :math:`u \in [0, 1)`, of a level-centred value :math:`(k + 1/2) / 2^n` and of a value
    scaled as :math:`k / (2^n - 1)` (such as ``pixel / 255``, or a binary image in
    :math:`\{0, 1\}` for :math:`n = 1`) alike, in any floating dtype.

    Example:
        >>> to_levels(torch.tensor([0.0, 0.5, 0.999, 1.0]), n_bits=1).tolist()
        [0.0, 1.0, 1.0, 1.0]
        >>> k = torch.arange(256.0)
        >>> bool((to_levels(k / 255, 8) == k).all() and (to_levels((k + 0.5) / 256, 8) == k).all())
        True
    """
    _check_bits(n_bits)
    levels = 2**n_bits
    return (x * levels).floor().clamp(0, levels - 1)


class DiscretizedLogistic(TorchDistribution):
    r"""A logistic distribution discretised into the :math:`K = 2^n` levels of :math:`[0, 1]`.

    Level :math:`k` owns the bin :math:`[k / K, (k + 1) / K)`; the first bin extends to
    :math:`-\infty` and the last to :math:`+\infty` (PixelCNN++), so the :math:`K`
    probabilities sum to 1 and :math:`\mu` may lie anywhere:

    .. math::
        P(k) = \sigma\!\left(\frac{b_{k+1} - \mu}{s}\right)
             - \sigma\!\left(\frac{b_k - \mu}{s}\right), \qquad
        b_0 = -\infty,\ b_k = k / K,\ b_K = +\infty .

    The log-probability is computed without subtracting probabilities, with the identity
    :math:`\sigma(u) - \sigma(l) = \sigma(u)\,\sigma(-l)\,\big(1 - e^{-(u - l)}\big)`:

    .. math:: \log P(k) = \log\sigma(u) + \log\sigma(-l) + \log\!\big(-\operatorname{expm1}
              (-1 / (K s))\big), \quad l = \frac{b_k - \mu}{s},\ u = \frac{b_{k+1} - \mu}{s},

    which is accurate for any bin, however far in a tail or however narrow against :math:`s`
    (where PixelCNN++'s subtraction of two CDFs cancels and needs its mid-point fallback). The
    mid-point approximation :math:`\log p_\text{logistic}((k + 1/2) / K) - \log K` is kept only as
    a guard, where the identity is not finite (a scale so small or so large that
    :math:`1 / (K s)` under- or overflows).

    Values are levels (floats holding integers, as Pyro's discrete distributions take them);
    :meth:`sample` draws by inverting the logistic CDF and binning.

    Args:
        loc: the location :math:`\mu`, in :math:`[0, 1]` intensity units.
        scale: the scale :math:`s > 0`, in the same units.
        n_bits: the bit depth :math:`n` (1 to 16), :math:`K = 2^n` levels.
        validate_args: as for any Pyro distribution.

    Example:
        >>> d = DiscretizedLogistic(torch.tensor([0.2, 0.9]), 0.05, n_bits=3)
        >>> d.batch_shape, d.event_shape, d.sample().shape
        (torch.Size([2]), torch.Size([]), torch.Size([2]))
        >>> total = d.log_prob(d.enumerate_support()).logsumexp(0)  # log Σ_k P(k)
        >>> torch.allclose(total, torch.zeros(2), atol=1e-6)
        True
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "loc": constraints.real,
        "scale": constraints.positive,
    }
    has_enumerate_support = True

    def __init__(
        self,
        loc: Tensor | float,
        scale: Tensor | float,
        n_bits: int = 8,
        validate_args: bool | None = None,
    ) -> None:
        self.n_bits = _check_bits(n_bits)
        self.loc, self.scale = broadcast_all(loc, scale)
        super().__init__(self.loc.shape, torch.Size(), validate_args=validate_args)

    @property
    def num_levels(self) -> int:
        """:math:`K = 2^n`."""
        return 2**self.n_bits

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.num_levels - 1)

    def expand(self, batch_shape, _instance=None) -> DiscretizedLogistic:
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc, new.scale = self.loc.expand(batch_shape), self.scale.expand(batch_shape)
        new.n_bits = self.n_bits
        super(DiscretizedLogistic, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        value = torch.as_tensor(value, dtype=self.loc.dtype, device=self.loc.device)
        levels = self.num_levels
        inv_scale = self.scale.reciprocal()
        lower = (value / levels - self.loc) * inv_scale
        upper = ((value + 1) / levels - self.loc) * inv_scale
        log_cdf_upper = F.logsigmoid(upper)  # log P(X < b_{k+1}): the first bin
        log_sf_lower = F.logsigmoid(-lower)  # log P(X >= b_k): the last bin
        log_width = torch.log(-torch.expm1(-inv_scale / levels))  # -inf if 1 / (K s) underflows
        interior = log_cdf_upper + log_sf_lower + log_width
        centred = ((value + 0.5) / levels - self.loc) * inv_scale
        log_mid = centred - 2 * F.softplus(centred) - self.scale.log() - math.log(levels)
        use_mid = ~torch.isfinite(interior) & torch.isfinite(log_mid)
        interior = torch.where(use_mid, log_mid, interior)
        return torch.where(
            value <= 0,
            log_cdf_upper,
            torch.where(value >= levels - 1, log_sf_lower, interior),
        )

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            eps = torch.finfo(self.loc.dtype).eps
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            u = u.clamp(eps, 1 - eps)
            x = self.loc.expand(shape) + self.scale.expand(shape) * (u.log() - (-u).log1p())
            return (x * self.num_levels).floor().clamp(0, self.num_levels - 1)

    def enumerate_support(self, expand: bool = True) -> Tensor:
        values = torch.arange(self.num_levels, dtype=self.loc.dtype, device=self.loc.device)
        values = values.reshape((-1,) + (1,) * len(self.batch_shape))
        return values.expand((-1, *self.batch_shape)) if expand else values

    @property
    def mode(self) -> Tensor:
        """The level whose bin holds :math:`\\mu` (not always the most probable at the edges)."""
        return to_levels(self.loc, self.n_bits)


class Dequantized(TorchDistribution):
    r"""The density on :math:`[0, 1)^D` of a discrete distribution over :math:`2^n` levels
    whose mass is spread uniformly over each level's bin.

    .. math:: \log p(x) = \log P(k) + D\, n \log 2, \qquad
              k = \operatorname{clamp}(\lfloor 2^n x \rfloor, 0, 2^n - 1),

    with :math:`D` the number of event elements. It is a normalised density, so a model that
    observes its dequantised images through it gets, from the usual tools, the discrete
    model's exact numbers: :math:`\mathbb{E}_u \log p(x) = \log P(k) + D n \log 2`, and
    :func:`~pyro_vaeflow.infer.bits_per_dim` (with ``n_bits = n``) gives
    :math:`-\log_2 P(k) / D`. Values may also be level-centred or scaled as
    :math:`k / (2^n - 1)`: see :func:`to_levels`.

    Args:
        base: a distribution over the levels :math:`\{0, \dots, 2^n - 1\}` (e.g.
            :class:`DiscretizedLogistic` or ``Bernoulli`` for :math:`n = 1`, with
            ``.to_event`` for images).
        n_bits: the bit depth :math:`n`.
        validate_args: as for any Pyro distribution.

    Example:
        >>> import pyro.distributions as dist
        >>> d = Dequantized(dist.Bernoulli(logits=torch.zeros(2, 3)).to_event(1), n_bits=1)
        >>> d.log_prob(torch.tensor([[0.0, 1.0, 0.2], [0.7, 0.6, 0.9]]))
        tensor([0., 0.])
        >>> x = d.sample()
        >>> x.shape, bool(((0 <= x) & (x < 1)).all())
        (torch.Size([2, 3]), True)
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}

    def __init__(
        self, base: TorchDistribution, n_bits: int, validate_args: bool | None = None
    ) -> None:
        if not isinstance(base, torch.distributions.Distribution):
            raise TypeError(f"base must be a distribution, got {type(base).__name__}")
        self.base = base
        self.n_bits = _check_bits(n_bits)
        super().__init__(base.batch_shape, base.event_shape, validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.unit_interval, len(self.event_shape))

    @property
    def log_offset(self) -> float:
        r""":math:`D n \log 2`, the log-density of the uniform noise within the bins."""
        return self.event_shape.numel() * self.n_bits * math.log(2)

    def expand(self, batch_shape, _instance=None) -> Dequantized:
        new = self._get_checked_instance(Dequantized, _instance)
        batch_shape = torch.Size(batch_shape)
        new.base, new.n_bits = self.base.expand(batch_shape), self.n_bits
        super(Dequantized, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self.base.log_prob(to_levels(value, self.n_bits)) + self.log_offset

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        with torch.no_grad():
            levels = self.base.sample(sample_shape)
            u = torch.rand_like(levels)
            bins = 2.0**self.n_bits
            top = torch.nextafter((levels + 1) / bins, torch.zeros_like(levels))
            return torch.minimum((levels + u) / bins, top)
