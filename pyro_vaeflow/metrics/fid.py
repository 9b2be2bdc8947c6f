r"""The Fréchet Inception Distance (FID), computed as pytorch-fid computes it."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
from scipy import linalg
from torch import Tensor, nn

from pyro_vaeflow.metrics.features import Sampler, Statistics, statistics
from pyro_vaeflow.metrics.inception import inception_network

__all__ = ["fid", "frechet_distance"]


# pytorch-fid's offset to the covariances' diagonals when their product is singular.
_EPS = 1e-6


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    # SciPy's matrix square root, with its own reports silenced: the caller checks the result.
    # SciPy < 1.16 prints when it fails (and returns NaNs); later versions warn that the matrix
    # is singular or ill-conditioned. SciPy 1.18 removed the `disp` argument that pytorch-fid
    # 0.3 passes, so pytorch-fid's function is not called.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(matrix)


def _check_statistics(stats: tuple[np.ndarray, np.ndarray], what: str) -> Statistics:
    if not isinstance(stats, tuple) or len(stats) != 2:
        raise TypeError(f"{what} must be a pair (mu, sigma), got {type(stats).__name__}")
    mu, sigma = (np.asarray(array, dtype=np.float64) for array in stats)
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(
            f"{what}: expected mu [D] and sigma [D, D], got shapes {mu.shape} and {sigma.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{what} hold NaN or infinite values")
    return Statistics(mu, sigma)


def frechet_distance(
    stats_a: tuple[np.ndarray, np.ndarray], stats_b: tuple[np.ndarray, np.ndarray]
) -> float:
    r"""The Fréchet distance between two Gaussians, given as (mean, covariance) pairs.

    .. math:: d^2 = \lVert \mu_a - \mu_b \rVert^2
              + \operatorname{tr}\bigl(\Sigma_a + \Sigma_b - 2 (\Sigma_a \Sigma_b)^{1/2}\bigr),

    computed as pytorch-fid's ``calculate_frechet_distance`` does (with SciPy's ``sqrtm``, adding
    :math:`10^{-6}` to the diagonals if the product is singular, with a :class:`RuntimeWarning`),
    but without SciPy's ``disp`` argument, which SciPy 1.18 removed. With Inception statistics
    this is the FID.

    Args:
        stats_a: ``(mu [D], sigma [D, D])``, e.g. a :class:`~pyro_vaeflow.metrics.Statistics`.
        stats_b: the same for the other set.

    Raises:
        TypeError, ValueError: on malformed or mismatched statistics, or a square root with a
            large imaginary part (covariances too degenerate: use more samples).

    Example:
        >>> import numpy as np
        >>> a = (np.zeros(3), np.eye(3))
        >>> b = (np.ones(3), 4 * np.eye(3))
        >>> round(frechet_distance(a, b), 6)  # 3 + (3 + 12 - 2 * 6)
        6.0
    """
    a, b = _check_statistics(stats_a, "stats_a"), _check_statistics(stats_b, "stats_b")
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"statistics of different dimensions: {len(a.mu)} and {len(b.mu)}")
    covmean = _sqrtm(a.sigma @ b.sigma)
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"the Fréchet distance: the covariances' product is singular, so {_EPS} was added to "
            f"their diagonals (use more samples)",
            RuntimeWarning,
            stacklevel=2,
        )
        offset = _EPS * np.eye(len(a.mu))
        covmean = _sqrtm((a.sigma + offset) @ (b.sigma + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"the Fréchet distance failed: the square root of the covariances' product has a "
                f"large imaginary part ({np.abs(covmean.imag).max():.3g}); the covariances are too "
                f"degenerate, use more samples (FID's protocol uses 10 000)"
            )
        covmean = covmean.real
    diff = a.mu - b.mu
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean))


def fid(
    samples: Tensor | Sampler,
    reference: tuple[np.ndarray, np.ndarray] | Tensor,
    network: nn.Module | None = None,
    n_samples: int | None = None,
    batch_size: int = 50,
    progress: bool = True,
) -> float:
    r"""The FID of samples against reference statistics or images.

    The samples' Inception statistics are computed (:func:`~pyro_vaeflow.metrics.statistics`)
    and compared with :func:`frechet_distance`. FID is biased upwards for few samples: compare
    only numbers computed with the same ``n_samples``, and use 10 000 against the 10 000 test
    images (:func:`~pyro_vaeflow.metrics.reference_statistics`) to compare with published ones.

    Args:
        samples: images ``[N, C, H, W]`` in :math:`[0, 1]` (or ``uint8``), grey or RGB; or a
            sampler, ``samples(n)`` returning ``n`` images, called ``batch_size`` at a time.
        reference: ``(mu, sigma)`` from :func:`~pyro_vaeflow.metrics.reference_statistics`,
            or reference images (as ``samples``).
        network: the feature network; :func:`~pyro_vaeflow.metrics.inception_network` if
            ``None`` (loaded anew: pass one to compute several FIDs).
        n_samples: the number of samples: the first ``n_samples`` of a tensor (all if
            ``None``), or the number to draw from a sampler (required).
        batch_size: the images per forward pass.
        progress: show tqdm progress bars.

    Example:
        >>> network = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
        >>> images = torch.rand(50, 1, 8, 8)
        >>> reference = statistics(images, network, progress=False)
        >>> abs(fid(images, reference, network, progress=False)) < 1e-6
        True
        >>> fid(images / 2, reference, network, progress=False) > 0.1
        True
    """
    if not isinstance(reference, Tensor):
        reference = _check_statistics(reference, "reference")
    network = inception_network() if network is None else network
    if isinstance(reference, Tensor):
        reference = statistics(reference, network, batch_size=batch_size, progress=progress)
    return frechet_distance(
        statistics(samples, network, n_samples, batch_size, progress), reference
    )
