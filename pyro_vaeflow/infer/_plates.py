"""The data plate: the plate whose dim indexes the data, and the checks that the sites lie in it."""

from __future__ import annotations

import torch
from pyro.poutine.indep_messenger import CondIndepStackFrame

__all__ = ["check_observed_size", "check_plates", "find_frame", "plates"]


def plates(site: dict) -> list[CondIndepStackFrame]:
    """The site's vectorised plates."""
    return [frame for frame in site["cond_indep_stack"] if frame.vectorized]


def find_frame(observed: dict[str, dict], plate_name: str | None) -> CondIndepStackFrame:
    """The named plate, or the outermost plate of the observed sites."""
    frames = {frame for site in observed.values() for frame in plates(site)}
    if plate_name is not None:
        named = [frame for frame in frames if frame.name == plate_name]
        if not named:
            found = sorted({frame.name for frame in frames})
            raise ValueError(
                f"no observed site lies in a plate named {plate_name!r}; the observed sites' "
                f"plates are {found}"
            )
        return named[0]
    unplated = [name for name, site in observed.items() if not plates(site)]
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


def check_observed_size(name: str, site: dict, frame: CondIndepStackFrame) -> None:
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


def check_plates(model_sites: dict, guide_sites: dict, frame: CondIndepStackFrame) -> None:
    """Every site of the model, then of the guide, must lie in the data plate."""
    for where, sites in (("model", model_sites), ("guide", guide_sites)):
        for name, site in sites.items():
            if any(f.name == frame.name and f.dim == frame.dim for f in plates(site)):
                continue
            if site["is_observed"]:
                kind, reason = "observed", "its log-density belongs to no single datum"
            elif where == "model":
                kind = "latent"
                reason = (
                    "a latent variable shared by the data makes per-datum log p(x) ill-defined; "
                    "evaluate the model at a value of it instead, with "
                    f"poutine.condition(model, data={{{name!r}: value}}) and a guide without it"
                )
            else:
                kind = "auxiliary" if site["infer"].get("is_auxiliary", False) else "latent"
                reason = (
                    "it cannot be split per datum (as the joint latent of AutoDiagonalNormal, "
                    "AutoMultivariateNormal or AutoLowRankMultivariateNormal cannot); use "
                    "AutoNormal or AutoDelta, which keep one latent per datum, or a hand-written "
                    "guide in the data plate"
                )
            raise ValueError(
                f"the {where}'s {kind} site {name!r} lies outside the data plate "
                f"{frame.name!r}: {reason}"
            )
