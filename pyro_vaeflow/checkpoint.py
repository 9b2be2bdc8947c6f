r"""Checkpoints: written atomically, read without unpickling arbitrary objects."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from pyro_vaeflow.files import atomic_write

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, unsafe or of the wrong kind."""


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def save_checkpoint(payload: dict, path: str | os.PathLike) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, then rename.

    A crash while writing leaves the previous checkpoint intact. The payload must hold only
    tensors, numbers, strings, and lists/tuples/dicts of them, so that it can be read back with
    ``weights_only=True``.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.ckpt"
        >>> save_checkpoint({"kind": "demo", "step": 3}, path).name
        'run.ckpt'
    """
    return atomic_write(path, lambda stream: torch.save(payload, stream))


def load_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``; raise a clear error otherwise.

    A file that would need arbitrary Python objects to unpickle (a malicious or foreign file) is
    refused before any of its code runs, and so are truncated files and payloads whose
    ``"kind"`` is not ``kind``.

    Example:
        >>> import tempfile, pathlib
        >>> path = save_checkpoint({"kind": "demo"}, pathlib.Path(tempfile.mkdtemp()) / "a.ckpt")
        >>> load_checkpoint(path, kind="demo")
        {'kind': 'demo'}
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = [line for line in str(error).splitlines() if "Unsupported global" in line]
        if unsafe:
            raise CheckpointError(
                f"refused to load {path}: it contains Python objects other than tensors and plain "
                f"data, which could run arbitrary code ({unsafe[0].strip()})"
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or foreign)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated): {_first_line(error)}"
        ) from None
    if not isinstance(payload, dict) or "kind" not in payload:
        raise CheckpointError(f"{path} is not a pyro_vaeflow checkpoint")
    if kind is not None and payload["kind"] != kind:
        raise CheckpointError(f"{path} holds a {payload['kind']!r}, expected a {kind!r}")
    return payload
