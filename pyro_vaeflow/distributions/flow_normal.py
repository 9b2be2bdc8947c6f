r"""Normal distributions pushed through a flow, with a sampling temperature."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import Transform, constraints
from torch.distributions.utils import _sum_rightmost, broadcast_all

from pyro_vaeflow.validation import check_number

__all__ = ["FlowDecoder", "FlowNormal", "FlowPrior"]


class FlowNormal(TorchDistribution):
    r"""A diagonal Normal pushed through a flow: :math:`x = f(\bar x)`.

    .. math:: \bar x \sim \mathcal{N}(\mu, (T\sigma)^2), \qquad x = f(\bar x), \qquad
              \log p(x) = \log \mathcal{N}\!\left(f^{-1}(x); \mu, \sigma^2\right)
              + \log\left|\det \frac{\partial f^{-1}(x)}{\partial x}\right| .

    The temperature :math:`T` only affects sampling; :meth:`log_prob` is the density at
    :math:`T = 1`. The last ``event_dim`` dimensions of ``loc`` form the base event; the others
    are batch dimensions.

    Args:
        loc: the base mean :math:`\mu`.
        scale: the base standard deviation :math:`\sigma > 0`.
        flow: a bijection base → data on ``event_dim`` dimensions, e.g. a
            :class:`~pyro_vaeflow.transforms.Flow`.
        event_dim: the number of event dimensions.
        temperature: the sampling temperature :math:`T \ge 0`.
        validate_args: as for any Pyro distribution.
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
        flow: Transform,
        event_dim: int,
        temperature: float = 1.0,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(flow, Transform):
            raise TypeError(f"flow must be a torch Transform, got {type(flow).__name__}")
        if flow.domain.event_dim > event_dim:
            raise ValueError(
                f"{type(self).__name__} needs a flow on at most {event_dim} event dimensions, "
                f"got one on {flow.domain.event_dim}"
            )
        check_number("temperature", temperature, low=0.0)
        self.loc, self.scale = broadcast_all(loc, scale)
        if self.loc.dim() < event_dim:
            raise ValueError(
                f"{type(self).__name__} needs loc with at least {event_dim} dimensions, "
                f"got shape {tuple(self.loc.shape)}"
            )
        self.flow = flow
        self.temperature = float(temperature)
        self._event_dim = event_dim
        split = self.loc.dim() - event_dim
        self.base_event_shape = self.loc.shape[split:]
        event_shape = torch.Size(flow.forward_shape(self.base_event_shape))
        super().__init__(self.loc.shape[:split], event_shape, validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.real, self._event_dim)

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
        return self.flow(self.loc + self.temperature * self.scale * noise)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        base = self.flow.inv(value)
        log_det = self.flow.log_abs_det_jacobian(base, value)
        log_det = _sum_rightmost(log_det, self._event_dim - self.flow.codomain.event_dim)
        z = (base - self.loc) / self.scale
        log_density = -0.5 * z**2 - self.scale.log() - 0.5 * math.log(2 * math.pi)
        return _sum_rightmost(log_density, self._event_dim) - log_det

    def _validate_sample(self, value: Tensor) -> None:
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
        try:
            torch.broadcast_shapes(value.shape[: value.dim() - n], self.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"{name}.log_prob: the batch shape {tuple(value.shape[: value.dim() - n])} of the "
                f"value does not broadcast with the distribution's {tuple(self.batch_shape)}"
            ) from None
        if not torch.isfinite(value).all():
            bad = (~torch.isfinite(value)).sum().item()
            raise ValueError(f"{name}.log_prob got {bad} NaN or infinite values")


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
        temperature: the sampling temperature :math:`T` of the base Gaussian.
        validate_args: as for any Pyro distribution.

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
        flow: Transform,
        temperature: float = 1.0,
        validate_args: bool | None = None,
    ) -> None:
        super().__init__(loc, scale, flow, 3, temperature, validate_args)


class FlowPrior(FlowNormal):
    r"""A standard Normal on :math:`\mathbb{R}^D` pushed through a vector flow.

    .. math:: \varepsilon \sim \mathcal{N}(0, T^2 I), \qquad z = f(\varepsilon), \qquad
              \log p(z) = \log \mathcal{N}(f^{-1}(z); 0, I)
              + \log\left|\det \frac{\partial f^{-1}(z)}{\partial z}\right| .

    Args:
        dim: the dimension :math:`D`.
        flow: a vector flow base → data, e.g. :func:`~pyro_vaeflow.transforms.realnvp`.
        temperature: the sampling temperature :math:`T`.
        validate_args: as for any Pyro distribution.

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
        flow: Transform,
        temperature: float = 1.0,
        validate_args: bool | None = None,
    ) -> None:
        reference = next(iter(flow.parameters()), None) if hasattr(flow, "parameters") else None
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
        )
