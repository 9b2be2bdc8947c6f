r"""Inception features of images, and their mean and covariance."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pyro_vaeflow.acceleration import device_of
from pyro_vaeflow.interrupt import check_stop
from pyro_vaeflow.validation import check_int

__all__ = ["Statistics", "activations", "check_images", "moments", "statistics"]

#: A batch sampler: ``sampler(n)`` returns ``n`` images ``[n, C, H, W]`` in :math:`[0, 1]`.
Sampler = Callable[[int], Tensor]


class Statistics(NamedTuple):
    r"""The mean ``mu`` ``[D]`` and covariance ``sigma`` ``[D, D]`` of features (``float64``)."""

    mu: np.ndarray
    sigma: np.ndarray


def check_images(images: Tensor, what: str = "images") -> Tensor:
    r"""Checks images ``[N, C, H, W]`` and returns them as floats in :math:`[0, 1]`, RGB.

    ``uint8`` pixels are divided by 255; grey images (``C = 1``) are copied to 3 channels.

    Args:
        images: ``uint8`` pixels or floats in :math:`[0, 1]`, with 1 or 3 channels.
        what: how to name the images in errors.

    Raises:
        TypeError: if ``images`` is not a real or ``uint8`` tensor.
        ValueError: on a wrong shape or number of channels, NaNs or values outside [0, 1].

    Example:
        >>> check_images(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)).shape
        torch.Size([2, 3, 4, 4])
    """
    if not isinstance(images, Tensor) or not (
        images.is_floating_point() or images.dtype == torch.uint8
    ):
        found = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"{what} must be a float or uint8 tensor [N, C, H, W], got {found}")
    if images.dim() != 4 or images.shape[1] not in (1, 3) or 0 in images.shape[2:]:
        raise ValueError(
            f"{what} must have shape [N, C, H, W] with C = 1 (grey) or 3 (RGB), got "
            f"{tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        images = images.float() / 255
    else:
        bad = (~torch.isfinite(images)).sum().item()
        if bad:
            raise ValueError(f"{what} hold {bad} NaN or infinite values")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError(
                f"{what} must lie in [0, 1], found values in [{images.min().item():.4g}, "
                f"{images.max().item():.4g}]; clamp model samples with .clamp(0, 1) first"
            )
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _features(batches: Iterator[Tensor], n: int, network: nn.Module, progress: bool) -> np.ndarray:
    # Runs the network over batches of images; returns float64 features [n, D].
    device, training = device_of(network), network.training
    chunks, done = [], 0
    network.eval()
    try:
        with (
            torch.no_grad(),
            tqdm(total=n, desc="FID features", unit="img", disable=not progress) as bar,
        ):
            for batch in batches:
                check_stop(f"the features of {done} images")  # a SIGTERM ends it here
                x = check_images(batch, f"images {done}..{done + len(batch) - 1}")
                with torch.inference_mode():  # only the network: a sampler may need autograd
                    out = network(x.to(device=device, dtype=torch.float32))
                out = out[0] if isinstance(out, list | tuple) else out
                chunks.append(out.flatten(1).double().cpu().numpy())
                done += len(batch)
                bar.update(len(batch))
    finally:
        network.train(training)
    return np.concatenate(chunks)


def activations(
    images: Tensor | Sampler,
    network: nn.Module,
    n_images: int | None = None,
    batch_size: int = 50,
    progress: bool = True,
) -> np.ndarray:
    r"""The features of images under a network, e.g. Inception's pool3 (``[N, 2048]``).

    The images go through the network ``batch_size`` at a time, in ``eval()`` mode and
    without gradients, on the network's device. Grey images are copied to 3 channels, as in
    the usual FID protocol for (Fashion-)MNIST;
    :func:`~pyro_vaeflow.metrics.inception_network` resizes them to 299 × 299 itself.

    Args:
        images: ``[N, C, H, W]``, ``uint8`` pixels or floats in :math:`[0, 1]`, with
            ``C = 1`` or 3; or a sampler, ``images(n)`` returning ``n`` such images.
        network: maps RGB images ``[B, 3, H, W]`` in :math:`[0, 1]` to features ``[B, D]``
            (or to pytorch-fid's list of ``[B, D, 1, 1]``), e.g.
            :func:`~pyro_vaeflow.metrics.inception_network`.
        n_images: how many images to use: the first ``n_images`` of a tensor (all if
            ``None``), or the number to draw from a sampler (required).
        batch_size: the images per forward pass (and per call of a sampler).
        progress: show a tqdm progress bar.

    Returns:
        The features, ``float64 [N, D]``.

    Raises:
        TypeError, ValueError: naming the problem with the images or the arguments.

    Example:
        >>> network = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
        >>> grey = torch.rand(5, 1, 28, 28)
        >>> activations(grey, network, batch_size=2, progress=False).shape
        (5, 12)
        >>> def sampler(n):
        ...     return torch.rand(n, 3, 8, 8)
        >>> activations(sampler, network, n_images=3, progress=False).shape
        (3, 12)
    """
    check_int("batch_size", batch_size)
    if n_images is not None:
        check_int("n_images", n_images)
    if isinstance(images, Tensor):
        check_images(images[:0])
        if len(images) == 0:
            raise ValueError("no images were given (a tensor of length 0)")
        n = len(images) if n_images is None else n_images
        if n > len(images):
            raise ValueError(f"asked for {n} images, but only {len(images)} were given")
        batches = (images[i : i + batch_size] for i in range(0, n, batch_size))
    elif callable(images):
        if n_images is None:
            raise ValueError("n_images is required when images is a sampler")
        n = n_images
        batches = (_draw(images, min(batch_size, n - i)) for i in range(0, n, batch_size))
    else:
        raise TypeError(f"images must be a tensor or a sampler, got {type(images).__name__}")
    return _features(batches, n, network, progress)


def _draw(sampler: Sampler, n: int) -> Tensor:
    batch = sampler(n)
    if not isinstance(batch, Tensor) or len(batch) != n:
        found = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
        raise ValueError(f"the sampler was asked for {n} images [n, C, H, W] but gave {found}")
    return batch


def moments(features: np.ndarray) -> Statistics:
    r"""The mean and (unbiased) covariance of features ``[N, D]``, as pytorch-fid computes them.

    .. math:: \mu = \frac{1}{N} \sum_n f_n, \qquad
              \Sigma = \frac{1}{N - 1} \sum_n (f_n - \mu)(f_n - \mu)^\top .

    Args:
        features: ``[N, D]`` with :math:`N \ge 2`.

    Raises:
        ValueError: if there are fewer than 2 rows, or non-finite values.

    Example:
        >>> mu, sigma = moments(np.array([[0.0, 1.0], [2.0, 3.0]]))
        >>> mu.tolist(), sigma.tolist()
        ([1.0, 2.0], [[2.0, 2.0], [2.0, 2.0]])
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must have shape [N, D], got {features.shape}")
    if len(features) < 2:
        raise ValueError(
            f"a covariance needs at least 2 images, got {len(features)} (FID needs thousands: "
            f"10 000 is the usual protocol)"
        )
    if not np.isfinite(features).all():
        raise ValueError("the features hold NaN or infinite values")
    return Statistics(features.mean(axis=0), np.cov(features, rowvar=False))


def statistics(
    images: Tensor | Sampler,
    network: nn.Module,
    n_images: int | None = None,
    batch_size: int = 50,
    progress: bool = True,
) -> Statistics:
    r"""The mean and covariance of the images' features: :func:`activations`, then :func:`moments`.

    Args:
        images: as for :func:`activations`.
        network: as for :func:`activations`.
        n_images: as for :func:`activations`; at least 2.
        batch_size: as for :func:`activations`.
        progress: show a tqdm progress bar.

    Example:
        >>> network = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> mu, sigma = statistics(torch.rand(10, 3, 8, 8), network, progress=False)
        >>> mu.shape, sigma.shape
        ((3,), (3, 3))
    """
    n = len(images) if n_images is None and isinstance(images, Tensor) else n_images
    if isinstance(n, int) and n < 2:
        raise ValueError(f"a covariance needs at least 2 images, got {n}")
    return moments(activations(images, network, n_images, batch_size, progress))
