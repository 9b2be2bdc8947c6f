r"""The base class of every flow in :mod:`pyro_vaeflow`, and their composition.

A :class:`Flow` maps *base → data*, as :class:`torch.distributions.Transform` and Pyro's
:class:`~pyro.distributions.TransformedDistribution` expect. A subclass implements two methods
that return the image of their input together with the log-determinant
:math:`\log|\det \partial x / \partial u|` of the *base → data* map at that point:

* :meth:`Flow.forward_and_log_det` (base :math:`u` → data :math:`x`);
* :meth:`Flow.inverse_and_log_det` (data :math:`x` → base :math:`u`).

The torch methods ``_call``, ``_inverse`` and ``log_abs_det_jacobian`` are derived from them,
so each log-determinant is computed once, in the same pass as the value.

The cache (``cache_size=1``) remembers the last pair :math:`(u, x)` and its log-determinant.
Unlike torch's identity-keyed cache it never hands back a stale value: an entry is only reused
while every parameter and buffer of the flow still has the version it had when the entry was
made (an optimiser step changes it), while the autograd mode is the same, while the cached
input and output have not been modified in place, and while no backward pass has gone through
the entry (which frees its graph). Pyro issue #2564 is the bug this avoids.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence

import torch
import torch.utils.checkpoint
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import constraints

__all__ = ["ComposeFlow", "Flow"]


class _CacheEntry:
    """Values computed together, valid while the owner's parameters keep their versions."""

    __slots__ = ("__weakref__", "stale", "stamp", "values")

    def __init__(self, stamp: tuple, values: tuple) -> None:
        self.stamp = stamp
        self.values = values
        self.stale = False
        ref = weakref.ref(self)
        for value in values:
            if isinstance(value, Tensor) and value.grad_fn is not None:
                value.register_hook(_mark_stale(ref))


def _mark_stale(ref: weakref.ref):
    def hook(grad: Tensor) -> None:
        entry = ref()
        if entry is not None:
            entry.stale = True

    return hook


def _version(tensor: Tensor) -> int | None:
    """The in-place version counter of ``tensor`` (``None`` for inference-mode tensors)."""
    return None if tensor.is_inference() else tensor._version


def state_stamp(module: nn.Module) -> tuple:
    """A key that changes whenever a parameter or buffer of ``module`` is modified.

    It combines each tensor's in-place version counter and storage address with the autograd
    mode, so values computed under ``torch.no_grad()`` are not reused when gradients are needed.
    """
    tensors: Iterable[Tensor] = (*module.parameters(), *module.buffers())
    return (
        torch.is_grad_enabled(),
        tuple((t._version, t.data_ptr(), t.requires_grad) for t in tensors),
    )


class VersionedCache:
    """A single-entry cache for values derived from the parameters of ``owner``.

    Args:
        owner: the module whose parameters and buffers the values depend on.
    """

    def __init__(self, owner: nn.Module) -> None:
        self._owner = weakref.ref(owner)
        self._entry: _CacheEntry | None = None

    def get(self) -> tuple | None:
        """The cached values, or ``None`` when there are none or they are stale."""
        entry, owner = self._entry, self._owner()
        if entry is None or owner is None or entry.stale or entry.stamp != state_stamp(owner):
            return None
        return entry.values

    def put(self, *values) -> None:
        """Remember ``values`` with the owner's current state."""
        self._entry = _CacheEntry(state_stamp(self._owner()), values)

    def clear(self) -> None:
        """Forget the cached values."""
        self._entry = None

    def __getstate__(self) -> dict:
        return {"owner": self._owner()}

    def __setstate__(self, state: dict) -> None:
        self._owner = weakref.ref(state["owner"])
        self._entry = None


class Flow(TransformModule):
    r"""A bijection base → data with a cached, once-computed log-determinant.

    Subclasses set ``domain``/``codomain`` and implement :meth:`forward_and_log_det` and
    :meth:`inverse_and_log_det`; shape-changing flows also override ``forward_shape`` and
    ``inverse_shape``.

    Args:
        cache_size: 1 to remember the last ``(u, x)`` pair and its log-determinant, 0 not to.
    """

    bijective = True

    def __init__(self, cache_size: int = 1) -> None:
        if cache_size not in (0, 1):
            raise ValueError(f"cache_size must be 0 or 1, got {cache_size}")
        super().__init__(cache_size=cache_size)
        self._pair_cache = VersionedCache(self)

    def forward_and_log_det(self, u: Tensor) -> tuple[Tensor, Tensor]:
        r"""Map base ``u`` to data ``x``; return ``x`` and :math:`\log|\det \partial x/\partial u|`.

        The log-determinant is summed over the event dimensions (shape: the batch shape).
        """
        raise NotImplementedError

    def inverse_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Map data ``x`` to base ``u``; return ``u`` and :math:`\log|\det \partial x/\partial u|`.

        The log-determinant is that of the base → data map at ``u``, as in
        :meth:`forward_and_log_det`.
        """
        raise NotImplementedError

    def _cached(self, u: Tensor | None = None, x: Tensor | None = None) -> tuple | None:
        """The cached ``(u, x, log_det)`` if it holds these very tensors, unmodified since."""
        cached = self._pair_cache.get() if self._cache_size else None
        if cached is None:
            return None
        for given, stored, version in ((u, cached[0], cached[3]), (x, cached[1], cached[4])):
            if given is not None and (given is not stored or _version(given) != version):
                return None
        return cached

    def _remember(self, u: Tensor, x: Tensor, log_det: Tensor) -> None:
        if self._cache_size:
            self._pair_cache.put(u, x, log_det, _version(u), _version(x))

    def __call__(self, u: Tensor) -> Tensor:
        cached = self._cached(u=u)
        if cached is not None:
            return cached[1]
        x, log_det = self.forward_and_log_det(u)
        self._remember(u, x, log_det)
        return x

    def _inv_call(self, x: Tensor) -> Tensor:
        cached = self._cached(x=x)
        if cached is not None:
            return cached[0]
        u, log_det = self.inverse_and_log_det(x)
        self._remember(u, x, log_det)
        return u

    def _call(self, u: Tensor) -> Tensor:
        return self.forward_and_log_det(u)[0]

    def _inverse(self, x: Tensor) -> Tensor:
        return self.inverse_and_log_det(x)[0]

    def log_abs_det_jacobian(self, u: Tensor, x: Tensor) -> Tensor:
        r""":math:`\log|\det \partial x/\partial u|`, summed over the event dimensions."""
        cached = self._cached(u=u, x=x)
        if cached is not None:
            return cached[2]
        x_new, log_det = self.forward_and_log_det(u)
        self._remember(u, x_new, log_det)
        return log_det

    def clear_cache(self) -> None:
        """Drop the cached pair (it is never reused when stale, so this only frees memory)."""
        self._pair_cache.clear()

    def extra_repr(self) -> str:
        return "" if self._cache_size else "cache_size=0"


class ComposeFlow(Flow):
    r"""The composition :math:`f_K \circ \dots \circ f_1` of flows, applied base → data.

    .. math:: \log\left|\det \frac{\partial x}{\partial u}\right|
              = \sum_{k=1}^K \log\left|\det \frac{\partial h_k}{\partial h_{k-1}}\right|,
       \qquad h_0 = u,\ h_K = x.

    Each part's log-determinant is computed in the same pass as its value, in either direction.
    The parts' own caches are bypassed (their ``forward_and_log_det``/``inverse_and_log_det``
    are called); only the composition caches its last ``(u, x)`` pair.

    **Gradient checkpointing.** With ``checkpoint=True``, while gradients are being recorded
    (:func:`torch.is_grad_enabled`), every part that has parameters runs under
    :func:`torch.utils.checkpoint.checkpoint` (``use_reentrant=False``): the autograd graph keeps
    only each part's input, and the part's internals (a coupling's conditioner activations, by
    far the largest tensors of a Glow step) are recomputed during the backward pass. Memory for
    activations then grows with the number of parts times the size of one image tensor rather
    than with the conditioners' widths, for about one extra forward pass of compute. Values, log
    determinants and gradients are unchanged. Nothing changes under ``torch.no_grad()`` or in
    inference mode, and a part whose data-dependent initialisation is still pending (an
    :class:`~pyro_vaeflow.transforms.ActNorm2d` whose ``initialized`` buffer is false) runs
    without checkpointing on that call, so it initialises exactly once, on the real forward
    pass.

    Args:
        parts: the flows, in base → data order; they must share one event dimension.
        cache_size: see :class:`Flow`.
        checkpoint: recompute the parts' internals in the backward pass instead of storing them.

    Example:
        >>> from pyro_vaeflow.transforms import ActNorm2d, ComposeFlow, InvConv1x1
        >>> flow = ComposeFlow([InvConv1x1(2), ActNorm2d(2, init="identity")])
        >>> x = flow(torch.randn(5, 2, 4, 4))
        >>> flow.log_abs_det_jacobian(torch.zeros(5, 2, 4, 4), x).shape
        torch.Size([5])
    """

    def __init__(
        self, parts: Sequence[Flow], cache_size: int = 1, checkpoint: bool = False
    ) -> None:
        super().__init__(cache_size=cache_size)
        self.checkpoint = bool(checkpoint)
        if len(parts) == 0:
            raise ValueError("ComposeFlow needs at least one part")
        for part in parts:
            if not isinstance(part, Flow):
                raise TypeError(f"parts must be pyro_vaeflow Flows, got {type(part).__name__}")
        event_dims = {part.domain.event_dim for part in parts}
        if len(event_dims) != 1:
            raise ValueError(f"all parts must share one event dimension, got {sorted(event_dims)}")
        self.parts = nn.ModuleList(parts)
        event_dim = event_dims.pop()
        self.domain = constraints.independent(constraints.real, event_dim)
        self.codomain = constraints.independent(constraints.real, event_dim)

    def _checkpointed(self, part: Flow) -> bool:
        """Whether ``part`` runs under gradient checkpointing on this call."""
        if not (self.checkpoint and torch.is_grad_enabled()):
            return False
        if next(part.parameters(), None) is None:
            return False
        # A pending data-dependent initialisation runs on the real forward pass, never inside a
        # checkpointed region, whose recomputation would then see different parameters.
        return all(bool(getattr(module, "initialized", True)) for module in part.modules())

    def _run_part(self, part: Flow, method: str, h: Tensor) -> tuple[Tensor, Tensor]:
        function = getattr(part, method)
        if self._checkpointed(part):
            return torch.utils.checkpoint.checkpoint(function, h, use_reentrant=False)
        return function(h)

    def forward_and_log_det(self, u: Tensor) -> tuple[Tensor, Tensor]:
        total = 0.0
        for part in self.parts:
            u, log_det = self._run_part(part, "forward_and_log_det", u)
            total = total + log_det
        return u, total

    def inverse_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = 0.0
        for part in reversed(self.parts):
            x, log_det = self._run_part(part, "inverse_and_log_det", x)
            total = total + log_det
        return x, total

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        for part in self.parts:
            shape = part.forward_shape(shape)
        return shape

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        for part in reversed(self.parts):
            shape = part.inverse_shape(shape)
        return shape

    def extra_repr(self) -> str:
        options = [super().extra_repr(), "checkpoint=True" if self.checkpoint else ""]
        return ", ".join(option for option in options if option)
