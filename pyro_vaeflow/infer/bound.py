r"""The per-datum evidence lower bound (ELBO)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pyro_vaeflow.infer._weights import check_num_samples, inspect_model, log_weights

__all__ = ["elbo"]


def elbo(
    model: Callable,
    guide: Callable,
    *args,
    num_particles: int = 1,
    vectorize: bool = True,
    plate_name: str | None = None,
    enable_grad: bool = False,
    **kwargs,
) -> Tensor:
    r"""Each datum's evidence lower bound, in nats, averaged over ``num_particles`` samples.

    .. math:: \mathrm{ELBO}(x_n) = \mathbb{E}_{q(z \mid x_n)}
              \left[\log p(x_n, z) - \log q(z \mid x_n)\right]
              = \log p(x_n) - \mathrm{KL}\big(q(z \mid x_n) \,\|\, p(z \mid x_n)\big)
              \le \log p(x_n) .

    Discrete latents :math:`y_n` that the model enumerates are summed out inside the
    expectation, as in ``TraceEnum_ELBO``:

    .. math:: \mathrm{ELBO}(x_n) = \mathbb{E}_{q(z \mid x_n)}
              \Big[\log \sum_{y_n} p(x_n, y_n, z) - \log q(z \mid x_n)\Big] .

    The data plate, the per-datum sums, auxiliary guide sites and enumeration are as in
    :func:`~pyro_vaeflow.infer.log_likelihood`; the particles are drawn in one trace under an
    outer particle plate, or one per trace with ``vectorize=False``. Unlike Pyro's
    ``Trace_ELBO`` and ``TraceEnum_ELBO``, the result is not summed over the batch.

    Args:
        model: a Pyro model with its data in a plate.
        guide: a guide for the model's latent sites (but those the model enumerates), in the
            same data plate.
        *args: passed to the model and the guide.
        num_particles: the number of samples averaged, at least 1.
        vectorize: draw the particles in one trace (``True``) or one per trace (``False``).
        plate_name: the name of the data plate; by default the observed sites' outermost plate.
        enable_grad: track gradients (by default it runs under ``torch.no_grad()``).
        **kwargs: passed to the model and the guide (except this function's own keywords).

    Returns:
        The ``[N]`` per-datum ELBOs.

    Example:
        >>> import pyro
        >>> import pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):  # the exact posterior, N(x / 2, 1 / 2)
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Normal(x / 2, 0.5**0.5))
        >>> x = torch.tensor([-1.0, 0.0, 2.0])
        >>> bound = elbo(model, guide, x, num_particles=10)
        >>> bound.shape, torch.allclose(bound, dist.Normal(0.0, 2**0.5).log_prob(x))
        (torch.Size([3]), True)
    """
    check_num_samples(num_particles, "num_particles")
    with torch.set_grad_enabled(enable_grad):
        data = inspect_model(model, guide, args, kwargs, plate_name)
        return log_weights(model, guide, args, kwargs, data, num_particles, vectorize).mean(0)
