"""The argument checks of the flow distributions, which name mistakes in the user's shapes."""

from __future__ import annotations

import itertools

import torch
from pyro.distributions.conditional import ConditionalTransform
from torch import Tensor, nn
from torch.distributions import Distribution, Transform

from pyro_vaeflow.validation import check_number

__all__ = ["check_fits", "checked_temperature", "conditioned", "flow_tensor", "no_closed_form"]


def conditioned(name: str, flow, context: Tensor | None) -> Transform:
    """``flow`` conditioned on ``context`` if it is a conditional transform, else ``flow``."""
    if isinstance(flow, ConditionalTransform):
        if context is None:
            raise ValueError(
                f"{name} got a conditional flow ({type(flow).__name__}) and no context: pass "
                "context=... (a label or z), or a flow already conditioned with .condition()"
            )
        return flow.condition(context)
    if not isinstance(flow, Transform):
        raise TypeError(f"flow must be a torch Transform, got {type(flow).__name__}")
    if context is not None:
        raise ValueError(
            f"{name} got a context for a flow that is not conditional ({type(flow).__name__})"
        )
    return flow


def flow_tensor(flow: Transform) -> Tensor | None:
    """A parameter or buffer of ``flow``, the witness of its dtype and device (or ``None``)."""
    if not isinstance(flow, nn.Module):
        return None
    return next(itertools.chain(flow.parameters(), flow.buffers()), None)  # lazily: the first


def check_fits(
    name: str, loc: Tensor, scale: Tensor, flow: Transform, base_shape: torch.Size
) -> None:
    """Raise a ``ValueError`` naming the mismatch if ``loc``'s event does not fit the flow or
    ``loc``, ``scale`` and the flow disagree on dtype or device."""
    expected = flow.expected_shape(base_shape) if hasattr(flow, "expected_shape") else base_shape
    if expected != base_shape:
        what = "channels" if len(base_shape) == 3 and expected[-3] != base_shape[-3] else "size"
        raise ValueError(
            f"{name}: loc's event has shape {tuple(base_shape)}, but the flow takes "
            f"{tuple(expected)} (its {what} differ): build the flow for this shape or fix loc"
        )
    if scale.is_floating_point() and scale.dtype != loc.dtype:
        raise ValueError(f"{name}: loc is {loc.dtype} but scale is {scale.dtype}: use one dtype")
    witness = flow_tensor(flow)
    if witness is None:
        return
    if witness.is_floating_point() and witness.dtype != loc.dtype:
        raise ValueError(
            f"{name}: loc is {loc.dtype} but the flow's parameters are {witness.dtype}: convert "
            f"one (loc.to({witness.dtype}) or flow.to({loc.dtype}))"
        )
    if witness.device != loc.device:
        raise ValueError(
            f"{name}: loc is on {loc.device} but the flow's parameters are on "
            f"{witness.device}: move one (flow.to(loc.device))"
        )


def checked_temperature(name: str, temperature, batch_shape: torch.Size) -> float | Tensor:
    """A number ≥ 0 as a float, or a tensor of them that broadcasts against ``batch_shape``."""
    if not isinstance(temperature, Tensor):
        return check_number("temperature", temperature, low=0.0)
    if not temperature.is_floating_point():
        raise ValueError(f"{name}: a temperature tensor must be floating point")
    try:
        torch.broadcast_shapes(temperature.shape, batch_shape)
    except RuntimeError:
        raise ValueError(
            f"{name}: temperature of shape {tuple(temperature.shape)} does not broadcast "
            f"against the batch shape {tuple(batch_shape)}"
        ) from None
    if not torch.jit.is_tracing() and not (torch.isfinite(temperature) & (temperature >= 0)).all():
        raise ValueError(f"{name}: temperatures must be finite numbers >= 0")
    return temperature


def no_closed_form(distribution: Distribution, what: str) -> str:
    return (
        f"{type(distribution).__name__}.{what} has no closed form: the flow f is nonlinear, so "
        "E[f(x̄)] differs from f(μ), which is what temperature 0 draws; estimate it with "
        f"pyro_vaeflow.distributions.sample_moments(d, num_samples=...).{what}"
    )
