r"""Peak memory of a VAEFlow training step with and without gradient checkpointing.

The model is the paper's CIFAR-10 model, ``VAEFlow((3, 32, 32), **PRESETS["paper-cifar10"].model)``
(a Glow layer of 32 additive steps of width 512 on 12×16×16, after a squeeze), built twice from one
seed: once as it is and once with ``glow_checkpoint=True``. One training step is the ``Trace_ELBO``
loss of a batch (``differentiable_loss``, one sample of :math:`z` per image) and its backward pass,
no optimiser step, in phase ``"glow"`` (only the Glow layer trained, as in phase 2) and in phase
``"joint"`` (everything trained), each set up by ``pyro_vaeflow.training.phase``. CIFAR-10 cannot be
read offline here: the batch is the first Fashion-MNIST training images, dequantised, padded with
zeros to 32×32 and copied to 3 channels (the memory does not depend on the values). The Glow layer
starts as the exact identity, whose zero last conditioner layers would block every gradient to the
layers before them; its weights are therefore moved by 0.01 N(0, 1) (seeded) first, so that every
gradient compared below is non-zero.

Each configuration runs in a fresh process (this script with ``--child``), so one
configuration's freed memory cannot hide another's peak. The process builds the model, runs one
no-grad forward pass of the batch (which would initialise a data-dependent actnorm) and one
training step on a single image (which loads what a first step loads, such as the
checkpointing code), drops the gradients, returns its freed heap to the system
(``malloc_trim``) and reads its resident memory, then runs the step on the batch:

- peak memory: on the CPU, the peak resident set size during the step (``ru_maxrss``, reset just
  before the step through ``/proc/self/clear_refs`` where Linux allows it) minus the resident
  memory just before it; on CUDA, ``torch.cuda.max_memory_allocated`` minus the memory allocated
  before it. It includes the parameters' gradients, the backward pass's temporaries and, on
  the CPU, freed memory that the C allocator keeps (at small batches, much of it);
- saved tensors: the bytes that autograd keeps for the backward pass, summed over the tensors
  that ``torch.autograd.graph.saved_tensors_hooks`` sees during the forward pass, each storage
  counted once and the parameters' own storages left out. This number does not depend on the
  allocator. With checkpointing, the saved tensors include each checkpointed part's input;
- the step's time: the median of ``--time-steps`` further steps (the first, measured step is
  left out of the time).

The losses and the gradients of the two configurations must agree: the script prints the
relative difference of the losses and the largest, over the parameters, of
:math:`\max|g_1 - g_2| / \max|g_1|`. The ratio is the peak without checkpointing over the peak
with it; the issue's target is at least 3x.

Before the measured runs, the script runs the step without checkpointing at a small batch
(``--probe-batch``) and estimates the peak at the requested batch as the probe's peak plus
1.25 times the saved tensors per image for every further image. If that estimate does not fit
in ``--memory-fraction`` of the available memory (``MemAvailable``), it halves the batch until
it does, and says so. On the CPU every child also caps its address space at what
it had plus that budget and 1 GiB (``RLIMIT_AS``), so an allocation beyond it fails in the
child instead of swapping or invoking the kernel's OOM killer.

Run ``python benchmarks/bench_memory.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch import Tensor

from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.presets import PRESETS
from pyro_vaeflow.training import phase as training_phase

from timing import add_common_options, child_result, fashion_mnist, reported_machine

TARGET = 3.0  # the target: at least 3x less peak memory with checkpointing
GIB = 2**30
IMAGE_SHAPE = (3, 32, 32)
QUICK_MODEL = {  # the paper's model's structure at tiny widths (smoke test)
    "latent_dim": 8,
    "base_channels": 4,
    "fc_dim": 16,
    "prior_layers": 2,
    "prior_hidden_dims": (16, 16),
    "glow_depth": 2,
    "glow_hidden_channels": 16,
}
CONFIGS = [("glow", False), ("glow", True), ("joint", False), ("joint", True)]


# -- the child: one configuration in its own process ---------------------------------------------


def images(batch: int, seed: int) -> Tensor:
    """Fashion-MNIST training images, dequantised, padded to 32×32, copied to 3 channels."""
    x = fashion_mnist(batch, "train", seed)
    x = torch.nn.functional.pad(x, (2, 2, 2, 2))
    return x.expand(-1, 3, -1, -1).contiguous()


def build(model: dict, checkpoint: bool, seed: int) -> VAEFlow:
    """The model from ``seed``, its Glow layer moved away from the identity (seeded)."""
    torch.manual_seed(seed)
    vae = VAEFlow(IMAGE_SHAPE, **model, glow_checkpoint=checkpoint)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in vae.glow.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator))
    return vae


def resident_bytes() -> int:
    """The resident set size of this process now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def virtual_bytes() -> int:
    """The virtual address space of this process now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def peak_resident_bytes() -> int:
    """The peak resident set size of this process (since the last reset)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def release_memory() -> None:
    """Collect garbage and hand the C heap's free memory back to the system."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak() -> bool:
    """Reset the peak resident set size to the current one (Linux ≥ 4.0); whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


class SavedTensors:
    """Counts the bytes autograd saves for backward, each storage once, parameters left out."""

    def __init__(self, parameters: list[Tensor]) -> None:
        self.skip = {p.untyped_storage().data_ptr() for p in parameters}
        self.sizes: dict[int, int] = {}

    def pack(self, tensor: Tensor) -> Tensor:
        try:
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without a plain storage
            key, size = id(tensor), tensor.numel() * tensor.element_size()
        if key not in self.skip:
            self.sizes[key] = size
        return tensor

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


def child(spec: dict) -> dict:
    """Run one configuration's step and measure it (see the module's docstring)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x = images(spec["batch"], spec["seed"]).to(device)
    vae = build(spec["model"], spec["checkpoint"], spec["seed"]).to(device)
    elbo = Trace_ELBO()

    def loss_of_step(batch: Tensor = x) -> Tensor:
        torch.manual_seed(spec["seed"] + 2)  # the same z in every configuration and step
        return elbo.differentiable_loss(vae.model, vae.guide, batch)

    with training_phase(vae, spec["phase"]):
        trained = [p for p in vae.parameters() if p.requires_grad]
        with torch.no_grad():
            loss_of_step()
        loss_of_step(x[:1]).backward()  # loads what the first step loads (checkpointing's code)
        for parameter in trained:
            parameter.grad = None
        weights = sum(float(p.detach().double().sum()) for p in vae.parameters())
        release_memory()
        before_peak = 0
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            peak_reset = True
        else:
            if spec["budget"]:
                # 1 GiB more for address space that is reserved but never touched (arenas).
                limit = virtual_bytes() + spec["budget"] + GIB
                hard = resource.getrlimit(resource.RLIMIT_AS)[1]
                resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
            peak_reset = reset_peak()
            before = resident_bytes()
            before_peak = peak_resident_bytes()
        saved = SavedTensors(list(vae.parameters()))
        start = time.perf_counter()
        with saved.hooks():
            loss = loss_of_step()
        saved_bytes = saved.total
        del saved
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - before
        else:
            peak = peak_resident_bytes() - before
        first_seconds = time.perf_counter() - start
        loss_value = loss.item()
        if spec["grads"]:
            grads = {name: p.grad.cpu() for name, p in vae.named_parameters() if p.grad is not None}
            torch.save({"loss": loss_value, "grads": grads}, spec["grads"])
            del grads
        del loss
        seconds = []
        for _ in range(spec["time_steps"]):
            for parameter in trained:
                parameter.grad = None
            start = time.perf_counter()
            loss_of_step().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
    return {
        "device": str(device),
        "before": before,
        "peak": peak,
        "peak_reset": peak_reset,
        "peak_was_before": before_peak - before > 8 * 2**20,
        "saved": saved_bytes,
        "seconds": statistics.median(seconds) if seconds else first_seconds,
        "loss": loss_value,
        "weights": weights,
        "trained": sum(p.numel() for p in trained),
    }


# -- the parent: the runs and the table ----------------------------------------------------------


def available_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo``, if there is one."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_child(spec: dict) -> dict:
    """Run :func:`child` in a fresh Python process; its result, or ``{"error": ...}``."""
    try:
        return child_result(Path(__file__).resolve(), [json.dumps(spec)])
    except RuntimeError as error:
        return {"error": str(error)}


def relative_differences(first: str, second: str) -> tuple[float, float]:
    """Relative difference of the two saved losses, and the largest over the parameters of
    max|g₁ - g₂| / max|g₁|."""
    a, b = torch.load(first), torch.load(second)
    loss = abs(a["loss"] - b["loss"]) / max(abs(a["loss"]), 1e-30)
    if a["grads"].keys() != b["grads"].keys():
        raise AssertionError("the two configurations trained different parameters")
    grads = 0.0
    for name, g in a["grads"].items():
        scale = g.abs().max().item()
        grads = max(grads, (g - b["grads"][name]).abs().max().item() / max(scale, 1e-30))
    return loss, grads


def gib(value: float) -> str:
    return f"{value / GIB:.3f}"


def main(args: argparse.Namespace) -> None:
    """Print the machine, the estimate, the checks, then the memory table, as Markdown."""
    with reported_machine():
        measure_and_print(args)


def measure_and_print(args: argparse.Namespace) -> None:
    """The estimate, the checks and the memory table (what :func:`main` runs inside
    :func:`~timing.reported_machine`)."""
    preset = PRESETS["paper-cifar10"]
    model, preset_name = dict(preset.model), "paper-cifar10"
    if args.quick:
        model.update(QUICK_MODEL)
        preset_name = "paper-cifar10 at tiny widths"
        args.batch, args.probe_batch, args.time_steps = 2, 0, 0
    cuda = torch.cuda.is_available()
    print(
        f"VAEFlow((3, 32, 32), **PRESETS[{preset_name!r}].model), one Trace_ELBO loss + backward "
        f"on {'CUDA' if cuda else 'the CPU'}; Fashion-MNIST padded to 32×32, copied to 3 "
        "channels; each configuration in a fresh process.",
        flush=True,
    )
    available = None if cuda else available_bytes()
    budget = None
    if available is not None:
        budget = int(args.memory_fraction * available)
        if args.max_gib:
            budget = min(budget, int(args.max_gib * GIB))
        print(f"Memory available: {gib(available)} GiB; budget per run: {gib(budget)} GiB.")
    spec = {"model": model, "seed": args.seed, "budget": budget, "grads": None}
    batch = args.batch
    if args.probe_batch and budget is not None:
        largest = "joint" if "joint" in args.phases else "glow"  # joint trains everything
        probe = {"phase": largest, "checkpoint": False, "batch": args.probe_batch}
        probe = run_child({**spec, **probe, "time_steps": 0})
        if "error" in probe:
            raise RuntimeError(f"the probe at batch {args.probe_batch} failed: {probe['error']}")
        saved_per_image = probe["saved"] / args.probe_batch

        def estimate(size: int) -> float:
            return probe["peak"] + 1.25 * saved_per_image * (size - args.probe_batch)

        print(
            f"Probe ({largest}, no checkpointing, batch {args.probe_batch}): peak "
            f"{gib(probe['peak'])} GiB, saved tensors {gib(probe['saved'])} GiB; estimate at "
            f"batch {batch}: saved ≈ {gib(saved_per_image * batch)} GiB, peak ≈ "
            f"{gib(estimate(batch))} GiB."
        )
        while batch > args.probe_batch and estimate(batch) > budget:
            batch //= 2
        if batch != args.batch:
            print(
                f"**Batch {args.batch} would not fit in the budget: measuring at batch {batch}** "
                "(the ratio is what matters)."
            )
    print(f"Batch {batch}; step time: median of {args.time_steps} steps after the measured one.\n")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for phase, checkpoint in CONFIGS:
            if phase not in args.phases:
                continue
            grads = os.path.join(folder, f"{phase}-{checkpoint}.pt")
            config = {"phase": phase, "checkpoint": checkpoint, "batch": batch}
            result = run_child({**spec, **config, "time_steps": args.time_steps, "grads": grads})
            result["grads"] = grads
            results[phase, checkpoint] = result
            if "error" in result:
                print(f"{phase}, checkpoint={checkpoint}: failed: {result['error']}", flush=True)
        for phase in args.phases:
            plain, checkpointed = results[phase, False], results[phase, True]
            if "error" in plain or "error" in checkpointed:
                continue
            if plain["weights"] != checkpointed["weights"]:
                raise AssertionError(f"{phase}: the two models do not start from the same weights")
            loss, grads = relative_differences(plain["grads"], checkpointed["grads"])
            print(
                f"Check ({phase}): loss {plain['loss']:.6g} without, {checkpointed['loss']:.6g} "
                f"with checkpointing (relative difference {loss:.1e}); gradients of "
                f"{plain['trained']:,} parameters, max relative difference {grads:.1e}"
            )
    unreliable = [key for key, r in results.items() if "error" not in r and r["peak_was_before"]]
    if unreliable:
        print(
            "Note: the peak resident set size could not be reset before the step in "
            f"{len(unreliable)} run(s); their peak is at least the peak before the step."
        )
    print("\n### Peak memory of one training step (loss + backward), with gradient checkpointing\n")
    print("| phase | checkpointing | batch | peak memory (GiB) | saved tensors (GiB) ", end="")
    print("| s/step | peak ratio | saved ratio | target |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for phase, checkpoint in CONFIGS:
        if (phase, checkpoint) not in results:
            continue
        result = results[phase, checkpoint]
        label = f"| {phase} | {'yes' if checkpoint else 'no'} | {batch} "
        if "error" in result:
            print(f"{label}| failed | — | — | — | — | — |")
            continue
        ratios, verdict = "| — | — ", "—"
        plain = results[phase, False]
        if checkpoint and "error" not in plain:
            peak_ratio = plain["peak"] / max(result["peak"], 1)
            saved_ratio = plain["saved"] / max(result["saved"], 1)
            ratios = f"| {peak_ratio:.1f}x | {saved_ratio:.1f}x "
            verdict = f"≥ {TARGET:.0f}x {'met' if peak_ratio >= TARGET else 'MISSED'}"
        print(
            f"{label}| {gib(result['peak'])} | {gib(result['saved'])} "
            f"| {result['seconds']:.2f} {ratios}| {verdict} |"
        )


def parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`main`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--phases", nargs="+", choices=["glow", "joint"], default=["glow", "joint"])
    p.add_argument(
        "--probe-batch", type=int, default=8, help="batch of the memory estimate (0: none)"
    )
    p.add_argument(
        "--memory-fraction", type=float, default=0.7, help="share of MemAvailable a run may use"
    )
    p.add_argument("--max-gib", type=float, default=None, help="a cap on the budget, in GiB")
    p.add_argument("--time-steps", type=int, default=2, help="timed steps after the measured one")
    add_common_options(p, quick="tiny widths, batch 2 (smoke test)", seed=0)
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    arguments = parser().parse_args()
    if arguments.child:
        pyro.clear_param_store()
        print("RESULT " + json.dumps(child(json.loads(arguments.child))), flush=True)
    else:
        main(arguments)
