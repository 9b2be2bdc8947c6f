r"""CIFAR-10 from torchvision's on-disk layout (the python version's pickled batches)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["read_cifar10"]

_FOLDER = "cifar-10-batches-py"
_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _find_folder(split: str, data_dir: str | os.PathLike | None) -> Path:
    hint = (
        f"Expected torchvision's layout <data_dir>/{_FOLDER}/ with data_batch_1..5 and "
        f"test_batch (CIFAR-10's python version). Nothing is downloaded."
    )
    if data_dir is None:
        raise FileNotFoundError(f"cifar10 is not embedded: pass data_dir=. {hint}")
    root = Path(data_dir)
    folders = [root / _FOLDER, root]
    for folder in folders:
        if all((folder / batch).is_file() for batch in _BATCHES[split]):
            return folder
    missing = ", ".join(_BATCHES[split])
    raise FileNotFoundError(f"cifar10: no {missing} in {folders[0]} or {folders[1]}. {hint}")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # The batches are pickles, as torchvision reads them: only open files you trust.
    try:
        with open(path, "rb") as file:
            entry = pickle.load(file, encoding="latin1")
    except OSError as error:  # permission denied, an I/O error
        raise ValueError(f"{path}: cannot be read ({error.strerror or error})") from error
    except Exception as error:  # a corrupt pickle raises errors of many kinds
        raise ValueError(
            f"{path}: not a CIFAR-10 python batch: a corrupt or truncated pickle ({error!r})"
        ) from error
    if not isinstance(entry, dict) or not {"data", "labels"} <= entry.keys():
        found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(
            f"{path}: not a CIFAR-10 python batch: expected a dict with 'data' and 'labels', "
            f"found {found}"
        )
    data, labels = np.asarray(entry["data"]), np.asarray(entry["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{path}: expected uint8 data of shape [N, 3072], found {data.dtype} of shape "
            f"{data.shape}"
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: {len(data)} images but labels of type {labels.dtype} and shape {labels.shape}"
        )
    if len(labels) and not 0 <= labels.min() <= labels.max() <= 9:
        raise ValueError(
            f"{path}: labels must be classes 0..9, found {labels.min()}..{labels.max()}"
        )
    return data, labels


def read_cifar10(split: str, kind: str, data_dir: str | os.PathLike | None) -> Tensor:
    r"""Reads CIFAR-10 images as ``uint8 [N, 3, 32, 32]`` or labels as ``int64 [N]``.

    The folder is ``data_dir/cifar-10-batches-py`` (torchvision's layout) or ``data_dir``
    itself. The batches are pickles: open only files you trust.

    Args:
        split: ``"train"`` (50 000 images) or ``"test"`` (10 000).
        kind: ``"images"`` or ``"labels"``.
        data_dir: the folder.

    Raises:
        FileNotFoundError: naming the folders and files that were expected.
        ValueError: naming the batch and the reason, if it cannot be read, is not a valid
            CIFAR-10 batch (a corrupt or truncated pickle, missing keys, data not ``uint8``
            :math:`N \times 3072`) or has labels outside 0..9.
    """
    folder = _find_folder(split, data_dir)
    batches = [_read_batch(folder / batch) for batch in _BATCHES[split]]
    if kind == "labels":
        return torch.from_numpy(np.concatenate([labels for _, labels in batches])).long()
    data = np.concatenate([data for data, _ in batches])
    return torch.from_numpy(data).view(-1, 3, 32, 32)
