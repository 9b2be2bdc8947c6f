r"""Per-datum importance-sampled estimates of the marginal log-likelihood :math:`\log p(x)`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm import tqdm

from pyro_vaeflow.infer._weights import check_num_samples, inspect_model, log_weights
from pyro_vaeflow.infer.diagnostics import ImportanceDiagnostics, LogWeightAccumulator

__all__ = ["CHUNK_ELEMENTS", "default_chunk_size", "log_likelihood"]

#: The default chunk of :func:`log_likelihood` holds at most this many observed elements: the
#: fastest chunk of ``benchmarks/bench_importance.py`` (the ``cpu`` preset's model, 25 images of
#: 28 × 28, as the evaluation draws them) held 196 000: 10 samples, 0.79x the time of the
#: former default's 106 (``docs/benchmarks.md``).
CHUNK_ELEMENTS = 200_000


def default_chunk_size(num_data: int, datum_numel: int) -> int:
    r"""The samples per trace that keep :math:`C \cdot N \cdot D` under :data:`CHUNK_ELEMENTS`.

    With :math:`N` data of :math:`D` observed elements each, a chunk of :math:`C` samples traces
    the model on :math:`C N` data at once, and its activations grow with :math:`C N D`; the chunk
    is :math:`\max(1, \lfloor 200\,000 / (N D) \rfloor)` (e.g. 10 for 25 images of 28 × 28).
    Larger chunks cost memory and, on the 2-core CPU where it was measured, time as well
    (``benchmarks/bench_importance.py``); much smaller ones pay each trace's fixed cost too often.

    Example:
        >>> default_chunk_size(25, 28 * 28), default_chunk_size(100, 28 * 28)
        (10, 2)
    """
    return max(1, CHUNK_ELEMENTS // (num_data * datum_numel))


def log_likelihood(
    model: Callable,
    guide: Callable,
    *args,
    num_samples: int = 1000,
    chunk_size: int | None = None,
    vectorize: bool = True,
    plate_name: str | None = None,
    return_diagnostics: bool = False,
    progress: bool = True,
    enable_grad: bool = False,
    **kwargs,
) -> Tensor | ImportanceDiagnostics:
    r"""Each datum's importance-sampled marginal log-likelihood, in nats.

    With :math:`K` guide samples :math:`z_n^{(k)} \sim q(z \mid x_n)`,

    .. math:: \log \hat p(x_n) = \log \frac{1}{K} \sum_{k=1}^{K}
              \frac{p\big(x_n, z_n^{(k)}\big)}{q\big(z_n^{(k)} \mid x_n\big)} ,

    the IWAE bound: a lower bound in expectation, which rises to :math:`\log p(x_n)` as
    :math:`K \to \infty` and equals the ELBO at :math:`K = 1`. Unlike Pyro's ``Importance`` or
    ``RenyiELBO``, it is not summed over the batch.

    Every sample site of the model and the guide must lie in the data plate: ``plate_name``, or
    else the outermost plate of the observed sites, whose dim indexes the data. Each site's
    log-density (with its ``poutine.scale`` and ``poutine.mask``) is summed over every other
    batch dim. A latent site outside the data plate is shared by the data, which makes the
    per-datum :math:`\log p(x_n)` ill-defined: that raises a ``ValueError``, and so does a guide
    site outside it, as the joint latent of ``AutoDiagonalNormal``, ``AutoMultivariateNormal`` or
    ``AutoLowRankMultivariateNormal`` (``AutoNormal`` and ``AutoDelta`` keep one latent per datum).

    The guide samples the model's latent sites, and may also sample auxiliary sites
    (``infer={"is_auxiliary": True}``, as ``AutoNormal``'s ``{name}_unconstrained``), whose
    log-densities count in :math:`\log q` as in Pyro's ELBOs: that is :math:`\log q(z_n \mid x_n)`
    when the sites after them make it so, as ``AutoNormal``'s ``Delta`` sites do with their
    ``log_density`` (a change of variables). A discrete latent site that the guide does not
    sample and the model marks ``infer={"enumerate": "parallel"}`` (e.g. with
    ``config_enumerate``) is summed out exactly per datum, as in ``TraceEnum_ELBO``: with the
    enumerated latents :math:`y_n`,

    .. math:: \log w_n^{(k)} = \log \sum_{y_n} p\big(x_n, y_n, z_n^{(k)}\big)
              - \log q\big(z_n^{(k)} \mid x_n\big) ,

    for sites in the data plate and in no inner plate (others raise a ``ValueError``).

    Samples are drawn in chunks of ``chunk_size``: each chunk is one trace of the model and the
    guide under an outer ``pyro.plate("_particles", chunk, dim=-(max_plate_nesting + 1))``, so the
    memory grows with ``chunk_size`` times :math:`N`, not with :math:`K`. By default the chunk
    keeps ``chunk_size`` :math:`\times N \times` (the observed elements per datum) under
    :math:`200\,000` (:func:`default_chunk_size`). Chunks are combined by a running, overflow-safe
    log-sum-exp (:class:`~pyro_vaeflow.infer.LogWeightAccumulator`). With ``vectorize=False`` the
    samples are drawn one trace at a time instead, for models that do not broadcast over a
    leading particle dim (when the vectorised trace fails, the ``ValueError`` says so). NaN
    log-weights give NaN estimates; they are not dropped.

    Args:
        model: a Pyro model with its data in a plate.
        guide: a guide for the model's latent sites (but those the model enumerates), in the
            same data plate.
        *args: passed to the model and the guide.
        num_samples: the number of importance samples :math:`K \ge 1`.
        chunk_size: the samples drawn per trace; by default (``None``) as many as keep
            ``chunk_size`` × N × (observed elements per datum) under :data:`CHUNK_ELEMENTS`.
        vectorize: draw a chunk in one trace (``True``) or one sample per trace (``False``).
        plate_name: the name of the data plate; by default the observed sites' outermost plate.
        return_diagnostics: return :class:`~pyro_vaeflow.infer.ImportanceDiagnostics` (the
            estimate, its effective sample size and standard error) instead of the estimate.
        progress: show a progress bar when there is more than one chunk.
        enable_grad: track gradients (by default everything runs under ``torch.no_grad()``,
            which is what keeps the memory bounded across chunks).
        **kwargs: passed to the model and the guide (except this function's own keywords).

    Returns:
        ``[N]`` estimates of :math:`\log p(x_n)`, or
        :class:`~pyro_vaeflow.infer.ImportanceDiagnostics` of ``[N]`` tensors.

    Example:
        >>> import pyro
        >>> import pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):  # the prior: a poor guide
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> x = torch.tensor([-1.0, 0.0, 2.0])
        >>> exact = dist.Normal(0.0, 2**0.5).log_prob(x)  # p(x) = N(0, 2)
        >>> est = log_likelihood(
        ...     model, guide, x, num_samples=10000, chunk_size=2500, return_diagnostics=True,
        ...     progress=False,
        ... )
        >>> est.log_px.shape, bool((est.ess > 1000).all())
        (torch.Size([3]), True)
        >>> bool(((est.log_px - exact).abs() < 4 * est.stderr).all())
        True
    """
    check_num_samples(num_samples, "num_samples")
    if chunk_size is not None:
        check_num_samples(chunk_size, "chunk_size")
    accumulator = LogWeightAccumulator()
    with torch.set_grad_enabled(enable_grad):
        data = inspect_model(model, guide, args, kwargs, plate_name)
        if chunk_size is None:
            chunk_size = default_chunk_size(data.size, data.datum_numel)
        chunk = min(chunk_size, num_samples)
        sizes = [min(chunk, num_samples - start) for start in range(0, num_samples, chunk)]
        with tqdm(
            total=num_samples,
            desc="log_likelihood",
            unit="sample",
            disable=not progress or len(sizes) == 1,
            leave=False,
        ) as bar:
            for size in sizes:
                accumulator.update(log_weights(model, guide, args, kwargs, data, size, vectorize))
                bar.update(size)
    diagnostics = accumulator.summary()
    return diagnostics if return_diagnostics else diagnostics.log_px
