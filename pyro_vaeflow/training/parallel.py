r"""SVI on many processes: Pyro's ``ELBOModule`` driven by ``DistributedDataParallel``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro.infer import ELBO
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pyro_vaeflow.distributed import all_sum, world_size
from pyro_vaeflow.training.guarded_svi import GuardedSVI

__all__ = ["DataParallelSVI"]


class _Program(nn.Module):
    """A Pyro model or guide (a function or method) as a module that owns ``parameters``'s
    parameters, the form Pyro's ``ELBO.__call__`` takes."""

    def __init__(self, program: Callable, parameters: nn.Module) -> None:
        super().__init__()
        self.program, self.parameters_of = program, parameters

    def forward(self, *args, **kwargs):
        return self.program(*args, **kwargs)


class DataParallelSVI(GuardedSVI):
    r""":class:`GuardedSVI` over every process of a :mod:`torch.distributed` group.

    Each rank calls :meth:`step` with its share of the global batch
    (:func:`~pyro_vaeflow.distributed.shard`), and its model puts that share in its data plate
    (``pyro.plate("data", len(x))``). The loss is Pyro's ELBO of the model and guide, as
    ``loss(model, guide)`` (Pyro's :class:`~pyro.infer.elbo.ELBOModule`, the recipe of Pyro's
    ``examples/svi_lightning.py``), driven by
    :class:`~torch.nn.parallel.DistributedDataParallel`, which starts every rank from rank 0's
    parameters and all-reduces the gradients. Since the ELBO of a batch is the sum over its
    data, the rank's loss is multiplied by the number of processes :math:`W` before the backward
    pass, so that DDP's average is the sum:

    .. math:: \nabla \mathcal{L}_\text{global} = \sum_r \nabla \mathcal{L}_r
              = \frac{1}{W} \sum_r \nabla (W \mathcal{L}_r),

    the gradient of the global batch's loss as one process would take it; a datum's ELBO counts
    once. :meth:`step` returns the global batch's loss. The ranks' losses are summed before the
    backward pass and the gradients after it, so a non-finite loss or gradient on any rank skips
    the step on every rank. Each rank
    draws its own latents (seed each rank's generator differently,
    :func:`~pyro_vaeflow.distributed.rank_seed`). Without a process group it is
    :class:`GuardedSVI`, so the same loop runs in one process and under ``torchrun``.

    Args:
        model: the Pyro model.
        guide: the Pyro guide.
        optim: a Pyro optimiser.
        loss: an ELBO, e.g. :class:`~pyro.infer.Trace_ELBO`.
        parameters: the module that owns every parameter the model and guide train (those with
            ``requires_grad`` when this object is made).
        max_consecutive_skipped: how many bad steps in a row are tolerated.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        optim,
        loss: ELBO,
        parameters: nn.Module,
        max_consecutive_skipped: int = 20,
    ) -> None:
        super().__init__(model, guide, optim, loss, max_consecutive_skipped)
        self.loss_function, self.ddp = loss, None
        if world_size() == 1:  # one process: GuardedSVI as it is
            return
        elbo_module = loss(_Program(model, parameters), _Program(guide, parameters))
        device = next(parameters.parameters()).device
        self.ddp = DistributedDataParallel(
            elbo_module, device_ids=[device] if device.type == "cuda" else None
        )
        self._reduced = {id(p) for p in parameters.parameters() if p.requires_grad}
        # Pyro's SVI keeps the ELBO's own functions as attributes; the methods below take
        # their place.
        del self.loss_and_grads, self.loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The global batch's loss, and this rank's backward pass through DDP unless the loss
        is not finite on some rank (a distribution that refused a NaN parameter counts as
        one): then no rank takes it, and the step is skipped everywhere."""
        try:
            loss = self.ddp(*args, **kwargs)
        except ValueError as error:
            if "found invalid values" not in str(error):
                raise
            loss = None
        local = torch.tensor(math.nan) if loss is None else loss.detach().cpu()
        total = float(all_sum(local.double()))  # one decision for every rank
        if math.isfinite(total):
            (world_size() * loss).backward()
        return total

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The global batch's loss, without gradients (what ``evaluate_loss`` returns)."""
        with torch.no_grad():
            loss = self.loss_function.differentiable_loss(model, guide, *args, **kwargs)
        return float(all_sum(loss.detach().cpu().double()))

    def _check_registered(self, params: set) -> None:
        """Refuse a parameter that DDP does not reduce: the ranks would drift apart."""
        if self.ddp is not None and any(id(p) not in self._reduced for p in params):
            raise ValueError(
                "the model or guide trains a parameter that is not in the module given as "
                "`parameters` (a pyro.param of its own?), so the processes would train it "
                "apart: make it part of that module"
            )
