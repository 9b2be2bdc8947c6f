r"""Reference statistics of a dataset, cached on disk by dataset, size and Inception weights."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import Tensor, nn

from pyro_vaeflow.files import atomic_write
from pyro_vaeflow.metrics.features import Statistics, statistics
from pyro_vaeflow.metrics.inception import inception_network, weights_hash
from pyro_vaeflow.validation import check_int

__all__ = ["default_cache_dir", "reference_statistics"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def default_cache_dir() -> Path:
    r"""Where cached statistics go by default: ``$PYRO_VAEFLOW_CACHE``, else
    ``$XDG_CACHE_HOME/pyro_vaeflow``, else ``~/.cache/pyro_vaeflow``.

    Example:
        >>> default_cache_dir().is_absolute()
        True
    """
    if os.environ.get("PYRO_VAEFLOW_CACHE"):
        return Path(os.environ["PYRO_VAEFLOW_CACHE"]).expanduser().absolute()
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root).expanduser().absolute() / "pyro_vaeflow"


def _read(path: Path, n: int, hash_: str) -> Statistics:
    # The cached statistics, or ValueError naming what is wrong with the file.
    try:
        # Opened here: np.load leaks its own handle when the file is not a zip.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as file:
            mu, sigma = file["mu"], file["sigma"]
            found_n, found_hash = int(file["n"]), str(file["weights_hash"])
    except Exception as error:
        raise ValueError(f"unreadable ({error!r})") from error
    if found_n != n or found_hash != hash_:
        raise ValueError(f"made from {found_n} images with weights {found_hash[:16]}")
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"mu and sigma of shapes {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError("non-finite values")
    return Statistics(mu.astype(np.float64), sigma.astype(np.float64))


def _write(path: Path, stats: Statistics, n: int, hash_: str) -> None:
    # Atomically: a file is either complete or absent, even if two processes race.
    def write(stream) -> None:
        np.savez(stream, mu=stats.mu, sigma=stats.sigma, n=n, weights_hash=hash_)

    atomic_write(path, write)


def reference_statistics(
    name: str,
    images: Tensor | Callable[[], Tensor],
    network: nn.Module | None = None,
    n_images: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 50,
    progress: bool = True,
) -> Statistics:
    r"""Inception statistics of reference images (e.g. the test set), cached on disk.

    The file is ``<cache_dir>/<name>-<n_images>-<hash>.npz``, where ``hash`` starts the
    network's ``weights_hash`` (:func:`~pyro_vaeflow.metrics.weights_hash`): other weights or
    another number of images give another file. It holds ``mu`` and ``sigma`` as pytorch-fid's
    ``.npz`` statistics do, plus ``n`` and ``weights_hash``, and is read without pickles. A
    corrupt or mismatched file is recomputed with a warning, then replaced atomically.

    On Fashion-MNIST's 10 000 test images this takes about 20 minutes on 2 CPU cores, once.

    Args:
        name: names the images in the file name, e.g. ``"fashion-mnist-test"``
            (letters, digits, ``.``, ``_``, ``-``).
        images: ``[N, C, H, W]``, ``uint8`` pixels or floats in :math:`[0, 1]`; or a function
            that loads them, called only if the cache misses (or to count them if
            ``n_images`` is ``None``).
        network: as for :func:`~pyro_vaeflow.metrics.activations`;
            :func:`~pyro_vaeflow.metrics.inception_network` if ``None``. A network without a
            ``weights_hash`` attribute is hashed with :func:`~pyro_vaeflow.metrics.weights_hash`.
        n_images: use the first ``n_images`` images; all if ``None``.
        cache_dir: the folder of the files; ``default_cache_dir() / "fid"`` if ``None``.
        batch_size: the images per forward pass.
        progress: show a tqdm progress bar.

    Raises:
        ValueError, TypeError: naming a bad name, bad images or too few of them.

    Example:
        >>> import tempfile
        >>> network = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
        >>> loads = []
        >>> def load():
        ...     loads.append(1)
        ...     return torch.randint(0, 256, (30, 1, 28, 28), dtype=torch.uint8)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     first = reference_statistics("noise", load, network, 20, folder, progress=False)
        ...     again = reference_statistics("noise", load, network, 20, folder)  # read back
        ...     names = [path.name[:9] for path in Path(folder).iterdir()]
        >>> names, len(loads), bool((again.sigma == first.sigma).all()), first.mu.shape
        (['noise-20-'], 1, True, (12,))
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name must be letters, digits, '.', '_' and '-', got {name!r}")
    if n_images is None:
        images = images() if callable(images) and not isinstance(images, Tensor) else images
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a tensor [N, C, H, W], got {type(images).__name__}")
        n_images = len(images)
    check_int("n_images", n_images, low=2)  # a covariance needs two
    network = inception_network() if network is None else network
    hash_ = getattr(network, "weights_hash", None) or weights_hash(network)
    folder = default_cache_dir() / "fid" if cache_dir is None else Path(cache_dir)
    path = folder / f"{name}-{n_images}-{hash_[:16]}.npz"
    if path.exists():
        try:
            return _read(path, n_images, hash_)
        except ValueError as error:
            warnings.warn(f"{path}: ignoring a bad cache file ({error}); recomputing", stacklevel=2)
    if callable(images) and not isinstance(images, Tensor):
        images = images()
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a tensor [N, C, H, W], got {type(images).__name__}")
    stats = statistics(images, network, n_images, batch_size, progress)
    try:
        _write(path, stats, n_images, hash_)
    except OSError as error:
        warnings.warn(f"could not cache the statistics in {path}: {error}", stacklevel=2)
    return stats
