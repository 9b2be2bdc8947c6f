r"""Discrete latent sites enumerated in the model, summed out exactly per datum.

A latent site of the model that the guide does not sample and that is marked
``infer={"enumerate": "parallel"}`` (e.g. by ``pyro.infer.config_enumerate``) is enumerated as in
Pyro's ``TraceEnum_ELBO``: the model is replayed against the guide's sample under
``poutine.enum(first_available_dim=-(max_plate_nesting + 1))`` (the particle plate counted),
which gives each such site all its values along a dim of its own, left of the plates. With the
enumerated latents :math:`y_n` of datum :math:`n` and the guide's latents :math:`z_n`,

.. math:: \log w_n = \log \sum_{y_n} p(x_n, y_n, z_n) - \log q(z_n \mid x_n),

a log-sum-exp over every enumerated dim at once, after each site's log-density is summed over the
plates inside the data plate. That is exact, at a cost of the product of the sites' support
sizes per datum, when every enumerated site lies in the data plate and in no other plate (its
value is then shared by the datum's inner plates) and outside ``pyro.markov`` (whose recycled
dims the joint sum would conflate); :func:`check_enumerated` raises a ``ValueError`` otherwise.

As in ``TraceEnum_ELBO``, an enumerated site enters the sum with its unmasked log-density (where
it is masked out, the sum averages over its prior, which is exact when nothing there depends on
it, as with ``obs_mask``'s ``{name}_unobserved`` at an observed datum), the other sites that
depend on an enumerated value enter masked, and the scalar ``poutine.scale`` that all of them
must share multiplies the log-sum.
"""

from __future__ import annotations

import torch
from pyro.distributions.util import scale_and_mask
from torch import Tensor

__all__ = ["check_enumerated", "enumeration_factor", "is_enumerated", "sum_out"]


def is_enumerated(site: dict) -> bool:
    """Whether the model enumerates the site, as ``poutine.enum`` does, when the guide lacks it."""
    return not site["is_observed"] and site["infer"].get("enumerate") == "parallel"


def check_enumerated(name: str, site: dict, data_plate: str) -> None:
    """Raises a ``ValueError`` unless the enumerated site can be summed out per datum."""
    plates = [frame.name for frame in site["cond_indep_stack"] if frame.vectorized]
    if plates != [data_plate]:
        raise ValueError(
            f"the enumerated site {name!r} lies in the plates {plates}: only a site enumerated "
            f"in the data plate {data_plate!r} and in no inner plate is summed out per datum; "
            "sample it in the guide instead"
        )
    if not site["fn"].has_enumerate_support:
        raise ValueError(
            f"the site {name!r} is marked for enumeration, but its distribution "
            f"{type(site['fn']).__name__} has no finite support: sample it in the guide"
        )
    if site["infer"].get("num_samples") is not None:
        raise ValueError(
            f"the enumerated site {name!r} draws num_samples values instead of its support; "
            "a per-datum sum needs exact enumeration (drop num_samples)"
        )
    if "_markov_scope" in site["infer"]:
        raise ValueError(
            f"the enumerated site {name!r} lies in pyro.markov, whose recycled enumeration dims "
            "a per-datum sum does not support: sample it in the guide instead"
        )


def enumeration_factor(site: dict, rank: int) -> Tensor | None:
    """The site's log-density as a factor of the sum over the enumerated values, or ``None``.

    A site is a factor if it is enumerated, or if its log-density depends on an enumerated value
    (has a dim of size > 1 left of the ``rank`` plate dims). The factor is unscaled, and masked
    unless the site is enumerated, as in ``TraceEnum_ELBO``.
    """
    if "_enumerate_dim" in site["infer"]:
        return site["unscaled_log_prob"]
    log_prob = site["log_prob"]
    if any(size > 1 for size in log_prob.shape[: max(log_prob.dim() - rank, 0)]):
        return scale_and_mask(site["unscaled_log_prob"], mask=site["mask"])
    return None


def sum_out(factors: list[Tensor], scales: list, num_dims: int) -> Tensor:
    r"""``scale · logsumexp`` of the summed ``factors`` over their ``num_dims`` leading dims.

    Each factor is a per-datum, unscaled log-density with the enumerated dims leading; the
    scales (``poutine.scale`` of each factor's site) must be one common scalar.
    """
    if any(torch.is_tensor(scale) and scale.dim() for scale in scales) or (
        len({float(scale) for scale in scales}) != 1
    ):
        raise ValueError(
            "the sites that depend on an enumerated value must share one scalar poutine.scale "
            "(as in TraceEnum_ELBO)"
        )
    total = sum(factors[1:], factors[0])
    return float(scales[0]) * total.logsumexp(tuple(range(num_dims)))
