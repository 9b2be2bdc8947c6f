r"""Bits per dimension of dequantised discrete data."""

from __future__ import annotations

import math

from torch import Tensor

from pyro_vaeflow.validation import check_int

__all__ = ["bits_per_dim"]


def bits_per_dim(log_px: Tensor | float, num_dims: int, n_bits: int = 8) -> Tensor | float:
    r"""Converts a log-density of data in :math:`[0, 1)^D` into bits per dimension.

    For :math:`n`-bit data dequantised and scaled as :math:`y = (\text{pixel} + u) / 2^n`,
    :math:`u \sim \mathcal{U}[0, 1)^D`, the density of :math:`\text{pixel} + u` is
    :math:`p(y) / 2^{nD}`, so

    .. math:: \text{bits/dim} = -\frac{\log_2 \left(p(y)\, 2^{-nD}\right)}{D}
              = n - \frac{\log p(y)}{D \ln 2} ,

    an upper bound on the discrete model's code length per dimension.

    Args:
        log_px: :math:`\log p(y)` in nats, e.g. from :func:`~pyro_vaeflow.infer.log_likelihood`.
        num_dims: the number of dimensions :math:`D` of a datum, e.g. :math:`C H W`.
        n_bits: the bit depth :math:`n` of the data.

    Returns:
        Bits per dimension, of the type and shape of ``log_px``.

    Example:
        >>> bits_per_dim(torch.tensor([0.0, 3 * 32 * 32 * 8 * 0.6931471805599453]), 3 * 32 * 32)
        tensor([8., 0.])
    """
    check_int("num_dims", num_dims)
    check_int("n_bits", n_bits)
    return n_bits - log_px / (num_dims * math.log(2))
