r"""Normal distributions pushed through a flow, with a sampling temperature."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pyro.distributions import TorchDistribution
from pyro.distributions.conditional import ConditionalTransform
from torch import Tensor
from torch.distributions import Distribution, Transform, constraints
from torch.distributions.utils import _sum_rightmost, broadcast_all

from pyro_vaeflow.distributions._checks import (
    check_fits,
    checked_temperature,
    conditioned,
    flow_tensor,
    no_closed_form,
)

__all__ = ["FlowDecoder", "FlowNormal", "FlowPrior"]


class FlowNormal(TorchDistribution):
    r"""A diagonal Normal pushed through a flow: :math:`x = f(\bar x)`.

    .. math:: \bar x \sim \mathcal{N}(\mu, (T\sigma)^2), \qquad x = f(\bar x), \qquad
              \log p(x) = \log \mathcal{N}\!\left(f^{-1}(x); \mu, \sigma^2\right)
              + \log\left|\det \frac{\partial f^{-1}(x)}{\partial x}\right| .

    The temperature :math:`T` only affects sampling; :meth:`log_prob` is the density at
    :math:`T = 1`. The last ``event_dim`` dimensions of ``loc`` form the base event; the others
    are batch dimensions. The support is the flow's codomain.

    The mean, variance, entropy and CDF have no closed form (:math:`\mathbb{E}[f(\bar x)] \ne
    f(\mu)` for a nonlinear :math:`f`; :math:`f(\mu)` is what :math:`T = 0` draws): they raise a
    ``NotImplementedError`` that says so, and
    :func:`~pyro_vaeflow.distributions.sample_moments` estimates the mean and variance.

    With validation on, construction checks that ``loc``'s event fits the flow (its channels or
    its size), and that ``loc``, ``scale`` and the flow's parameters share one dtype and device;
    :meth:`log_prob` checks the value's shape, finiteness and support.

    Args:
        loc: the base mean :math:`\mu`.
        scale: the base standard deviation :math:`\sigma > 0`.
        flow: a bijection base → data on ``event_dim`` dimensions, e.g. a
            :class:`~pyro_vaeflow.transforms.Flow`, or a Pyro ``ConditionalTransform`` (then
            ``context`` is required and the flow is ``flow.condition(context)``).
        event_dim: the number of event dimensions.
        temperature: the sampling temperature :math:`T \ge 0`, a number or a tensor that
            broadcasts against the batch shape (one temperature per image, say).
        validate_args: as for any Pyro distribution.
        context: what a conditional flow is conditioned on (a label, or :math:`z`).
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "loc": constraints.real,
        "scale": constraints.positive,
    }
    has_rsample = True

    def __init__(
        self,
        loc: Tensor,
        scale: Tensor | float,
        flow: Transform | ConditionalTransform,
        event_dim: int,
        temperature: float | Tensor = 1.0,
        validate_args: bool | None = None,
        *,
        context: Tensor | None = None,
    ) -> None:
        name = type(self).__name__
        flow = conditioned(name, flow, context)
        if flow.domain.event_dim > event_dim:
            raise ValueError(
                f"{name} needs a flow on at most {event_dim} event dimensions, "
                f"got one on {flow.domain.event_dim}"
            )
        self.loc, self.scale = broadcast_all(loc, scale)
        if self.loc.dim() < event_dim:
            raise ValueError(
                f"{name} needs loc with at least {event_dim} dimensions, "
                f"got shape {tuple(self.loc.shape)}"
            )
        split = self.loc.dim() - event_dim
        self.flow, self._event_dim = flow, event_dim
        self.base_event_shape = self.loc.shape[split:]
        validate = Distribution._validate_args if validate_args is None else validate_args
        if validate:
            check_fits(name, self.loc, self.scale, flow, self.base_event_shape)
        self.temperature = checked_temperature(name, temperature, self.loc.shape[:split])
        event_shape = torch.Size(flow.forward_shape(self.base_event_shape))
        super().__init__(self.loc.shape[:split], event_shape, validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        """The flow's codomain over the event dimensions (the reals for a Glow; the unit
        interval with a sigmoid at the end of the flow)."""
        codomain = self.flow.codomain
        extra = len(self.event_shape) - codomain.event_dim
        return constraints.independent(codomain, extra) if extra > 0 else codomain

    @property
    def mean(self) -> Tensor:
        raise NotImplementedError(no_closed_form(self, "mean"))

    @property
    def variance(self) -> Tensor:
        raise NotImplementedError(no_closed_form(self, "variance"))

    @property
    def stddev(self) -> Tensor:
        raise NotImplementedError(no_closed_form(self, "stddev"))

    def entropy(self) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__}.entropy has no closed form: H[x] = H[x̄] + "
            "E[log|det ∂f/∂x̄|] needs the flow's log-determinant averaged over samples; "
            "estimate it as -d.log_prob(d.sample((n,))).mean(0)"
        )

    def cdf(self, value: Tensor) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} is a density over whole images (or vectors), which have no "
            "CDF in torch's sense; compare log_prob values, or estimate P(x ∈ A) from samples"
        )

    def icdf(self, value: Tensor) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} has no inverse CDF: draw samples with sample() or rsample()"
        )

    def expand(self, batch_shape, _instance=None) -> FlowNormal:
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        shape = batch_shape + self.base_event_shape
        new.loc, new.scale = self.loc.expand(shape), self.scale.expand(shape)
        new.flow, new.temperature, new._event_dim = self.flow, self.temperature, self._event_dim
        new.base_event_shape = self.base_event_shape
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))[: -len(self.event_shape) or None]
        noise = torch.randn(
            shape + self.base_event_shape, dtype=self.loc.dtype, device=self.loc.device
        )
        temperature = self.temperature
        if isinstance(temperature, Tensor):  # one per batch element: over the base event
            temperature = temperature.reshape(temperature.shape + (1,) * len(self.base_event_shape))
        return self.flow(self.loc + temperature * self.scale * noise)

    def log_prob(self, value: Tensor) -> Tensor:
        self._check_event_shape(value)  # always: else a flow names its internal shapes
        if self._validate_args:
            self._validate_sample(value)
        base = self.flow.inv(value)
        log_det = self.flow.log_abs_det_jacobian(base, value)
        log_det = _sum_rightmost(log_det, self._event_dim - self.flow.codomain.event_dim)
        # torch's Normal.log_prob, operation for operation: with an identity flow (the Glow layer
        # at the start of phase 2) this gives the plain Gaussian decoder's value exactly.
        log_density = (
            -((base - self.loc) ** 2) / (2 * self.scale**2)
            - self.scale.log()
            - math.log(math.sqrt(2 * math.pi))
        )
        return _sum_rightmost(log_density, self._event_dim) - log_det

    def _check_event_shape(self, value: Tensor) -> None:
        name = type(self).__name__
        if not isinstance(value, Tensor):
            raise ValueError(f"{name}.log_prob expects a tensor, got {type(value).__name__}")
        n = len(self.event_shape)
        if value.dim() < n or value.shape[value.dim() - n :] != self.event_shape:
            expected = ", ".join(map(str, self.event_shape))
            raise ValueError(
                f"{name}.log_prob expects values of shape [..., {expected}] "
                f"(event shape {tuple(self.event_shape)}), got {tuple(value.shape)}"
            )

    def _validate_sample(self, value: Tensor) -> None:
        name = type(self).__name__
        n = len(self.event_shape)
        try:
            torch.broadcast_shapes(value.shape[: value.dim() - n], self.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"{name}.log_prob: the batch shape {tuple(value.shape[: value.dim() - n])} of the "
                f"value does not broadcast with the distribution's {tuple(self.batch_shape)}"
            ) from None
        not_finite, outside = ~torch.isfinite(value), ~self.support.check(value)
        # One read of the device for both checks (each read waits for a GPU's queue).
        any_not_finite, any_outside = torch.stack([not_finite.any(), outside.any()]).tolist()
        if any_not_finite:
            bad = not_finite.sum().item()
            raise ValueError(f"{name}.log_prob got {bad} NaN or infinite values")
        if any_outside:
            raise ValueError(
                f"{name}.log_prob got {outside.sum().item()} values outside the support "
                f"{self.support} (the flow's codomain)"
            )


class FlowDecoder(FlowNormal):
    r"""The paper's decoder: a Gaussian over :math:`\bar x` pushed through an image flow.

    .. math:: \bar x \sim \mathcal{N}\!\left(g_\mu(z), \operatorname{diag}(T g_\sigma(z))^2\right),
              \qquad x = f(\bar x),

    .. math:: \log p(x \mid z) = \log \mathcal{N}\!\left(f^{-1}(x); g_\mu(z),
              \operatorname{diag} g_\sigma(z)^2\right)
              + \log\left|\det \frac{\partial f^{-1}(x)}{\partial x}\right| .

    ``event_shape`` is ``loc.shape[-3:]`` (``C, H, W``) and ``batch_shape`` is
    ``loc.shape[:-3]``. Samples are reparameterised; :meth:`log_prob` ignores the temperature.
    With validation on, NaN/Inf values and values of the wrong event shape raise a
    ``ValueError`` that names the expected shape.

    Args:
        loc: the mean :math:`g_\mu(z)`, shape ``[..., C, H, W]``.
        scale: the standard deviation :math:`g_\sigma(z) > 0`, broadcastable to ``loc``.
        flow: an image flow base → data, e.g. :func:`~pyro_vaeflow.transforms.glow`.
        temperature: the sampling temperature :math:`T` of the base Gaussian, a number or a
            tensor that broadcasts against the batch shape.
        validate_args: as for any Pyro distribution.
        context: the context of a conditional flow (a Pyro ``ConditionalTransform``, such as
            :func:`~pyro_vaeflow.transforms.conditional_glow`), e.g. a one-hot label.

    Example:
        >>> import pyro
        >>> from pyro_vaeflow.transforms import glow
        >>> flow = glow(1, depth=2, hidden_channels=8, squeeze=1, init="identity")
        >>> def model(x):
        ...     pyro.module("flow", flow)
        ...     loc = pyro.param("loc", torch.zeros(1, 4, 4))
        ...     with pyro.plate("data", x.shape[0]):
        ...         pyro.sample("x", FlowDecoder(loc.expand(x.shape), 0.5, flow), obs=x)
        >>> d = FlowDecoder(torch.zeros(3, 1, 4, 4), 0.5, flow, temperature=0.7)
        >>> d.batch_shape, d.event_shape, d.rsample().shape
        (torch.Size([3]), torch.Size([1, 4, 4]), torch.Size([3, 1, 4, 4]))
        >>> trace = pyro.poutine.trace(model).get_trace(torch.rand(3, 1, 4, 4))
        >>> trace.nodes["x"]["fn"].log_prob(torch.rand(3, 1, 4, 4)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        loc: Tensor,
        scale: Tensor | float,
        flow: Transform | ConditionalTransform,
        temperature: float | Tensor = 1.0,
        validate_args: bool | None = None,
        *,
        context: Tensor | None = None,
    ) -> None:
        super().__init__(loc, scale, flow, 3, temperature, validate_args, context=context)


class FlowPrior(FlowNormal):
    r"""A standard Normal on :math:`\mathbb{R}^D` pushed through a vector flow.

    .. math:: \varepsilon \sim \mathcal{N}(0, T^2 I), \qquad z = f(\varepsilon), \qquad
              \log p(z) = \log \mathcal{N}(f^{-1}(z); 0, I)
              + \log\left|\det \frac{\partial f^{-1}(z)}{\partial z}\right| .

    Args:
        dim: the dimension :math:`D`.
        flow: a vector flow base → data, e.g. :func:`~pyro_vaeflow.transforms.realnvp`, or a
            conditional one with ``context``.
        temperature: the sampling temperature :math:`T` (a number or a tensor).
        validate_args: as for any Pyro distribution.
        context: the context of a conditional flow.

    Example:
        >>> from pyro_vaeflow.transforms import realnvp
        >>> prior = FlowPrior(8, realnvp(8, num_layers=2, hidden_dims=(16, 16)))
        >>> z = prior.expand([5]).sample()
        >>> z.shape, prior.log_prob(z).shape
        (torch.Size([5, 8]), torch.Size([5]))
    """

    def __init__(
        self,
        dim: int,
        flow: Transform | ConditionalTransform,
        temperature: float | Tensor = 1.0,
        validate_args: bool | None = None,
        *,
        context: Tensor | None = None,
    ) -> None:
        reference = flow_tensor(flow)
        options = (
            {} if reference is None else {"dtype": reference.dtype, "device": reference.device}
        )
        super().__init__(
            torch.zeros(dim, **options),
            torch.ones(dim, **options),
            flow,
            1,
            temperature,
            validate_args,
            context=context,
        )
