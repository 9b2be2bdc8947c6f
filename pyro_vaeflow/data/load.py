r"""One entry point for every dataset: :func:`load_images` and :func:`load_labels`."""

from __future__ import annotations

import os

from torch import Tensor

from pyro_vaeflow.data.cifar import read_cifar10
from pyro_vaeflow.data.folder import read_celeba, read_folder
from pyro_vaeflow.data.mnist import read_mnist

__all__ = ["DATASETS", "load_images", "load_labels"]

#: The dataset names :func:`load_images` knows.
DATASETS = ("celeba", "cifar10", "fashion-mnist", "folder", "mnist")
_SPLITS = ("train", "test")


def _check(name: str, split: str) -> str:
    canonical = name.lower().replace("_", "-")
    canonical = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(canonical, canonical)
    if canonical not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    return canonical


def load_images(
    name: str = "fashion-mnist",
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> Tensor:
    r"""Loads a dataset's images as ``uint8`` pixels ``[N, C, H, W]``, never downloading.

    - ``"fashion-mnist"``: ``[60000, 1, 28, 28]`` (test: 10 000). By default from the Debian
      package ``dataset-fashion-mnist``; else from ``data_dir`` holding the IDX files (gzipped
      or plain) or torchvision's layout ``<data_dir>/FashionMNIST/raw/``.
    - ``"mnist"``: ``[60000, 1, 28, 28]``, from ``data_dir`` as above (``MNIST/raw/``).
    - ``"cifar10"``: ``[50000, 3, 32, 32]``, from ``<data_dir>/cifar-10-batches-py/``.
    - ``"celeba"``: ``[162770, 3, 64, 64]``, from ``<data_dir>/celeba/img_align_celeba/`` and
      ``list_eval_partition.txt``; centre-cropped to 128 × 128, then resized.
    - ``"folder"``: every image under ``<data_dir>/<split>/`` (or ``data_dir``), sorted.

    Missing data raise :class:`FileNotFoundError` naming the Debian package or the folders
    that were searched; corrupt files raise :class:`ValueError` naming the file and the problem.

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``; hold out a validation set with
            :func:`~pyro_vaeflow.data.train_val_split`.
        data_dir: the folder holding the data; ``None`` for the embedded Fashion-MNIST.
        image_size: for ``"celeba"`` (default 64) and ``"folder"`` (default: keep the size),
            the side of the square images; other datasets keep their own size.

    Example:
        >>> images = load_images("fashion-mnist", "test")
        >>> images.shape, images.dtype
        (torch.Size([10000, 1, 28, 28]), torch.uint8)
    """
    name = _check(name, split)
    if image_size is not None and name not in ("celeba", "folder"):
        raise ValueError(f"image_size applies to 'celeba' and 'folder' only, not to {name!r}")
    if name in ("fashion-mnist", "mnist"):
        return read_mnist(name, split, "images", data_dir)
    if name == "cifar10":
        return read_cifar10(split, "images", data_dir)
    if name == "celeba":
        return read_celeba(split, data_dir, 64 if image_size is None else image_size)
    return read_folder(split, "images", data_dir, image_size)


def load_labels(
    name: str = "fashion-mnist", split: str = "train", data_dir: str | os.PathLike | None = None
) -> Tensor:
    r"""Loads the class labels (``int64 [N]``) that go with :func:`load_images`.

    For ``"folder"`` the label is the index of the image's top-level subfolder, as in
    torchvision's ``ImageFolder``. CelebA has attributes, not classes, so has no labels here.

    Args:
        name: one of :data:`DATASETS` but ``"celeba"``.
        split: ``"train"`` or ``"test"``.
        data_dir: as for :func:`load_images`.

    Example:
        >>> labels = load_labels("fashion-mnist", "test")
        >>> labels.shape, labels.unique().tolist()
        (torch.Size([10000]), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """
    name = _check(name, split)
    if name in ("fashion-mnist", "mnist"):
        return read_mnist(name, split, "labels", data_dir)
    if name == "cifar10":
        return read_cifar10(split, "labels", data_dir)
    if name == "celeba":
        raise ValueError("celeba has attributes, not class labels; load_labels does not read them")
    return read_folder(split, "labels", data_dir)
