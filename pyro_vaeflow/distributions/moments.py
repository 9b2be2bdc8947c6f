r"""Monte-Carlo moments of a distribution without closed-form ones, such as a flow decoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution
from tqdm import tqdm

from pyro_vaeflow.validation import check_int

__all__ = ["Moments", "sample_moments"]


@dataclass(frozen=True)
class Moments:
    """Sample moments, each of the distribution's ``batch_shape + event_shape``.

    Attributes:
        mean: the sample mean :math:`\\bar x`.
        variance: the unbiased sample variance :math:`s^2`.
        stderr: the standard error of the mean, :math:`s / \\sqrt{n}`.
        num_samples: :math:`n`.
    """

    mean: Tensor
    variance: Tensor
    stderr: Tensor
    num_samples: int

    @property
    def stddev(self) -> Tensor:
        """The sample standard deviation :math:`s`."""
        return self.variance.sqrt()


def sample_moments(
    distribution: Distribution,
    num_samples: int = 1000,
    chunk_size: int = 100,
    progress: bool = False,
) -> Moments:
    r"""The mean and variance of ``distribution``, estimated from ``num_samples`` samples.

    For a flow decoder :math:`x = f(\bar x)`, :math:`\bar x \sim \mathcal{N}(\mu, (T\sigma)^2)`,
    the mean :math:`\mathbb{E}[x]` has no closed form, and :math:`f(\mu)` (what temperature 0
    draws) is not it. This draws :math:`n` samples in chunks and returns

    .. math:: \bar x = \frac{1}{n} \sum_{i=1}^n x_i, \qquad
              s^2 = \frac{1}{n - 1} \sum_{i=1}^n (x_i - \bar x)^2, \qquad
              \operatorname{se}(\bar x) = s / \sqrt{n},

    accumulated in float64 (shifted by the first chunk's mean, so no cancellation), under
    ``torch.no_grad()``; the memory grows with ``chunk_size``, not with ``num_samples``. The
    distribution's temperature is the one it samples at.

    Args:
        distribution: any distribution with ``sample``.
        num_samples: :math:`n \ge 2`.
        chunk_size: the samples drawn at once.
        progress: show a progress bar.

    Returns:
        :class:`Moments` of the distribution's ``batch_shape + event_shape``, in its dtype.

    Example:
        >>> from pyro_vaeflow.distributions import FlowDecoder
        >>> from pyro_vaeflow.transforms import glow
        >>> flow = glow(1, depth=1, hidden_channels=4, squeeze=1, init="identity")
        >>> decoder = FlowDecoder(torch.zeros(2, 1, 4, 4), 0.5, flow)
        >>> moments = sample_moments(decoder, num_samples=4000, chunk_size=1000)
        >>> moments.mean.shape
        torch.Size([2, 1, 4, 4])
        >>> bool((moments.mean.abs() < 5 * moments.stderr).all())  # the identity flow: mean 0
        True
    """
    check_int("num_samples", num_samples, 2)
    check_int("chunk_size", chunk_size)
    total = shift = square = None
    dtype = torch.get_default_dtype()
    with (
        torch.no_grad(),
        tqdm(
            total=num_samples,
            desc="sample_moments",
            unit="sample",
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        for start in range(0, num_samples, chunk_size):
            draw = distribution.sample((min(chunk_size, num_samples - start),))
            dtype, samples = draw.dtype, draw.double()
            if shift is None:
                shift = samples.mean(0)
                total, square = torch.zeros_like(shift), torch.zeros_like(shift)
            centred = samples - shift
            total, square = total + centred.sum(0), square + (centred**2).sum(0)
            bar.update(len(samples))
    mean = total / num_samples
    variance = ((square - num_samples * mean**2) / (num_samples - 1)).clamp_min(0.0)
    return Moments(
        mean=(shift + mean).to(dtype),
        variance=variance.to(dtype),
        stderr=(variance / num_samples).sqrt().to(dtype),
        num_samples=num_samples,
    )
