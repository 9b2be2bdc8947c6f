r"""What VLAE and AGAVE share: a VAE whose decoder is a PixelCNN over discrete pixel levels."""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_vaeflow.distributions.discretized_logistic import to_levels
from pyro_vaeflow.models.latent import LatentVariableModel

__all__ = ["PixelCNNVAE"]


class PixelCNNVAE(LatentVariableModel):
    r"""A :class:`~pyro_vaeflow.models.latent.LatentVariableModel` that observes :math:`n`-bit
    pixel levels through a PixelCNN: the levels of its float input, the PixelCNN's input
    scale, and the switch between the training objective and the true model.

    A subclass sets ``n_bits``, the bit depth of the observed pixels (``fit`` and the run
    layer read it; pass it to ``bits_per_dim``).
    """

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
