r"""Fault injection for the writers: a full disk, an I/O error, or a pause inside a write.

Every file the package writes passes through :func:`inject` between writing its bytes and making
them durable (:func:`~pyro_vaeflow.files.atomic_write`, and the appends to ``metrics.jsonl``).
Normally it does nothing. The environment variable ``PYRO_VAEFLOW_FAULT`` turns it into a fault,
so that a test (or a user checking a cluster's set-up) can see what a run does when a disk
fills up or a process is killed in the middle of a write:

.. code-block:: text

    PYRO_VAEFLOW_FAULT=ACTION:PATTERN[:N][,ACTION:PATTERN[:N]...]

``ACTION`` is ``enospc`` (raise ``OSError(ENOSPC)``, "No space left on device"), ``eio``
(``OSError(EIO)``) or ``pause`` (sleep ``N`` seconds, so that a test can kill the process
while the write is under way); ``PATTERN`` is matched (:func:`fnmatch.fnmatch`) against the
file's name, e.g. ``vae.ckpt``, ``*.ckpt``, ``metrics.jsonl`` or ``*.png``. For ``enospc`` and
``eio``, ``N`` is the number of matching writes that succeed first (default 0), counted from
the moment the variable took its present value.

Example:
    >>> import errno, os, pathlib, tempfile
    >>> from pyro_vaeflow.files import write_json
    >>> os.environ["PYRO_VAEFLOW_FAULT"] = "enospc:*.json"
    >>> try:
    ...     write_json(pathlib.Path(tempfile.mkdtemp()) / "a.json", {})
    ... except OSError as error:
    ...     print(errno.errorcode[error.errno], "No space left on device" in str(error))
    ... finally:
    ...     del os.environ["PYRO_VAEFLOW_FAULT"]
    ENOSPC True
"""

from __future__ import annotations

import errno
import os
import time
from fnmatch import fnmatch
from pathlib import Path

__all__ = ["ENVIRONMENT_VARIABLE", "inject"]

#: The environment variable that describes the faults.
ENVIRONMENT_VARIABLE = "PYRO_VAEFLOW_FAULT"

_ERRORS = {"enospc": errno.ENOSPC, "eio": errno.EIO}
_matching_writes: dict[str, int] = {}
_counting: list[str] = [""]  # the value of the variable the counts belong to


def inject(path: str | os.PathLike) -> None:
    """Raise or pause as ``PYRO_VAEFLOW_FAULT`` says for a write of ``path`` (if it says so)."""
    spec = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if spec != _counting[0]:  # a new setting counts afresh
        _counting[0] = spec
        _matching_writes.clear()
    name = Path(path).name
    for fault in filter(None, spec.split(",")):
        action, pattern, count = _parse(fault)
        if not fnmatch(name, pattern):
            continue
        if action == "pause":
            time.sleep(count)
            continue
        seen = _matching_writes.get(fault, 0)
        _matching_writes[fault] = seen + 1
        if seen >= count:
            code = _ERRORS[action]
            raise OSError(code, os.strerror(code), str(path))


def _parse(fault: str) -> tuple[str, str, float]:
    action, _, rest = fault.partition(":")
    pattern, _, count = rest.partition(":")
    if action not in (*_ERRORS, "pause") or not pattern:
        raise ValueError(
            f"{ENVIRONMENT_VARIABLE}={fault!r}: expected ACTION:PATTERN[:N] with ACTION one of "
            "enospc, eio, pause"
        )
    try:
        return action, pattern, float(count or 0)
    except ValueError:
        raise ValueError(f"{ENVIRONMENT_VARIABLE}={fault!r}: N must be a number") from None
