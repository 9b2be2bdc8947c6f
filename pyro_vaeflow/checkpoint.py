r"""Checkpoints: written atomically, read without unpickling arbitrary objects; a checkpoint
that replaces another is verified first, and the one it replaces is kept.

A kept checkpoint lives beside its file as ``<name>.prev``, and ``<name>.sha256`` records the
SHA-256 of both when they were written. :func:`load_good_checkpoint` falls back to the
previous file, with a warning, when the newest is missing, truncated, corrupt or does not
match its recorded hash.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path

import torch

from pyro_vaeflow.files import atomic_write

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "load_good_checkpoint",
    "previous_path",
    "save_checkpoint",
]

#: How torch.load(weights_only=True) names a refused object, across torch versions.
_UNSAFE = ("unsupported global", "unsupported class")


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, unsafe or of the wrong kind."""


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def previous_path(path: str | os.PathLike) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint that ``path`` replaced."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


def _hashes_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(payload: dict, path: str | os.PathLike, *, keep_previous: bool = False) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, then rename.

    A crash or a full disk while writing leaves the previous checkpoint intact. The payload must
    hold only tensors, numbers, strings, and lists/tuples/dicts of them, so that it can be read
    back with ``weights_only=True``.

    With ``keep_previous``, the new file must read back before it replaces the old one, the old
    one is kept as ``<name>.prev`` (one that no longer matches its recorded hash is moved aside
    to ``<name>.corrupt`` instead, not kept), and the SHA-256 of both is recorded in
    ``<name>.sha256``, for :func:`load_good_checkpoint`.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.ckpt"
        >>> save_checkpoint({"kind": "demo", "step": 3}, path).name
        'run.ckpt'
        >>> _ = save_checkpoint({"kind": "demo", "step": 4}, path, keep_previous=True)
        >>> load_checkpoint(previous_path(path))["step"], load_checkpoint(path)["step"]
        (3, 4)
    """
    path = Path(path)
    if not keep_previous:
        return atomic_write(path, lambda stream: torch.save(payload, stream))
    digests: list[str] = []

    def verify(temporary: Path) -> None:
        load_checkpoint(temporary)  # it reads back
        digests.append(_sha256(temporary))

    def keep_the_previous() -> None:
        kept = _keep_previous(path)
        atomic_write(_hashes_path(path), lambda stream: stream.write(_lines([*kept, *digests])))

    return atomic_write(path, lambda stream: torch.save(payload, stream), verify, keep_the_previous)


def _keep_previous(path: Path) -> list[str]:
    """Keep the checkpoint at ``path`` as ``<name>.prev`` if it is good; the hashes of the good
    files that remain (the previous one's, where there is one)."""
    previous, recorded = previous_path(path), _recorded(path)
    if path.is_file():
        digest = _sha256(path)
        if digest in recorded or (not recorded and _loads(path)):
            _link_or_copy(path, previous)
            return [digest]
        corrupt = path.with_name(path.name + ".corrupt")
        os.replace(path, corrupt)
        warnings.warn(
            f"{path} did not match the hash recorded when it was written; moved it aside to "
            f"{corrupt.name} and kept {previous.name}",
            stacklevel=4,
        )
    kept = _sha256(previous) if previous.is_file() else None
    return [kept] if kept in recorded else []


def _link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` a copy of ``source`` (a hard link where the file system has them),
    atomically."""
    temporary = target.with_name(f".{target.name}.link.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lines(digests: list[str]) -> bytes:
    return "".join(f"{digest}\n" for digest in dict.fromkeys(digests)).encode()


def _recorded(path: Path) -> set[str]:
    """The hashes recorded for ``path`` and its previous file (none: no record, or unreadable)."""
    try:
        return set(_hashes_path(path).read_text().split())
    except (OSError, UnicodeDecodeError):
        return set()


def _loads(path: Path) -> bool:
    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    return True


def load_good_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict:
    """The checkpoint at ``path``, or the previous one that :func:`save_checkpoint` kept when
    the newest is missing, unreadable, or does not match the hash recorded when it was written.

    Falling back warns, naming the bad file and what is wrong with it; when neither file is
    good, a :class:`CheckpointError` names both. Nothing is moved or deleted here.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.ckpt"
        >>> for step in (1, 2):
        ...     _ = save_checkpoint({"kind": "demo", "step": step}, path, keep_previous=True)
        >>> _ = path.write_bytes(path.read_bytes()[:100])  # truncated
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     load_good_checkpoint(path)["step"]
        1
        >>> "run.ckpt" in str(caught[0].message)
        True
    """
    path = Path(path)
    recorded, problems = _recorded(path), []
    for candidate in (path, previous_path(path)):
        if not candidate.is_file():
            problems.append(f"{candidate} is missing")
            continue
        try:
            payload = load_checkpoint(candidate, kind)
        except CheckpointError as error:
            problems.append(str(error))
            continue
        if recorded and _sha256(candidate) not in recorded:
            problems.append(
                f"{candidate} is corrupt: its SHA-256 is not the one recorded when it was written"
            )
            continue
        if problems:
            warnings.warn(
                f"{problems[0]}; resuming from the previous checkpoint {candidate.name} instead",
                stacklevel=2,
            )
        return payload
    raise CheckpointError(f"no good checkpoint: {'; '.join(problems)}")


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
        lines = str(error).splitlines()
        unsafe = [line for line in lines if any(word in line.lower() for word in _UNSAFE)]
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
