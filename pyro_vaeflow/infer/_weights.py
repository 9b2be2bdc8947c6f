r"""Per-datum log importance weights of a Pyro model and guide.

For a model whose every sample site lies in one data plate of size :math:`N`, the joint
factorises over the data, and each guide sample :math:`z^{(k)} \sim q(z \mid x)` gives one
log-weight per datum,

.. math:: \log w_n^{(k)} = \log p\big(x_n, z_n^{(k)}\big) - \log q\big(z_n^{(k)} \mid x_n\big),

where each term sums the log-densities of the sites over every batch dimension except the data
dimension. :func:`inspect_model` checks the structure once; :func:`log_weights` then draws
:math:`K` samples, either at once under an outer particle plate or one at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.indep_messenger import CondIndepStackFrame
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from pyro_vaeflow.validation import check_int

__all__ = ["DataPlate", "check_num_samples", "inspect_model", "log_weights"]

PARTICLE_PLATE = "_particles"


@dataclass(frozen=True)
class DataPlate:
    """Where the data sit: the data plate's name, dim and size, and the traces' plate nesting."""

    name: str
    dim: int
    size: int
    max_plate_nesting: int


def check_num_samples(value: int, name: str) -> int:
    """Returns ``value`` if it is an integer ≥ 1, else raises a ``ValueError`` naming it."""
    return check_int(name, value)


def _sample_sites(trace: Trace) -> dict[str, dict]:
    """The trace's sample sites, without subsample and ``pyro.deterministic`` sites."""
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site_is_subsample(site)
        and not site["infer"].get("_deterministic", False)
    }


def _traces(model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[dict, dict]:
    """One guide trace and the model replayed on it, as ``(model_sites, guide_sites)``."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    model_sites = _sample_sites(model_trace)
    guide_sites = _sample_sites(guide_trace)
    return model_sites, guide_sites


def _plates(site: dict) -> list[CondIndepStackFrame]:
    return [frame for frame in site["cond_indep_stack"] if frame.vectorized]


def _find_frame(observed: dict[str, dict], plate_name: str | None) -> CondIndepStackFrame:
    """The named plate, or the outermost plate of the observed sites."""
    frames = {frame for site in observed.values() for frame in _plates(site)}
    if plate_name is not None:
        named = [frame for frame in frames if frame.name == plate_name]
        if not named:
            found = sorted({frame.name for frame in frames})
            raise ValueError(
                f"no observed site lies in a plate named {plate_name!r}; the observed sites' "
                f"plates are {found}"
            )
        return named[0]
    unplated = [name for name, site in observed.items() if not _plates(site)]
    if unplated:
        raise ValueError(
            f"the observed sites {unplated} lie in no pyro.plate: put the data in a plate over "
            "dim 0 so that each datum gets its own log-density"
        )
    outermost = min(frame.dim for frame in frames)
    candidates = sorted({frame.name for frame in frames if frame.dim == outermost})
    if len(candidates) > 1:
        raise ValueError(
            f"the observed sites lie in several plates at dim {outermost} ({candidates}): "
            "choose the data plate with plate_name="
        )
    return next(frame for frame in frames if frame.dim == outermost)


def _check_observed_size(name: str, site: dict, frame: CondIndepStackFrame) -> None:
    """The observed value must have the plate's size along the plate's dim."""
    value = torch.as_tensor(site["value"])
    event_dim = len(site["fn"].event_shape)
    batch_shape = value.shape[: value.dim() - event_dim]
    size = batch_shape[frame.dim] if len(batch_shape) >= -frame.dim else None
    if size != frame.size:
        raise ValueError(
            f"observed site {name!r} has batch shape {tuple(batch_shape)}, but the data plate "
            f"{frame.name!r} needs size {frame.size} at dim {frame.dim}"
        )


def inspect_model(
    model: Callable, guide: Callable, args: tuple, kwargs: dict, plate_name: str | None = None
) -> DataPlate:
    """Traces the model and guide once and finds the data plate; raises if it is ill-posed.

    The data plate is ``plate_name``, or else the outermost plate of the observed sites. Every
    sample site of the model and guide must lie in it; the model's latent sites and the guide's
    must match; the data plate must not subsample; each observed value must have the plate's
    size along its dim.
    """
    model_sites, guide_sites = _traces(model, guide, args, kwargs)
    observed = {name: site for name, site in model_sites.items() if site["is_observed"]}
    if not observed:
        raise ValueError("the model has no observed sites: there is no data to evaluate")
    guide_observed = sorted(name for name, site in guide_sites.items() if site["is_observed"])
    if guide_observed:
        raise ValueError(
            f"the guide has observed sites {guide_observed} (e.g. pyro.factor): a guide may only "
            "sample the model's latent sites"
        )
    latent = {name for name, site in model_sites.items() if not site["is_observed"]}
    if latent != set(guide_sites):
        raise ValueError(
            "the guide must sample exactly the model's latent sites; latent in the model only: "
            f"{sorted(latent - set(guide_sites))}, in the guide only: "
            f"{sorted(set(guide_sites) - latent)}"
        )
    frame = _find_frame(observed, plate_name)
    if frame.full_size is not None and frame.full_size != frame.size:
        raise ValueError(
            f"the data plate {frame.name!r} subsamples {frame.size} of {frame.full_size} data; "
            "pass the data to evaluate and use a plate without subsample_size"
        )
    for where, sites in (("model", model_sites), ("guide", guide_sites)):
        for name, site in sites.items():
            if any(f.name == frame.name and f.dim == frame.dim for f in _plates(site)):
                continue
            kind = "observed" if site["is_observed"] else "latent"
            reason = (
                "a latent variable shared by the data makes per-datum log p(x) ill-defined"
                if kind == "latent"
                else "its log-density belongs to no single datum"
            )
            raise ValueError(
                f"the {where}'s {kind} site {name!r} lies outside the data plate "
                f"{frame.name!r}: {reason}"
            )
    for name, site in observed.items():
        _check_observed_size(name, site, frame)
    dims = [
        f.dim for sites in (model_sites, guide_sites) for s in sites.values() for f in _plates(s)
    ]
    return DataPlate(frame.name, frame.dim, frame.size, -min(dims))


def _per_datum(name: str, site: dict, data: DataPlate, rank: int, particles: bool) -> Tensor:
    """A site's log-density summed over every batch dim but the data (and particle) dims."""
    log_prob = site["log_prob"]
    if log_prob.dim() > rank:
        raise ValueError(
            f"site {name!r} has log_prob of shape {tuple(log_prob.shape)}, with more batch "
            f"dims than the {data.max_plate_nesting} plates enclosing the sites: declare its "
            "batch dims with pyro.plate or move them to the event with .to_event()"
        )
    log_prob = log_prob.reshape((1,) * (rank - log_prob.dim()) + log_prob.shape)
    keep = {rank + data.dim} | ({0} if particles else set())
    others = [d for d in range(rank) if d not in keep]
    return log_prob.sum(others) if others else log_prob


def _one_trace(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    data: DataPlate,
    num_particles: int | None,
) -> Tensor:
    """``[K, N]`` log-weights under a particle plate of size K, or ``[N]`` with ``None``."""
    particles = num_particles is not None
    if particles:
        plate = pyro.plate(PARTICLE_PLATE, num_particles, dim=-(data.max_plate_nesting + 1))
        model, guide = plate(model), plate(guide)
    model_sites, guide_sites = _traces(model, guide, args, kwargs)
    rank = data.max_plate_nesting + int(particles)
    shape = (num_particles, data.size) if particles else (data.size,)
    total = 0.0
    for sign, sites in ((1.0, model_sites), (-1.0, guide_sites)):
        for name, site in sites.items():
            total = total + sign * _per_datum(name, site, data, rank, particles)
    return torch.as_tensor(total).expand(shape)


def log_weights(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict[str, Any],
    data: DataPlate,
    num_samples: int,
    vectorize: bool = True,
) -> Tensor:
    r"""``[K, N]`` log-weights :math:`\log p(x_n, z^{(k)}_n) - \log q(z^{(k)}_n \mid x_n)`.

    With ``vectorize=True``, the K samples are drawn in one trace under an outer
    ``pyro.plate("_particles", K, dim=-(max_plate_nesting + 1))``; otherwise in K traces.
    """
    if vectorize:
        return _one_trace(model, guide, args, kwargs, data, num_samples)
    return torch.stack(
        [_one_trace(model, guide, args, kwargs, data, None) for _ in range(num_samples)]
    )
