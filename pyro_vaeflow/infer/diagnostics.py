r"""Streaming summaries of importance weights: :math:`\log \hat p(x)`, its ESS and stderr."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["ImportanceDiagnostics", "LogWeightAccumulator"]


class ImportanceDiagnostics(NamedTuple):
    r"""Per-datum importance-sampling estimates, each of shape ``[N]``.

    With :math:`K` log-weights :math:`\ell_k = \log p(x, z_k) - \log q(z_k \mid x)` and
    :math:`w_k = e^{\ell_k}`:

    .. math:: \log \hat p(x) = \log \frac{1}{K} \sum_k w_k, \qquad
              \mathrm{ESS} = \frac{\left(\sum_k w_k\right)^2}{\sum_k w_k^2}
              \in [1, K].

    The standard error of :math:`\log \hat p(x)` comes from the delta method,
    :math:`\operatorname{Var} \log \hat p \approx \operatorname{Var}(w) / (K\, \mathbb{E}[w]^2)`,
    with the sample variance of the normalised weights :math:`\bar w_k = w_k / \bar w`:

    .. math:: \mathrm{stderr} = \sqrt{\frac{s^2_{\bar w}}{K}}
              = \sqrt{\frac{K / \mathrm{ESS} - 1}{K - 1}} .

    It is ``nan`` when :math:`K = 1`. It is itself estimated from the weights, so with
    heavy-tailed weights (a low ESS) it understates the error. The estimate is biased low, by
    about :math:`\mathrm{stderr}^2 / 2`.

    Attributes:
        log_px: :math:`\log \hat p(x)`, in nats.
        ess: the effective sample size.
        stderr: the standard error of ``log_px``, in nats.
    """

    log_px: Tensor
    ess: Tensor
    stderr: Tensor


class LogWeightAccumulator:
    r"""Accumulates ``[k, N]`` chunks of log-weights into :class:`ImportanceDiagnostics`.

    It keeps, per datum, a running shift :math:`m` (the largest log-weight so far) and the sums
    :math:`S_1 = \sum_k e^{\ell_k - m}` and :math:`S_2 = \sum_k e^{2(\ell_k - m)}`, rescaled when
    :math:`m` grows, so any number of chunks is combined in constant memory without overflow.
    NaN log-weights make that datum's estimates NaN; they are never dropped.

    Example:
        >>> log_w = torch.randn(100, 3, dtype=torch.float64)
        >>> acc = LogWeightAccumulator()
        >>> for chunk in log_w.split(30):
        ...     acc.update(chunk)
        >>> expected = torch.logsumexp(log_w, 0) - torch.tensor(100.0).log()
        >>> torch.allclose(acc.summary().log_px, expected)
        True
    """

    def __init__(self) -> None:
        self.count = 0
        self._max: Tensor | None = None
        self._shift: Tensor | None = None
        self._sum: Tensor | None = None
        self._sum_sq: Tensor | None = None

    def update(self, log_w: Tensor) -> None:
        """Adds ``[k, N]`` log-weights."""
        if log_w.dim() != 2 or log_w.shape[0] == 0:
            raise ValueError(f"log-weights must have shape [k >= 1, N], got {tuple(log_w.shape)}")
        chunk_max = log_w.detach().max(0).values
        new_max = chunk_max if self._max is None else torch.maximum(self._max, chunk_max)
        # A datum whose log-weights are all -inf keeps a zero shift; NaN stays NaN.
        shift = torch.where(new_max == -math.inf, torch.zeros_like(new_max), new_max)
        scaled = log_w - shift
        chunk_sum, chunk_sum_sq = scaled.exp().sum(0), (2 * scaled).exp().sum(0)
        if self._sum is None:
            self._sum, self._sum_sq = chunk_sum, chunk_sum_sq
        else:
            factor = (self._shift - shift).clamp(max=0.0).exp()
            self._sum = self._sum * factor + chunk_sum
            self._sum_sq = self._sum_sq * factor**2 + chunk_sum_sq
        self._max, self._shift = new_max, shift
        self.count += log_w.shape[0]

    def summary(self) -> ImportanceDiagnostics:
        """The estimates from every log-weight added so far."""
        if self._sum is None:
            raise ValueError("no log-weights were added")
        k = self.count
        log_px = self._shift + self._sum.log() - math.log(k)
        ess = self._sum**2 / self._sum_sq
        if k == 1:
            stderr = torch.full_like(log_px, math.nan)
        else:
            stderr = ((k / ess - 1).clamp(min=0.0) / (k - 1)).sqrt()
        return ImportanceDiagnostics(log_px, ess, stderr)
