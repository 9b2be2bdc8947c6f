r"""SVI that skips steps whose loss or gradients are not finite."""

from __future__ import annotations

import math
import warnings

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI

__all__ = ["GuardedSVI", "NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """Raised when too many consecutive steps had a non-finite loss or gradients."""


class GuardedSVI(SVI):
    r"""Pyro's :class:`~pyro.infer.SVI`, except that a bad step changes nothing.

    A step whose loss or any gradient is NaN or infinite (or so large that its sum overflows
    the float range), or in which a distribution refused a NaN parameter (Pyro's validation),
    is skipped: the gradients are zeroed
    and no parameter moves (Pyro's own NaN warnings are silenced, as the step is counted
    instead). Skipped steps are counted in :attr:`skipped` (all of them) and
    :attr:`consecutive_skipped`; after ``max_consecutive_skipped`` in a row, :meth:`step` raises
    :class:`NonFiniteLossError`.

    Args:
        model: the Pyro model.
        guide: the Pyro guide.
        optim: a Pyro optimiser.
        loss: an ELBO, e.g. :class:`~pyro.infer.Trace_ELBO`.
        max_consecutive_skipped: how many bad steps in a row are tolerated.

    Example:
        >>> import pyro.distributions as dist
        >>> from pyro.infer import Trace_ELBO
        >>> def model(x):
        ...     loc = pyro.param("loc", torch.tensor(0.0))
        ...     pyro.sample("x", dist.Normal(loc, 1.0, validate_args=False), obs=x)
        >>> svi = GuardedSVI(model, lambda x: None, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
        >>> svi.step(torch.tensor(float("nan")))
        nan
        >>> svi.skipped, pyro.param("loc").item()
        (1, 0.0)
    """

    def __init__(self, model, guide, optim, loss, max_consecutive_skipped: int = 20) -> None:
        super().__init__(model, guide, optim, loss)
        self.max_consecutive_skipped = max_consecutive_skipped
        self.skipped = 0
        self.consecutive_skipped = 0

    def step(self, *args, **kwargs) -> float:
        with warnings.catch_warnings(), poutine.trace(param_only=True) as capture:
            warnings.filterwarnings("ignore", message="Encountered (NaN|\\+/-Inf)")
            try:
                loss = float(self.loss_and_grads(self.model, self.guide, *args, **kwargs))
            except ValueError as error:
                if "found invalid values" not in str(error):
                    raise
                loss = math.nan  # a distribution refused a NaN parameter
        params = {site["value"].unconstrained() for site in capture.trace.nodes.values()}
        if not params:
            raise ValueError(
                "nothing to train: the model and the guide registered no trainable parameter "
                "(register each part with pyro.module or pyro.param; a part frozen by the "
                "training phase is not registered)"
            )
        self._check_registered(params)
        # A gradient's sum is finite unless an entry is NaN or ±inf (or the sum overflows float
        # range), and a sum is cheaper than an isfinite mask as large as the gradient.
        sums = [p.grad.sum() for p in params if p.grad is not None]
        finite = math.isfinite(loss) and (not sums or bool(torch.stack(sums).isfinite().all()))
        if finite:
            self.optim(params)
            self.consecutive_skipped = 0
        else:
            self.skipped += 1
            self.consecutive_skipped += 1
        pyro.infer.util.zero_grads(params)
        if self.consecutive_skipped >= self.max_consecutive_skipped:
            raise NonFiniteLossError(
                f"training stopped: {self.consecutive_skipped} steps in a row had a non-finite "
                "loss or gradients; lower the learning rate, enable gradient clipping, or check "
                "the data for NaN/Inf"
            )
        return loss if finite else math.nan

    def _check_registered(self, params: set) -> None:
        """A subclass's check of the parameters a step trains (none here)."""
