r"""Safe file writes: a reader (or a run stopped mid-write) sees the old file or the new one,
never half of one; a full disk or an I/O error leaves the old file as it was and says so.
Every file the package writes goes through :func:`atomic_write` or :func:`append_line`."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from pyro_vaeflow import faults

__all__ = ["TEMPORARY_SUFFIX", "WriteError", "append_line", "atomic_write", "write_json"]

#: The suffix of :func:`atomic_write`'s temporary files (``.<name>.<random>.tmp``), which a
#: process killed in the middle of a write leaves behind.
TEMPORARY_SUFFIX = ".tmp"


class WriteError(OSError):
    """A file could not be written (a full disk, an I/O error); its previous contents are
    intact. ``errno`` is the cause's (e.g. ``errno.ENOSPC``)."""


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[BinaryIO], object],
    verify: Callable[[Path], object] | None = None,
    before_replace: Callable[[], object] | None = None,
) -> Path:
    """Call ``write(stream)`` on a temporary file beside ``path``, sync it, then rename it.

    Missing folders are created, and the file gets the permissions ``open`` would give it. If
    ``write`` or ``verify`` raises (or the disk is full), the temporary file is removed and
    ``path`` is left as it was; an ``OSError`` says which file could not be written.

    Args:
        path: the file.
        write: writes the contents to the binary stream it is given.
        verify: called with the temporary file's path once it is complete and synced, before it
            replaces ``path`` (e.g. to check that it reads back).
        before_replace: called last before the rename (e.g. to keep the previous file).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "sub" / "note.txt"
        >>> atomic_write(path, lambda stream: stream.write(b"hello")).read_text()
        'hello'
    """
    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX
        )
        os.fchmod(handle, 0o666 & ~_umask())  # as open() would make it, not mkstemp's 0600
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            faults.inject(path)
            os.fsync(stream.fileno())
        if verify is not None:
            verify(Path(temporary))
        if before_replace is not None:
            before_replace()
        os.replace(temporary, path)
    except OSError as error:
        raise _write_error(path, error) from error
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
    return path


def append_line(path: str | os.PathLike, line: bytes) -> None:
    """Append ``line`` (and a newline) to ``path``, after a newline if a stop cut the last line
    short. If the write fails (a full disk), the file is truncated back to what it was.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
        >>> append_line(path, b"1"); append_line(path, b"2"); path.read_text()
        '1\\n2\\n'
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as log:
            size = log.seek(0, os.SEEK_END)
            try:
                if size and not _ends_a_line(log):
                    log.write(b"\n")
                log.write(line + b"\n")
                log.flush()
                faults.inject(path)
            except OSError:
                log.truncate(size)
                raise
    except OSError as error:
        raise _write_error(path, error) from error


def _ends_a_line(log: BinaryIO) -> bool:
    log.seek(-1, os.SEEK_END)
    ends = log.read(1) == b"\n"
    log.seek(0, os.SEEK_END)
    return ends


def _write_error(path: Path, error: OSError) -> WriteError:
    """``error``, said of ``path``: which file, why, and that the old one is intact."""
    if isinstance(error, WriteError):  # said once, however many writers it passes through
        return error
    reason = error.strerror or str(error)
    return WriteError(
        error.errno, f"could not write {path} ({reason}); its previous contents are intact"
    )


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
