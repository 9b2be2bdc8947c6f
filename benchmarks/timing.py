"""Shared by the benchmark scripts: the common options, the machine and load lines, interleaved
timing, FLOPs, data."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager

import pyro
import torch
from torch.utils.flop_counter import FlopCounterMode

from pyro_vaeflow.data import dequantize, load_images

__all__ = [
    "add_common_options",
    "child_result",
    "count_flops",
    "fashion_mnist",
    "load_average",
    "machine",
    "measure",
    "median_ratio",
    "reported_machine",
]

#: The options that :func:`add_common_options` can add (besides ``--quick``): type and help.
COMMON_OPTIONS = {
    "repeats": (int, "timed repeats, interleaved (the tables show their median)"),
    "warmup": (int, "untimed calls before timing"),
    "min_time": (float, "seconds per timed block"),
    "seed": (int, "the random seed"),
    "device": (str, "where the timed steps run (cpu, cuda)"),
}


def add_common_options(
    parser: argparse.ArgumentParser,
    *,
    quick: str,
    repeats: int | None = None,
    warmup: int | None = None,
    min_time: float | None = None,
    seed: int | None = None,
    device: str | None = None,
    helps: dict[str, str] | None = None,
) -> None:
    """Add ``--quick`` (``quick`` is its help text) and, with their script's defaults,
    ``--repeats``, ``--warmup``, ``--min-time``, ``--seed`` and ``--device``; an option whose
    default is ``None`` is left out. ``helps`` replaces the help text of an option by name."""
    parser.add_argument("--quick", action="store_true", help=quick)
    defaults = {
        "repeats": repeats,
        "warmup": warmup,
        "min_time": min_time,
        "seed": seed,
        "device": device,
    }
    helps = {name: text for name, (_, text) in COMMON_OPTIONS.items()} | (helps or {})
    for name, default in defaults.items():
        if default is not None:
            flag = "--" + name.replace("_", "-")
            parser.add_argument(
                flag, type=COMMON_OPTIONS[name][0], default=default, help=helps[name]
            )


def machine() -> str:
    """One line naming the CPU, the thread count, the GPU if any and the library versions."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = ""
    if torch.cuda.is_available():
        gpu = f", GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return (
        f"{model}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads{gpu}, "
        f"torch {torch.__version__}, pyro-ppl {pyro.__version__}, "
        f"Python {platform.python_version()}"
    )


def load_average() -> str:
    """The 1-minute load average of the machine (other processes slow the timings down)."""
    try:
        with open("/proc/loadavg") as loadavg:
            return loadavg.read().split()[0]
    except OSError:
        return "unknown"


@contextmanager
def reported_machine() -> Iterator[None]:
    """Print the machine and the load before the block, and the load again after it (not after
    an exception)."""
    print(f"Machine: {machine()}")
    print(f"Load average (1 min) at the start: {load_average()}")
    yield
    print(f"\nLoad average (1 min) at the end: {load_average()}")


def measure(
    fns: dict[Hashable, Callable[[], object]], repeats: int, min_time: float, warmup: int
) -> dict[Hashable, list[float]]:
    """Seconds per call of each function, ``repeats`` times, the functions interleaved.

    Each function first runs ``warmup`` times; then each repeat times every function once, over
    as many calls as take about ``min_time`` seconds, in an order rotated from one repeat to the
    next. All the calls of a table are measured in one such loop, so a burst of load from other
    processes on a shared machine spreads over all of them and the medians leave it out.
    """
    numbers = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        start = time.perf_counter()
        fn()
        once = time.perf_counter() - start
        numbers[name] = max(1, math.ceil(min_time / max(once, 1e-9)))
    names = list(fns)
    times: dict[Hashable, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            fn, number = fns[name], numbers[name]
            start = time.perf_counter()
            for _ in range(number):
                fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # a call may return before its GPU work ends
            times[name].append((time.perf_counter() - start) / number)
    return times


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """The median over the repeats of the ratio of two calls timed side by side in each repeat."""
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


def count_flops(fn: Callable[[], object]) -> int:
    """The floating-point operations of one call of ``fn``, by ``torch.utils.flop_counter``.

    The counter knows the matrix products and convolutions (2·M·N·K for a product, and the
    convolution's equivalent, forward and backward); element-wise work is not counted.
    """
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def fashion_mnist(count: int, split: str = "train", seed: int = 0) -> torch.Tensor:
    """The first ``count`` Fashion-MNIST images of ``split``, dequantised to [0, 1) (seeded)."""
    pixels = load_images("fashion-mnist", split)[:count]
    return dequantize(pixels, generator=torch.Generator().manual_seed(seed))


def child_result(script: str, arguments: Sequence[str], env: dict | None = None) -> dict:
    """Run ``python script --child ARGUMENTS`` in a fresh process; the JSON it prints after
    ``RESULT ``. A process that prints none raises :class:`RuntimeError` with the last line of
    its standard error (or its exit status)."""
    command = [sys.executable, str(script), "--child", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError((done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1])
