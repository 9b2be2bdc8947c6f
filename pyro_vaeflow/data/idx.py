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


def _read_bytes(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as file:
        data = file.read()
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as error:
        raise ValueError(f"{path}: corrupt or truncated gzip file ({error})") from error


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
        ValueError: if the file is not a valid IDX file (the message says what is wrong).

    Example:
        >>> labels = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
        >>> labels.shape, labels.dtype
        (torch.Size([10000]), torch.uint8)
    """
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file: {len(data)} bytes, shorter than the header")
    if data[:2] != b"\x00\x00" or data[2] not in _DTYPES or data[3] == 0:
        raise ValueError(
            f"{path}: not an IDX file: bad magic number 0x{data[:4].hex()} (expected "
            f"0x0000TTNN with type code TT in {{08, 09, 0b, 0c, 0d, 0e}} and NN >= 1 dimensions)"
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
