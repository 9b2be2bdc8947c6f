r"""Fashion-MNIST and MNIST: IDX files from the Debian package, a folder or torchvision."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from pyro_vaeflow.data.idx import read_idx

__all__ = ["FASHION_MNIST_APT", "FASHION_MNIST_DIR", "find_idx", "read_mnist"]

#: Where the Debian package ``dataset-fashion-mnist`` puts the Fashion-MNIST IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: The command that installs them (as root).
FASHION_MNIST_APT = "apt-get update && apt-get install -y dataset-fashion-mnist"

_TORCHVISION_FOLDER = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
_PREFIX = {"train": "train", "test": "t10k"}
_STEM = {"images": "images-idx3-ubyte", "labels": "labels-idx1-ubyte"}


def find_idx(name: str, split: str, kind: str, data_dir: str | os.PathLike | None = None) -> Path:
    r"""Finds the IDX file of a split, without reading it.

    With ``data_dir=None``, Fashion-MNIST is read from the Debian package
    (:data:`FASHION_MNIST_DIR`); MNIST has no default. With a ``data_dir``, the file
    ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` is looked for in ``data_dir`` itself,
    then in torchvision's layout ``data_dir/FashionMNIST/raw`` (``MNIST/raw``), then in
    ``data_dir/raw``. Nothing is ever downloaded.

    Args:
        name: ``"fashion-mnist"`` or ``"mnist"``.
        split: ``"train"`` or ``"test"``.
        kind: ``"images"`` or ``"labels"``.
        data_dir: a folder, or ``None`` for the default.

    Raises:
        FileNotFoundError: naming the Debian package or the folders that were searched.

    Example:
        >>> find_idx("fashion-mnist", "test", "labels").name
        't10k-labels-idx1-ubyte.gz'
    """
    filename = f"{_PREFIX[split]}-{_STEM[kind]}"
    if data_dir is None:
        if name != "fashion-mnist":
            raise FileNotFoundError(
                f"{name} is not embedded and is never downloaded: pass data_dir= a folder with "
                f"its IDX files ({filename}[.gz], ...) or torchvision's layout "
                f"<data_dir>/{_TORCHVISION_FOLDER[name]}/raw/"
            )
        path = FASHION_MNIST_DIR / f"{filename}.gz"
        if not path.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST not found: {path} does not exist. Install the Debian package "
                f"dataset-fashion-mnist (as root: {FASHION_MNIST_APT}), or pass data_dir= a "
                f"folder with the IDX files or torchvision's layout <data_dir>/FashionMNIST/raw/. "
                f"Nothing is downloaded."
            )
        return path
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: data_dir {root} is not a folder")
    folders = [root, root / _TORCHVISION_FOLDER[name] / "raw", root / "raw"]
    for folder in folders:
        for candidate in (folder / f"{filename}.gz", folder / filename):
            if candidate.is_file():
                return candidate
    searched = ", ".join(str(folder) for folder in folders)
    raise FileNotFoundError(
        f"{name}: no {filename} or {filename}.gz in {searched}. Expected the IDX files "
        f"(gzipped or plain) or torchvision's layout <data_dir>/{_TORCHVISION_FOLDER[name]}/raw/. "
        f"Nothing is downloaded."
    )


def read_mnist(
    name: str, split: str, kind: str, data_dir: str | os.PathLike | None = None
) -> Tensor:
    r"""Reads (Fashion-)MNIST images as ``uint8 [N, 1, 28, 28]`` or labels as ``int64 [N]``.

    Args:
        name: ``"fashion-mnist"`` or ``"mnist"``.
        split: ``"train"`` or ``"test"``.
        kind: ``"images"`` or ``"labels"``.
        data_dir: as for :func:`find_idx`.

    Raises:
        FileNotFoundError: as for :func:`find_idx`.
        ValueError: naming the file, if it is not valid IDX (see :func:`read_idx`), does not
            hold ``uint8`` images/labels, or holds none.

    Example:
        >>> read_mnist("fashion-mnist", "test", "images").shape
        torch.Size([10000, 1, 28, 28])
    """
    path = find_idx(name, split, kind, data_dir)
    data = read_idx(path)
    ndim = 3 if kind == "images" else 1
    if data.dtype != torch.uint8 or data.dim() != ndim:
        layout = "[N, H, W]" if kind == "images" else "[N]"
        raise ValueError(
            f"{path}: expected uint8 {kind} {layout}, found {data.dtype} data of shape "
            f"{tuple(data.shape)}"
        )
    if len(data) == 0:
        raise ValueError(
            f"{path}: holds no {kind} (its header gives the shape {tuple(data.shape)})"
        )
    return data.unsqueeze(1) if kind == "images" else data.long()
