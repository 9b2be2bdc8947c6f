r"""Atomic file writes: a reader (or a run stopped mid-write) sees the old file or the new one,
never half of one. Every file the package writes goes through :func:`atomic_write`."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "write_json"]


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(stream)`` on a temporary file beside ``path``, sync it, then rename it.

    Missing folders are created, and the file gets the permissions ``open`` would give it. If
    ``write`` raises (or the disk is full), the temporary file is removed and ``path`` is left as
    it was.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "sub" / "note.txt"
        >>> atomic_write(path, lambda stream: stream.write(b"hello")).read_text()
        'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # as open() would make it, not mkstemp's 0600
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(path: str | os.PathLike, data: object) -> Path:
    """Write ``data`` as indented JSON, atomically (see :func:`atomic_write`).

    Example:
        >>> import tempfile, pathlib
        >>> path = write_json(pathlib.Path(tempfile.mkdtemp()) / "a.json", {"epochs": 3})
        >>> json.loads(path.read_text())
        {'epochs': 3}
    """
    text = json.dumps(data, indent=2) + "\n"
    return atomic_write(path, lambda stream: stream.write(text.encode()))
