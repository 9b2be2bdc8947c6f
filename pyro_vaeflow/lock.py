r"""One writer per run directory: an advisory lock that ``train`` and ``evaluate`` hold.

The lock is :func:`fcntl.flock` on ``<run_dir>/run.lock``, which names its holder (PID, host,
start time and command). The kernel releases it when the process ends, however it ends, so a
run killed with ``kill -9`` can be resumed at once. Another process that asks for it gets a
:class:`RunLockedError` naming the holder, before it has written anything. Under a
:mod:`torch.distributed` process group rank 0 holds it for all the ranks.

``flock`` locks are advisory: they stop other ``pyro_vaeflow`` processes, not other programs,
and on some network file systems they only work between processes on the same host.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyro_vaeflow.distributed import broadcast, is_main
from pyro_vaeflow.files import TEMPORARY_SUFFIX

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "hold_run_lock"]

#: The lock file's name in a run directory.
LOCK_NAME = "run.lock"


_HELD: dict[Path, list[int]] = {}  # this process's locks: path -> [descriptor, depth]


class RunLockedError(RuntimeError):
    """Another process holds the run directory's lock."""


class RunLock:
    """The lock of one run directory; reentrant within a process (``train --evaluate`` takes it
    twice).

    Taking it the first time also removes the temporary files that a process killed in the
    middle of a write left behind (``.<name>.<random>.tmp``): with the lock held, no other
    writer can own them.

    Args:
        directory: the run directory (created if missing).

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with RunLock(folder):
        ...     with RunLock(folder):  # the same process may take it again
        ...         pass
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.path = Path(directory) / LOCK_NAME

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunLockedError` naming its holder."""
        key = self.path.resolve()
        if key in _HELD:
            _HELD[key][1] += 1
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 4096).decode(errors="replace").strip()
            os.close(descriptor)
            raise RunLockedError(
                f"{self.path.parent} is in use by another process ({holder or 'unknown'}); "
                "wait for it to finish or stop it, or use another run directory"
            ) from None
        os.ftruncate(descriptor, 0)
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        holder = f"PID {os.getpid()} on host {socket.gethostname()}, since {started}: {command}"
        os.pwrite(descriptor, holder.encode() + b"\n", 0)
        _HELD[key] = [descriptor, 1]
        _remove_temporaries(self.path.parent)

    def release(self) -> None:
        """Give the lock back (the last of nested acquisitions unlocks)."""
        key = self.path.resolve()
        entry = _HELD[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[key]
            os.close(entry[0])  # closing the descriptor unlocks it


def _remove_temporaries(directory: Path) -> None:
    for folder in (directory, directory / "figures"):
        for leftover in folder.glob(f".*{TEMPORARY_SUFFIX}"):
            leftover.unlink(missing_ok=True)


@contextmanager
def hold_run_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold ``directory``'s :class:`RunLock` for the block; under a process group rank 0 holds
    it, and every rank raises its :class:`RunLockedError` if it is taken."""
    lock, refusal = RunLock(directory), None
    if is_main():
        try:
            lock.acquire()
        except RunLockedError as error:
            refusal = str(error)
    refusal = broadcast(refusal)
    if refusal is not None:
        raise RunLockedError(refusal)
    try:
        yield
    finally:
        if is_main():
            lock.release()
