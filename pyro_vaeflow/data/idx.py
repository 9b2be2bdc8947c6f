r"""The IDX file format of (Fashion-)MNIST, gzipped or plain."""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np
import torch
from torch import Tensor

__all__ = ["read_idx"]

# IDX type codes → big-endian numpy dtypes.
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: str | os.PathLike) -> tuple[bytes, bool]:
    """The bytes of ``path``, gunzipped if they start with gzip's magic number, and whether
    they were."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise
    except OSError as error:  # permission denied, a folder, an I/O error
        raise ValueError(f"{path}: cannot be read ({error.strerror or error})") from error
    if not data.startswith(_GZIP_MAGIC):
        return data, False
    try:
        return gzip.decompress(data), True
    except (EOFError, OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        reason = (
            "the compressed data end before the end-of-stream marker (cut short?)"
            if isinstance(error, EOFError)
            else str(error)
        )
        raise ValueError(f"{path}: corrupt or truncated gzip file: {reason}") from error


def _magic_problem(magic: bytes) -> str | None:
    """What is wrong with an IDX magic number ``00 00 <type> <ndim>``, or ``None``."""
    if magic[:2] != b"\x00\x00":
        return "an IDX file starts with two zero bytes"
    if magic[2] not in _DTYPES:
        codes = ", ".join(f"{code:02x}" for code in _DTYPES)
        return f"unknown type code {magic[2]:02x} (expected one of {codes})"
    if magic[3] == 0:
        return "0 dimensions"
    return None


def read_idx(path: str | os.PathLike) -> Tensor:
    r"""Reads an IDX file, gzipped or plain (told apart by content, not by name).

    An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim`` big-endian
    ``uint32`` sizes, then the data in C order, big-endian. Every part is checked: the magic
    number, the type code, the number of dimensions and the exact byte length.

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        A tensor of the file's shape and type (``uint8`` for (Fashion-)MNIST).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file and what is wrong, if it cannot be read (e.g. permission
            denied), is a corrupt or truncated gzip file, or is not a valid IDX file: a bad
            magic number, an unknown type code, or data shorter or longer than the
            :math:`\prod_i n_i` values of the header's sizes :math:`n_1, \dots, n_d`.

    Example:
        >>> labels = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
        >>> labels.shape, labels.dtype
        (torch.Size([10000]), torch.uint8)
    """
    data, compressed = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file: {len(data)} bytes, shorter than the header")
    problem = _magic_problem(data[:4])
    if problem is not None:
        plain_gz = not compressed and str(path).endswith(".gz")
        named_gz = "; named .gz but not gzip-compressed" if plain_gz else ""
        raise ValueError(
            f"{path}: not an IDX file: bad magic number 0x{data[:4].hex()}: {problem}{named_gz}"
        )
    dtype, ndim = _DTYPES[data[2]], data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ValueError(
            f"{path}: truncated IDX header: {ndim} dimensions need {offset} bytes, "
            f"the file has {len(data)}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - offset
    if found != expected:
        problem = "truncated" if found < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX file {problem}: shape {shape} of {dtype.name} needs {expected} bytes "
            f"of data, found {found}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    # ``astype`` copies into native byte order, so the tensor owns writable memory.
    return torch.from_numpy(array.astype(dtype.newbyteorder("=")))
