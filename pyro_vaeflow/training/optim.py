r"""``MultiTensorAdam``: Pyro's Adam as one ``torch.optim.Adam`` over all the parameters."""

from __future__ import annotations

from collections.abc import Iterable

import pyro
import torch
from pyro.optim import PyroOptim
from torch import Tensor

__all__ = ["MultiTensorAdam"]


class MultiTensorAdam(PyroOptim):
    r"""Adam for :class:`~pyro.infer.SVI` that steps every parameter with one torch optimiser.

    :func:`pyro.optim.Adam` keeps one ``torch.optim.Adam`` (and one gradient clipper) per
    parameter tensor and calls each in turn, a fixed cost per tensor and step that matters
    for models of many small tensors (a ``VAEFlow`` of the ``cpu`` preset has 180; see
    "Pyro's overhead" in ``docs/benchmarks.md``). This optimiser makes the same updates,

    .. math:: m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad
              v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad
              \theta \leftarrow \theta - \text{lr}\,
              \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon},

    with one multi-tensor ``torch.optim.Adam`` over all the parameters of a step, and clips each
    parameter's gradient as Pyro's ``clip_args`` do (``clip_norm``: rescale a gradient whose
    norm exceeds it; ``clip_value``: clamp its entries), from one stacked vector of norms.

    Only the parameters passed to a call are stepped; a call with another set of parameters
    rebuilds the torch optimiser, carrying over the state of those seen before. A parameter
    is known by the name it had in Pyro's param store when it was first stepped.
    :meth:`get_state` and :meth:`set_state` use the format of Pyro's optimisers (a
    ``state_dict`` of a one-parameter ``torch.optim.Adam`` per parameter name), so
    checkpoints of either load into the other; the hyper-parameters always come from the
    constructor (and :meth:`set_lr`), not from a loaded state.

    Args:
        lr: the learning rate.
        betas: :math:`(\beta_1, \beta_2)`.
        eps: :math:`\epsilon`.
        weight_decay: L2 penalty, as ``torch.optim.Adam``'s.
        clip_norm: the largest gradient norm of each parameter (``None``: no clipping).
        clip_value: the largest absolute gradient entry (``None``: no clamping).
        foreach: use torch's multi-tensor kernels, also on the CPU, where torch's default is a
            loop over the tensors.

    Example:
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> import pyro.distributions as dist
        >>> def model(x):
        ...     loc = pyro.param("loc", torch.tensor(0.0))
        ...     pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
        >>> with pyro.get_param_store().scope():
        ...     svi = SVI(model, lambda x: None, MultiTensorAdam(lr=0.1), Trace_ELBO())
        ...     for _ in range(200):
        ...         _ = svi.step(torch.tensor(3.0))
        ...     round(pyro.param("loc").item(), 1)
        3.0
    """

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        foreach: bool = True,
    ) -> None:
        for name, value in (("clip_norm", clip_norm), ("clip_value", clip_value)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value}")
        args = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        args["foreach"] = foreach
        clip = {"clip_norm": clip_norm, "clip_value": clip_value}
        super().__init__(torch.optim.Adam, args, {k: v for k, v in clip.items() if v})
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.optimizer: torch.optim.Adam | None = None
        self._params: frozenset[Tensor] = frozenset()
        self._retired: dict[Tensor, dict] = {}
        self._names: dict[Tensor, str] = {}

    def set_lr(self, lr: float) -> None:
        """Set the learning rate of the next steps."""
        self.pt_optim_args["lr"] = lr
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def __call__(self, params: Iterable[Tensor], *args, **kwargs) -> None:
        """One Adam step of ``params`` (after clipping their gradients)."""
        params = list(params)
        if not params:  # nothing to train (as Pyro's optimisers, do nothing)
            return
        if self.optimizer is None or frozenset(params) != self._params:
            self._rebuild(params)
        with_grads = [p for p in params if p.grad is not None]
        grads = [p.grad for p in with_grads]
        if grads and self.clip_norm is not None:
            norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])
            # torch.nn.utils.clip_grad_norm_'s coefficient, for each gradient at once
            scale = (self.clip_norm / (norms + 1e-6)).clamp(max=1.0)
            for index in (scale < 1.0).nonzero().flatten().tolist():
                grads[index].mul_(scale[index])
        if grads and self.clip_value is not None:
            torch.nn.utils.clip_grad_value_(with_grads, self.clip_value)
        self.optimizer.step(*args, **kwargs)

    def _rebuild(self, params: list[Tensor]) -> None:
        """A torch optimiser over ``params``, with the state known for each of them."""
        if self.optimizer is not None:
            self._retired.update(self.optimizer.state)
        self.optimizer = torch.optim.Adam(params, **self.pt_optim_args)
        for p in params:
            self._names.setdefault(p, pyro.get_param_store().param_name(p))
            if p in self._retired:
                self.optimizer.state[p] = self._retired.pop(p)
                continue
            saved = self._state_waiting_to_be_consumed.pop(self._names[p], None)
            if saved is not None:
                # torch's own loading moves and casts the saved tensors to the parameter's
                single = torch.optim.Adam([p], **self.pt_optim_args)
                single.load_state_dict(saved)
                if p in single.state:
                    self.optimizer.state[p] = single.state[p]
        self._params = frozenset(params)

    def get_state(self) -> dict:
        """Parameter name → the ``state_dict`` of a one-parameter ``torch.optim.Adam``."""
        states = dict(self._retired)
        if self.optimizer is not None:
            states.update({p: self.optimizer.state.get(p, {}) for p in self._params})
        group = dict(self.pt_optim_args)
        if self.optimizer is not None:
            group = {k: v for k, v in self.optimizer.param_groups[0].items() if k != "params"}
        return {
            self._names[p]: {
                "state": {0: dict(state)} if state else {},
                "param_groups": [{**group, "params": [0]}],
            }
            for p, state in states.items()
        }
