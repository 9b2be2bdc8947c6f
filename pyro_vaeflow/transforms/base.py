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
made (an optimiser step changes it), while the autograd mode and the JIT tracing state are the
same, while the cached input and output have not been modified in place, and while no backward
pass has gone through the entry (which frees its graph). Pyro issue #2564 is the bug this
avoids; the tracing state keeps Pyro's JIT ELBOs from baking an eager tensor into a trace.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterable, Sequence

import torch
import torch.utils.checkpoint
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import Transform, constraints
from torch.distributions.utils import _sum_rightmost

__all__ = ["ComposeFlow", "Flow", "TransformFlow"]

if torch.__version__.startswith("2.4."):
    # torch 2.4's checkpoint recomputes under torch.cpu.amp.autocast, which torch 2.4 deprecates:
    # a FutureWarning from inside the backward pass, where no caller can catch it (torch 2.5
    # calls torch.amp.autocast). The test suite's `filterwarnings` in setup.cfg has its twin.
    warnings.filterwarnings(
        "ignore",
        r"`torch\.cpu\.amp\.autocast\(args\.\.\.\)` is deprecated",
        FutureWarning,
        r"torch\.utils\.checkpoint",
    )


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
    mode, so values computed under ``torch.no_grad()`` are not reused when gradients are needed,
    and with the JIT tracing state (``None`` outside a trace), so a value computed outside a
    :func:`torch.jit.trace` (or in another trace) never enters one: Pyro's ``JitTrace_ELBO``
    runs the model once eagerly, then traces it with the same tensors.
    """
    tensors: Iterable[Tensor] = (*module.parameters(), *module.buffers())
    return (
        torch.is_grad_enabled(),
        torch._C._get_tracing_state(),
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

    def expected_shape(self, shape: torch.Size) -> torch.Size:
        """The base event shape this flow takes in place of ``shape``: ``shape`` itself when it
        fits, else ``shape`` with what the flow fixes (its channels, its dimension) put right.

        :class:`~pyro_vaeflow.distributions.FlowNormal` uses it to name a mismatch in the
        user's own shapes rather than in a layer's internal (squeezed) ones.
        """
        return torch.Size(shape)

    def clear_cache(self) -> None:
        """Drop the cached pair (it is never reused when stale, so this only frees memory)."""
        self._pair_cache.clear()

    def extra_repr(self) -> str:
        return "" if self._cache_size else "cache_size=0"


class TransformFlow(Flow):
    r"""Any torch or Pyro :class:`~torch.distributions.Transform` as a :class:`Flow`.

    The value comes from the transform, the log-determinant from its
    ``log_abs_det_jacobian`` (summed over the transform's own event dimensions, as torch
    does), so Pyro's ``spline_coupling``, ``affine_autoregressive`` or a
    :class:`~torch.distributions.transforms.SigmoidTransform` can sit in a
    :class:`ComposeFlow` beside the image flows. The transform's own caches are emptied around
    each call, so they never return a stale pair; this wrapper's ``(u, x)`` cache is the
    versioned one of :class:`Flow`.

    Args:
        transform: the bijection, base → data.
        cache_size: see :class:`Flow`.

    Example:
        >>> from torch.distributions.transforms import SigmoidTransform
        >>> flow = TransformFlow(SigmoidTransform())
        >>> x, log_det = flow.forward_and_log_det(torch.zeros(2, 3))
        >>> x, log_det.shape  # the sigmoid's own event dimension is 0
        (tensor([[0.5000, 0.5000, 0.5000],
                [0.5000, 0.5000, 0.5000]]), torch.Size([2, 3]))
    """

    def __init__(self, transform: Transform, cache_size: int = 1) -> None:
        super().__init__(cache_size=cache_size)
        if not isinstance(transform, Transform):
            raise TypeError(
                f"TransformFlow wraps a torch Transform, got {type(transform).__name__}"
            )
        if not transform.bijective:
            raise ValueError(f"{type(transform).__name__} is not bijective: it cannot be a flow")
        self.transform = transform
        self.domain, self.codomain = transform.domain, transform.codomain

    @property
    def sign(self) -> int:
        return self.transform.sign

    def _forget(self) -> None:
        # torch's identity-keyed cache (``_cached_x_y``) could hand back a pair computed with
        # older parameters (Pyro issue #2564), and Pyro's transforms keep the log-determinant of
        # that pair beside it (``_cache_log_detJ``, ``_cached_log_scale``, ...), which they read
        # in ``log_abs_det_jacobian``. All are emptied before a call, so nothing stale is
        # reused, and after it, so no graph is kept (and the flow can be deep-copied).
        inner = self.transform.modules() if isinstance(self.transform, nn.Module) else ()
        for transform in [self.transform, *inner]:  # a coupling's splines have caches too
            for name in [name for name in vars(transform) if name.startswith("_cache")]:
                if name != "_cache_size":
                    setattr(transform, name, (None, None) if name == "_cached_x_y" else None)

    def forward_and_log_det(self, u: Tensor) -> tuple[Tensor, Tensor]:
        self._forget()
        x = self.transform(u)
        log_det = self.transform.log_abs_det_jacobian(u, x)
        self._forget()
        return x, log_det

    def inverse_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._forget()
        u = self.transform.inv(x)
        log_det = self.transform.log_abs_det_jacobian(u, x)
        self._forget()
        return u, log_det

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        return torch.Size(self.transform.forward_shape(shape))

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        return torch.Size(self.transform.inverse_shape(shape))

    def extra_repr(self) -> str:
        return ", ".join(
            option for option in (repr(self.transform), super().extra_repr()) if option
        )


def as_flow(part: Transform) -> Flow:
    """``part`` itself if it is a :class:`Flow`, else ``part`` wrapped in :class:`TransformFlow`;
    a conditional transform or anything else raises a ``TypeError``."""
    if isinstance(part, Flow):
        return part
    if isinstance(part, Transform):
        return TransformFlow(part)
    hint = (
        " (a conditional transform: call .condition(context) first)"
        if hasattr(part, "condition")
        else ""
    )
    raise TypeError(f"a flow must be a torch Transform, got {type(part).__name__}{hint}")


def _composed_constraints(parts: Sequence[Flow]) -> tuple:
    """The domain and codomain of the composition, with the largest event dimension of its
    parts (as :class:`torch.distributions.transforms.ComposeTransform` computes them)."""
    domain_dim = parts[-1].codomain.event_dim
    for part in reversed(parts):
        domain_dim = max(
            domain_dim + part.domain.event_dim - part.codomain.event_dim, part.domain.event_dim
        )
    codomain_dim = parts[0].domain.event_dim
    for part in parts:
        codomain_dim = max(
            codomain_dim + part.codomain.event_dim - part.domain.event_dim, part.codomain.event_dim
        )
    domain, codomain = parts[0].domain, parts[-1].codomain
    if domain_dim > domain.event_dim:
        domain = constraints.independent(domain, domain_dim - domain.event_dim)
    if codomain_dim > codomain.event_dim:
        codomain = constraints.independent(codomain, codomain_dim - codomain.event_dim)
    return domain, codomain


class ComposeFlow(Flow):
    r"""The composition :math:`f_K \circ \dots \circ f_1` of flows, applied base → data.

    .. math:: \log\left|\det \frac{\partial x}{\partial u}\right|
              = \sum_{k=1}^K \log\left|\det \frac{\partial h_k}{\partial h_{k-1}}\right|,
       \qquad h_0 = u,\ h_K = x.

    Each part's log-determinant is computed in the same pass as its value, in either direction.
    The parts' own caches are bypassed (their ``forward_and_log_det``/``inverse_and_log_det``
    are called); only the composition caches its last ``(u, x)`` pair.

    A part may be any torch or Pyro :class:`~torch.distributions.Transform` (it is wrapped in
    :class:`TransformFlow`), on any event dimension: as in torch's ``ComposeTransform``, the
    composition's event dimension is the largest of its parts', and each part's log-determinant
    is summed over the event dimensions it leaves to the batch. Its domain is its first part's,
    its codomain its last part's (a sigmoid at the end makes it the unit interval).

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
        parts: the flows or transforms, in base → data order.
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
        self, parts: Sequence[Transform], cache_size: int = 1, checkpoint: bool = False
    ) -> None:
        super().__init__(cache_size=cache_size)
        self.checkpoint = bool(checkpoint)
        if len(parts) == 0:
            raise ValueError("ComposeFlow needs at least one part")
        self.parts = nn.ModuleList([as_flow(part) for part in parts])
        self.domain, self.codomain = _composed_constraints(self.parts)

    def _checkpointed(self, part: Flow) -> bool:
        """Whether ``part`` runs under gradient checkpointing on this call."""
        if not (self.checkpoint and torch.is_grad_enabled()):
            return False
        if next(part.parameters(), None) is None:
            return False
        # A pending data-dependent initialisation runs on the real forward pass, never inside a
        # checkpointed region, whose recomputation would then see different parameters.
        return not any(
            module.pending_initialization()
            for module in part.modules()
            if hasattr(module, "pending_initialization")
        )

    def _run_part(self, part: Flow, method: str, h: Tensor) -> tuple[Tensor, Tensor]:
        function = getattr(part, method)
        if self._checkpointed(part):
            return torch.utils.checkpoint.checkpoint(function, h, use_reentrant=False)
        return function(h)

    def forward_and_log_det(self, u: Tensor) -> tuple[Tensor, Tensor]:
        total, event_dim = 0.0, self.domain.event_dim
        for part in self.parts:
            u, log_det = self._run_part(part, "forward_and_log_det", u)
            total = total + _sum_rightmost(log_det, event_dim - part.domain.event_dim)
            event_dim += part.codomain.event_dim - part.domain.event_dim
        return u, total

    def inverse_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total, event_dim = 0.0, self.codomain.event_dim
        for part in reversed(self.parts):
            x, log_det = self._run_part(part, "inverse_and_log_det", x)
            total = total + _sum_rightmost(log_det, event_dim - part.codomain.event_dim)
            event_dim += part.domain.event_dim - part.codomain.event_dim
        return x, total

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        for part in self.parts:
            shape = part.forward_shape(shape)
        return shape

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        for part in reversed(self.parts):
            shape = part.inverse_shape(shape)
        return shape

    def expected_shape(self, shape: torch.Size) -> torch.Size:
        """``shape`` put right at the first part that does not take it, mapped back through
        the parts before (so a squeezed layer's channels are named as the input's)."""
        inner = torch.Size(shape)
        for index, part in enumerate(self.parts):
            expected = part.expected_shape(inner)
            if expected != inner:
                for earlier in reversed(self.parts[:index]):
                    expected = earlier.inverse_shape(expected)
                return torch.Size(expected)
            inner = part.forward_shape(inner)
        return torch.Size(shape)

    def extra_repr(self) -> str:
        options = [super().extra_repr(), "checkpoint=True" if self.checkpoint else ""]
        return ", ".join(option for option in options if option)
