r"""Per-datum log importance weights of a Pyro model and guide.

For a model whose every sample site lies in one data plate of size :math:`N`, the joint
factorises over the data, and each guide sample :math:`z^{(k)} \sim q(z \mid x)` gives one
log-weight per datum,

.. math:: \log w_n^{(k)} = \log p\big(x_n, z_n^{(k)}\big) - \log q\big(z_n^{(k)} \mid x_n\big),

where each term sums the log-densities of the sites over every batch dimension except the data
dimension. :func:`inspect_model` checks the structure once; :func:`log_weights` then draws
:math:`K` samples, either at once under an outer particle plate or one at a time.

The guide samples the model's latent sites, and may sample auxiliary sites
(``infer={"is_auxiliary": True}``, as the autoguides' ``{name}_unconstrained``), whose
log-densities count in :math:`\log q` as in Pyro's ELBOs; discrete latent sites the model
enumerates are summed out per datum (see :mod:`pyro_vaeflow.infer._enumeration`).
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

from pyro_vaeflow.infer._enumeration import (
    check_enumerated,
    enumeration_factor,
    is_enumerated,
    sum_out,
)
from pyro_vaeflow.infer._plates import check_observed_size, check_plates, find_frame, plates
from pyro_vaeflow.validation import check_int

__all__ = ["DataPlate", "check_num_samples", "inspect_model", "log_weights"]

PARTICLE_PLATE = "_particles"


@dataclass(frozen=True)
class DataPlate:
    """Where the data sit: the data plate's name, dim and size, and the traces' plate nesting;
    the model's enumerated sites and the number of observed elements per datum."""

    name: str
    dim: int
    size: int
    max_plate_nesting: int
    enumerated: tuple[str, ...]
    datum_numel: int


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


def _traces(
    model: Callable, guide: Callable, args: tuple, kwargs: dict, enum_dim: int | None = None
) -> tuple[dict, dict]:
    """One guide trace and the model replayed on it, as ``(model_sites, guide_sites)``; with
    ``enum_dim``, under ``poutine.enum(first_available_dim=enum_dim)``."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    replayed = poutine.replay(model, trace=guide_trace)
    if enum_dim is not None:
        replayed = poutine.enum(replayed, first_available_dim=enum_dim)
    model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    model_sites = _sample_sites(model_trace)
    guide_sites = _sample_sites(guide_trace)
    return model_sites, guide_sites


def _check_latent_sites(
    model_sites: dict, guide_sites: dict, frame: CondIndepStackFrame
) -> tuple[str, ...]:
    """The model's enumerated sites; raises unless the guide samples every other latent site
    and nothing else but auxiliary sites."""
    latent = {name for name, site in model_sites.items() if not site["is_observed"]}
    enumerated = tuple(
        name
        for name, site in model_sites.items()
        if name in latent and name not in guide_sites and is_enumerated(site)
    )
    missing = sorted(latent - set(guide_sites) - set(enumerated))
    extra = sorted(
        name
        for name, site in guide_sites.items()
        if name not in latent and not site["infer"].get("is_auxiliary", False)
    )
    if missing or extra:
        raise ValueError(
            "the guide must sample every latent site of the model that the model does not "
            "enumerate, and no other site unless it is marked infer={'is_auxiliary': True}; "
            f"latent in the model only: {missing}, in the guide only: {extra} (a discrete "
            "latent may instead be enumerated in the model: infer={'enumerate': 'parallel'})"
        )
    for name in enumerated:
        check_enumerated(name, model_sites[name], frame.name)
    return enumerated


def inspect_model(
    model: Callable, guide: Callable, args: tuple, kwargs: dict, plate_name: str | None = None
) -> DataPlate:
    """Traces the model and guide once and finds the data plate; raises if it is ill-posed.

    The data plate is ``plate_name``, or else the outermost plate of the observed sites. Every
    sample site of the model and guide must lie in it; the guide must sample the model's latent
    sites, except those the model enumerates, and other sites only if they are auxiliary; the
    data plate must not subsample; each observed value must have the plate's size along its dim;
    no log-density may have more batch dims than the plates.
    """
    model_sites, guide_sites = _traces(model, guide, args, kwargs)
    observed = {name: site for name, site in model_sites.items() if site["is_observed"]}
    if not observed:
        raise ValueError("the model has no observed sites: there is no data to evaluate")
    guide_observed = sorted(name for name, site in guide_sites.items() if site["is_observed"])
    if guide_observed:
        raise ValueError(
            f"the guide has observed sites {guide_observed} (e.g. pyro.factor): a guide may only "
            "sample the model's latent sites and auxiliary sites"
        )
    frame = find_frame(observed, plate_name)
    if frame.full_size is not None and frame.full_size != frame.size:
        raise ValueError(
            f"the data plate {frame.name!r} subsamples {frame.size} of {frame.full_size} data; "
            "pass the data to evaluate and use a plate without subsample_size"
        )
    enumerated = _check_latent_sites(model_sites, guide_sites, frame)
    check_plates(model_sites, guide_sites, frame)
    for name, site in observed.items():
        check_observed_size(name, site, frame)
    sites = [*model_sites.items(), *guide_sites.items()]
    nesting = -min(f.dim for _, site in sites for f in plates(site))
    numel = sum(torch.as_tensor(site["value"]).numel() for site in observed.values())
    for name, site in sites:
        _check_rank(name, site["log_prob"], nesting)
    return DataPlate(frame.name, frame.dim, frame.size, nesting, enumerated, numel // frame.size)


def _check_rank(name: str, log_prob: Tensor, width: int) -> None:
    """A log-density may have no batch dims but the ``width`` dims of the plates (and of the
    particles and enumerated sites)."""
    if log_prob.dim() > width:
        raise ValueError(
            f"site {name!r} has log_prob of shape {tuple(log_prob.shape)}, with more than the "
            f"{width} batch dims of the plates enclosing the sites (and of any particle or "
            "enumeration dims): declare its batch dims with pyro.plate or move them to the "
            "event with .to_event()"
        )


def _per_datum(name: str, log_prob: Tensor, data: DataPlate, width: int, keep: range) -> Tensor:
    """A log-density, aligned to ``width`` batch dims, summed over all of them but the data dim
    and the leading dims ``keep`` (enumerated and particle dims)."""
    _check_rank(name, log_prob, width)
    log_prob = log_prob.reshape((1,) * (width - log_prob.dim()) + log_prob.shape)
    others = [d for d in range(width) if d not in keep and d != width + data.dim]
    return log_prob.sum(others) if others else log_prob


def _terms(
    model_sites: dict, guide_sites: dict, data: DataPlate, rank: int, particles: bool
) -> tuple[Tensor | float, list[Tensor], list, int]:
    """Per-datum log-weights of one trace before the enumerated sites are summed out.

    Returns the terms that depend on no enumerated value, summed (model minus guide); the
    per-datum factors that do, enumerated dims leading; their sites' scales; and the number of
    enumerated dims.
    """
    num_enumerated = sum("_enumerate_dim" in site["infer"] for site in model_sites.values())
    width = rank + num_enumerated
    kept = range(num_enumerated, num_enumerated + int(particles))  # the particle dim, if any
    leading = range(num_enumerated + int(particles))  # and the enumerated dims
    total: Tensor | float = 0.0
    for name, site in guide_sites.items():
        total = total - _per_datum(name, site["log_prob"], data, width, kept)
    factors, scales = [], []
    for name, site in model_sites.items():
        factor = enumeration_factor(site, rank)
        if factor is None:
            total = total + _per_datum(name, site["log_prob"], data, width, kept)
        else:
            factors.append(_per_datum(name, factor, data, width, leading))
            scales.append(site["scale"])
    return total, factors, scales, num_enumerated


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
    rank = data.max_plate_nesting + int(particles)
    if particles:
        plate = pyro.plate(PARTICLE_PLATE, num_particles, dim=-rank)
        model, guide = plate(model), plate(guide)
    try:
        enum_dim = -(rank + 1) if data.enumerated else None
        model_sites, guide_sites = _traces(model, guide, args, kwargs, enum_dim)
        total, factors, scales, num_enumerated = _terms(
            model_sites, guide_sites, data, rank, particles
        )
    except (RuntimeError, ValueError) as error:
        if not particles:
            raise
        raise ValueError(
            f"the model and guide failed under the particle plate {PARTICLE_PLATE!r} "
            f"({num_particles} samples at dim {-rank}), though they ran without it: they probably "
            "do not broadcast over a leading particle dim (as code that reshapes with "
            "x.shape[0] or .view(len(x), -1) does not); pass vectorize=False to draw one sample "
            "per trace (the error it raised is above)"
        ) from error
    if factors:
        total = total + sum_out(factors, scales, num_enumerated)
    shape = (num_particles, data.size) if particles else (data.size,)
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
    ``pyro.plate("_particles", K, dim=-(max_plate_nesting + 1))`` (a failure there raises a
    ``ValueError`` that suggests ``vectorize=False``, the error chained); otherwise in K traces.
    The model's enumerated sites (``data.enumerated``) are summed out of each log-weight.
    """
    if vectorize:
        return _one_trace(model, guide, args, kwargs, data, num_samples)
    return torch.stack(
        [_one_trace(model, guide, args, kwargs, data, None) for _ in range(num_samples)]
    )
