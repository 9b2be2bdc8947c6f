r"""VLAE's autoregressive-flow prior: MADE steps, cheap in the density direction."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pyro.nn import AutoRegressiveNN
from torch import Tensor, nn
from torch.distributions import constraints

from pyro_vaeflow.transforms.base import Flow
from pyro_vaeflow.transforms.shapes import with_last
from pyro_vaeflow.validation import check_int

__all__ = ["AutoregressiveFlow"]


class AutoregressiveFlow(Flow):
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
        cache_size: see :class:`~pyro_vaeflow.transforms.Flow`.

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

    def __init__(
        self,
        dim: int,
        num_steps: int = 4,
        hidden_dims: Sequence[int] = (256, 256),
        affine: bool = False,
        cache_size: int = 1,
    ) -> None:
        super().__init__(cache_size=cache_size)
        check_int("dim", dim, 2)
        check_int("num_steps", num_steps, 1)
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

    def inverse_and_log_det(self, z: Tensor) -> tuple[Tensor, Tensor]:
        eps, log_det = self._density(z)
        return eps, -log_det.sum(-1)

    def forward_and_log_det(self, eps: Tensor) -> tuple[Tensor, Tensor]:
        h = eps
        for step in reversed(range(len(self.mades))):
            target, x = h, torch.zeros_like(h)
            for _ in range(self.dim):  # one more exact dimension per pass
                shift, log_scale = self._params(step, x)
                x = shift + (target if log_scale is None else target * torch.exp(log_scale))
            h = x
        return h, -self._density(h)[1].sum(-1)

    def expected_shape(self, shape: torch.Size) -> torch.Size:
        return with_last(shape, self.dim)

    def log_prob_per_dim(self, z: Tensor) -> Tensor:
        r"""The terms :math:`\log \mathcal{N}(\varepsilon_j; 0, 1) + \log|\partial\varepsilon_j /
        \partial h_j|` (summed over steps), ``[..., D]``; they sum to :math:`\log p(z)`."""
        eps, log_det = self._density(z)
        return -0.5 * eps**2 - 0.5 * math.log(2 * math.pi) + log_det
