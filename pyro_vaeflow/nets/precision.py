r"""Mixed precision for the networks that carry the FLOPs, with float32 results."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor

__all__ = ["MixedPrecision"]


class MixedPrecision:
    r"""A network whose layers may run in a lower precision, returning float32 all the same.

    A mixin of the library's networks (the Glow conditioner, the ResNet encoder and decoder).
    With :attr:`compute_dtype` set to ``torch.bfloat16`` (what
    :func:`~pyro_vaeflow.acceleration.accelerate` does for ``precision="bf16"``), a float32
    input goes through the layers under :class:`torch.autocast`, and the output is cast back:

    .. math:: y = \operatorname{fp32}\bigl(\mathrm{NN}_{\text{bf16}}(x)\bigr),

    so whatever the caller computes from :math:`y` (the flows' affine arithmetic, their
    log-determinants, the Gaussian log-densities, the ELBO) stays float32. Inputs of another
    dtype (float64, for the exactness tests) run unchanged.

    Example:
        >>> class Net(torch.nn.Linear, MixedPrecision):
        ...     def forward(self, x):
        ...         with self.autocast(x):
        ...             y = super().forward(x)
        ...         return y.to(x.dtype)
        >>> net = Net(4, 4)
        >>> net.compute_dtype = torch.bfloat16
        >>> net(torch.ones(2, 4)).dtype
        torch.float32
        >>> with net.autocast(torch.ones(2, 4)):
        ...     net.weight.mm(torch.ones(4, 1)).dtype
        torch.bfloat16
    """

    #: The dtype of the layers' arithmetic (``None``: the input's own).
    compute_dtype: torch.dtype | None = None

    def autocast(self, x: Tensor) -> AbstractContextManager:
        """The context in which the layers run on ``x``: autocast, or nothing."""
        if self.compute_dtype is None or x.dtype != torch.float32:
            return nullcontext()
        return torch.autocast(x.device.type, dtype=self.compute_dtype)
