r"""Data parallelism on ``torch.distributed``: who this process is, and what the ranks share.

Every function here works in one process too, where it is the identity (a sum over one rank,
a shard that is the whole batch), so the library calls them unconditionally and behaves
exactly as before when no process group is initialised. A group is initialised by
:func:`init_from_environment` (what ``pyro-vaeflow`` does under ``torchrun``) or by the user's
own :func:`torch.distributed.init_process_group`.

Example:
    >>> rank(), world_size(), is_main()
    (0, 1, True)
    >>> shard(torch.arange(5)).tolist()
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "all_max",
    "all_sum",
    "any_rank",
    "barrier",
    "broadcast",
    "gather_cat",
    "gather_objects",
    "gather_to_main",
    "init_from_environment",
    "is_main",
    "local",
    "mean_and_std",
    "on_main",
    "process_group",
    "rank",
    "rank_seed",
    "shard",
    "shard_bounds",
    "world_size",
]

T = TypeVar("T")


_local = 0  # the depth of local() blocks


def _active() -> bool:
    if _local:
        return False
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextmanager
def local() -> Iterator[None]:
    """Within the block this process acts alone, as without a process group: no collective is
    made and shards are whole. For work that one rank does by itself, such as the figures or
    the sample grid that rank 0 draws (an ActNorm that initialises there uses its own batch)."""
    global _local
    _local += 1
    try:
        yield
    finally:
        _local -= 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes files and prints."""
    return rank() == 0


def init_from_environment(device: str | torch.device = "cpu") -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) this initialises
    :mod:`torch.distributed` with NCCL for CUDA tensors (each rank on ``cuda:LOCAL_RANK``) and
    gloo for CPU tensors, or gloo alone for ``device="cpu"``, and sets each CPU process's
    threads to ``OMP_NUM_THREADS`` (``torchrun`` sets it to 1 for several processes unless you
    set it) or, where it is not set, to the machine's cores over its processes. Without
    ``torchrun`` it does nothing.

    Returns:
        The device this process uses.
    """
    device = torch.device(device)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or dist.is_initialized():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("cpu:gloo,cuda:nccl")  # small CPU reductions go through gloo
    else:
        dist.init_process_group("gloo")
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads = os.environ.get("OMP_NUM_THREADS")
        torch.set_num_threads(
            int(threads) if threads else max(1, (os.cpu_count() or 1) // local_size)
        )
    return device


@contextmanager
def process_group(device: str | torch.device = "cpu") -> Iterator[torch.device]:
    """:func:`init_from_environment` for the ``with`` block, yielding the device; the group it
    made is destroyed on exit. Without ``torchrun`` it only yields ``device``."""
    made = not dist.is_initialized()
    device = init_from_environment(device)
    try:
        yield device
    finally:
        if made and dist.is_initialized():
            gc.collect()  # free what still holds the group's work first, or gloo may abort at exit
            dist.destroy_process_group()


def rank_seed(seed: int, epoch: int = 0) -> int:
    """The seed of this rank's random stream: ``seed`` itself on rank 0 of a run started at
    epoch 0 (so one process draws as it always has), a hash of ``(seed, epoch, rank)``
    otherwise (a resume with another number of processes re-derives every stream from it).

    Example:
        >>> rank_seed(7)
        7
    """
    if rank() == 0 and epoch == 0:
        return seed
    digest = hashlib.sha256(f"{seed}/{epoch}/{rank()}".encode()).digest()
    return int.from_bytes(digest[:4], "little")  # numpy seeds are 32-bit


def shard_bounds(n: int) -> tuple[int, int]:
    """``[start, end)`` of this rank's contiguous share of ``n`` items (near-equal shares, in
    rank order, as :func:`torch.tensor_split` splits).

    Example:
        >>> shard_bounds(10)
        (0, 10)
    """
    size, index = world_size(), rank()
    base, extra = divmod(n, size)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


def shard(x: Tensor) -> Tensor:
    """This rank's contiguous share of a global batch ``x`` (along dimension 0)."""
    start, end = shard_bounds(len(x))
    return x[start:end]


def all_sum(value: Tensor | float) -> Tensor | float:
    """The sum over the ranks of ``value`` (a tensor, or a number, summed in float64), on
    every rank."""
    if not _active():
        return value
    if isinstance(value, Tensor):
        tensor = value.detach().clone()
    else:
        tensor = torch.tensor(float(value), dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor if isinstance(value, Tensor) else float(tensor)


def all_max(values: Sequence[int]) -> list[int]:
    """The element-wise maximum over the ranks of ``values`` (integers), on every rank.

    Example:
        >>> all_max([0, 15])
        [0, 15]
    """
    if not _active():
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (one decision for all of them)."""
    return bool(all_sum(float(flag)) > 0)


def broadcast(value: T) -> T:
    """Rank 0's ``value`` (any picklable object), on every rank."""
    if not _active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: T) -> list[T]:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
    if not _active():
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def gather_to_main(value: T) -> list[T] | None:
    """Every rank's ``value`` in rank order on rank 0 (``None`` on the others)."""
    if not _active():
        return [value]
    values: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(value, values, dst=0)
    return values


def on_main(function: Callable[[], T]) -> T:
    """``function()`` run on rank 0, its result (or its exception) on every rank: the others
    do not wait forever for a rank 0 that failed."""
    outcome: tuple[bool, Any] = (True, None)
    if is_main():
        try:
            outcome = (True, function())
        except Exception as error:  # handed to every rank, then raised
            outcome = (False, error)
    ok, value = broadcast(outcome)
    if not ok:
        raise value
    return value


def gather_cat(tensor: Tensor) -> Tensor:
    """The ranks' ``tensor`` (of any length along dimension 0) concatenated in rank order, on
    every rank: the inverse of :func:`shard`."""
    if not _active():
        return tensor
    return torch.cat(gather_objects(tensor.detach().cpu())).to(tensor.device)


def barrier() -> None:
    """Wait until every rank gets here."""
    if _active():
        dist.barrier()


def mean_and_std(h: Tensor, dims: list[int]) -> tuple[Tensor, Tensor]:
    """The mean and the (biased) standard deviation of ``h`` over ``dims``, over the ranks'
    ``h`` together when a process group is initialised (two reductions: the sum, then the
    squared deviations from the global mean); torch's ``mean``/``std`` in one process."""
    if not _active():
        return h.mean(dim=dims, keepdim=True), h.std(dim=dims, unbiased=False, keepdim=True)
    total = all_sum(h.sum(dim=dims, keepdim=True))
    count = all_sum(torch.tensor(h.numel() / h.shape[-3], dtype=h.dtype, device=h.device))
    mean = total / count
    squares = all_sum(((h - mean) ** 2).sum(dim=dims, keepdim=True))
    return mean, (squares / count).sqrt()
