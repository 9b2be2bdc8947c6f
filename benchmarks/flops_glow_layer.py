r"""The least time an epoch can take, from its FLOPs and a machine's peak: the paper's Glow layer,
and each training phase of the presets.

Two tables.

**The Glow layer's width** (``--tables layers``). The paper (Table 4) times an epoch of its
Glow-layer phase on CIFAR-10 at about 162 s on a GeForce GTX 1080 Ti, but does not give the
layer's width. This counts, with ``torch.utils.flop_counter``, the floating-point operations of
one training step of the Glow layer (``glow(3, depth=32, coupling="additive")`` on 3×32×32:
data → base with the log-determinant, then backward) for a few widths and squeezes, per image,
and divides those of a ``--images`` epoch (50 000: CIFAR-10) by the card's fp32 peak (11.34
TFLOP/s: 3584 cores × 2 × 1582 MHz). An epoch cannot take less than that floor at 100 % of the
peak, so a configuration whose floor exceeds the paper's 162 s cannot be the paper's layer.

**The floor of each phase's epoch** (``--tables phases``), for the ``--presets`` (``cpu``,
``cpu-long`` and ``paper-cifar10``): phase ``vae`` (encoder, decoder and flow prior, the Glow
layer switched off) and phase ``glow`` (the Glow layer alone, the VAE frozen but run forward),
as :func:`pyro_vaeflow.training.phase` sets them. One training step's FLOPs are counted by
``FlopCounterMode`` on a real step: ``Trace_ELBO(max_plate_nesting=1).differentiable_loss`` of
``VAEFlow(preset.image_shape, **preset.model)`` in the phase, then backward, on a batch of the
preset's size (uniform pixels: the cost does not depend on the values), after an untimed call
that initialises actnorm. The counter counts every matrix product and convolution of the step
(``mm``, ``addmm``, ``bmm``, ``convolution`` and its backward: the Glow conditioners run as
``mm`` over the pixels or ``im2col`` + ``mm``); it misses the element-wise work (ReLUs, the
flows' affine arithmetic, log-densities, reductions), the small LU solves of the 1x1
convolutions' C×C weights and the optimiser's update (about 15 FLOPs per parameter, at most about
0.2 % of a step here). None of these run at the matmul peak, so the floor is that of the matrix work
alone. An epoch is the preset's training images (Fashion-MNIST 60 000, CIFAR-10 50 000, less
``val_images``) at the step's FLOPs per image. The floor is its FLOPs over a peak:

- on the CPU, the matmul peak measured in the same run, as ``bench_peak.py`` measures it (the
  best rate of fp32 ``torch.mm`` of ``--sizes``, timed interleaved with the steps);
- on paper, the datasheet peaks of ``--peak-tflops`` (names of :data:`DATASHEET_TFLOPS`, or
  numbers): the GTX 1080 Ti's fp32, and the H200's fp32, TF32 and dense bf16.

``--measure`` also times the training step as ``fit`` takes it (``GuardedSVI``,
``MultiTensorAdam`` with the preset's learning rate and clipping, the same ELBO), on one fixed
batch, in each of ``--variants``: ``eager`` (fp32; on CUDA with TF32 matmuls on), ``compiled``,
``eager-bf16`` and ``compiled-bf16`` (``pyro_vaeflow.acceleration.accelerate(model,
compile=..., precision="bf16")``), each on its own copy of one model, all the steps and the
peak's products timed interleaved (``timing.measure``). The distance to the floor is the measured
epoch over the floor at a reference peak: on the CPU the fp32 matmul peak measured in the run,
whatever the variant; on CUDA the first ``--peak-tflops`` of the variant's precision (TF32 for
the fp32 variants, as TF32 is on). For
``paper-cifar10`` the paper's own epochs on the GTX 1080 Ti (118 s and 162 s) are printed beside
them; the issue's target on a GPU is 8x faster.

Run ``python benchmarks/flops_glow_layer.py`` (``--quick`` for a smoke test); ``--measure`` to
time the steps; on a GPU ``--device cuda --measure --variants eager compiled compiled-bf16``.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
from collections.abc import Callable
from typing import NamedTuple

import pyro
import torch
from pyro.infer import Trace_ELBO

from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.presets import PRESETS, Preset
from pyro_vaeflow.training import GuardedSVI, MultiTensorAdam
from pyro_vaeflow.training import phase as training_phase
from pyro_vaeflow.transforms import glow

from bench_peak import matmul
from timing import add_common_options, count_flops, measure, reported_machine

PAPER_SECONDS = 162.0  # the paper's Table 4: the Glow layer's time per CIFAR-10 epoch

#: The paper's Table 4: seconds per CIFAR-10 epoch of each phase on a GeForce GTX 1080 Ti.
PAPER_EPOCH_SECONDS = {("paper-cifar10", "vae"): 118.0, ("paper-cifar10", "glow"): 162.0}
GPU_TARGET = 8.0  # the target: each paper-cifar10 epoch 8x faster than the paper's

#: The GeForce GTX 1080 Ti's fp32 peak: 3584 cores × 2 FLOPs × 1582 MHz (boost clock).
GTX_1080_TI_FP32_TFLOPS = 11.34
#: NVIDIA H200 datasheet (SXM): FP32 67 TFLOP/s; the tensor cores' TF32 989 and BF16 1979 are
#: with 2:4 sparsity, so dense 494 and 989.
H200_FP32_TFLOPS = 67.0
H200_TF32_TFLOPS = 494.0
H200_BF16_TFLOPS = 989.0

#: The datasheet peaks ``--peak-tflops`` knows by name: (precision, TFLOP/s).
DATASHEET_TFLOPS = {
    "gtx-1080-ti-fp32": ("fp32", GTX_1080_TI_FP32_TFLOPS),
    "h200-fp32": ("fp32", H200_FP32_TFLOPS),
    "h200-tf32": ("tf32", H200_TF32_TFLOPS),
    "h200-bf16": ("bf16", H200_BF16_TFLOPS),
}
#: The images of an epoch of each dataset (``pyro_vaeflow.data.load_images``'s training split).
TRAIN_IMAGES = {"fashion-mnist": 60000, "mnist": 60000, "cifar10": 50000}
PHASES = ("vae", "glow")
VARIANTS = {  # name → accelerate()'s keyword arguments (None: the model as it is)
    "eager": None,
    "compiled": {"compile": True},
    "eager-bf16": {"precision": "bf16"},
    "compiled-bf16": {"compile": True, "precision": "bf16"},
}


class Peak(NamedTuple):
    """A peak rate to divide FLOPs by: its label, precision and TFLOP/s."""

    label: str
    precision: str
    tflops: float


def parse_peak(text: str) -> Peak:
    """A ``--peak-tflops`` value: a name of :data:`DATASHEET_TFLOPS` or a number (of any
    precision).

    Example:
        >>> parse_peak("h200-bf16"), parse_peak("20").tflops
        (Peak(label='h200-bf16', precision='bf16', tflops=989.0), 20.0)
    """
    if text in DATASHEET_TFLOPS:
        precision, tflops = DATASHEET_TFLOPS[text]
        return Peak(text, precision, tflops)
    try:
        tflops = float(text)
    except ValueError:
        names = ", ".join(DATASHEET_TFLOPS)
        raise argparse.ArgumentTypeError(
            f"expected a number or one of {names}, got {text!r}"
        ) from None
    if not (math.isfinite(tflops) and tflops > 0):
        raise argparse.ArgumentTypeError(f"a peak must be a positive number, got {text!r}")
    return Peak(f"{tflops:g} TFLOP/s", "any", tflops)


def step_flops(squeeze: int, width: int, depth: int) -> float:
    """FLOPs per image of one training step of the Glow layer (forward and backward), on a
    batch of 2; the input needs no gradient, as in training."""
    flow = glow(3, depth=depth, hidden_channels=width, coupling="additive", squeeze=squeeze)
    x = torch.rand(2, 3, 32, 32)
    flow.inv(x)  # actnorm's data-dependent initialisation, outside the count

    def step() -> None:
        u, log_det = flow.inverse_and_log_det(x)
        (u.square().sum() - log_det.sum()).backward()

    return count_flops(step) / len(x)


def epoch_floor(flops_per_image: float, images: int, peak_tflops: float) -> float:
    """Seconds an epoch takes at least: its FLOPs at the peak rate.

    Example:
        >>> epoch_floor(54.26e9, 50000, 11.34)  # doctest: +ELLIPSIS
        239.2...
    """
    return flops_per_image * images / (peak_tflops * 1e12)


def epoch_images(preset: Preset) -> int:
    """The training images of one epoch of ``preset``: its dataset's training split (or the
    first ``train_images``), less the ``val_images`` held out.

    Example:
        >>> epoch_images(PRESETS["cpu"]), epoch_images(PRESETS["paper-cifar10"])
        (60000, 50000)
    """
    images = TRAIN_IMAGES[preset.dataset]
    if preset.train_images is not None:
        images = min(images, preset.train_images)
    return images - (preset.val_images or 0)


def phase_loss(vae: VAEFlow, phase: str, x: torch.Tensor) -> Callable[[], None]:
    """One forward and backward pass of the negative ELBO in ``phase`` (the gradients of the
    parts it trains), in a param-store state of its own; the first call is made here, untimed
    and uncounted, to initialise actnorm."""
    elbo = Trace_ELBO(max_plate_nesting=1)
    state: dict = {"params": {}, "constraints": {}}

    def run() -> None:
        with pyro.get_param_store().scope(state), training_phase(vae, phase):
            elbo.differentiable_loss(vae.model, vae.guide, x).backward()
        vae.zero_grad(set_to_none=True)

    with torch.no_grad(), pyro.get_param_store().scope(state), training_phase(vae, phase):
        elbo.loss(vae.model, vae.guide, x)
    return run


def training_step(vae: VAEFlow, preset: Preset, phase: str, x: torch.Tensor) -> Callable:
    """The step ``fit`` takes in ``phase`` (``GuardedSVI``, ``MultiTensorAdam`` with the
    preset's learning rate and clipping), on the batch ``x``, in a param-store state of its own."""
    optim = MultiTensorAdam(lr=preset.lr, clip_norm=preset.clip_norm or None)
    svi = GuardedSVI(vae.model, vae.guide, optim, Trace_ELBO(max_plate_nesting=1))
    state: dict = {"params": {}, "constraints": {}}

    def run() -> float:
        with pyro.get_param_store().scope(state), training_phase(vae, phase):
            return svi.step(x)

    return run


def accelerated(vae: VAEFlow, variant: str) -> VAEFlow:
    """A copy of ``vae`` in ``variant`` (see :data:`VARIANTS`), by
    :func:`pyro_vaeflow.acceleration.accelerate`."""
    from pyro_vaeflow.acceleration import accelerate

    vae = copy.deepcopy(vae)
    options = VARIANTS[variant]
    return vae if options is None else accelerate(vae, **options)


def variant_precision(variant: str, device: torch.device) -> str:
    """The arithmetic of the matrix products of ``variant``: bf16, TF32 (fp32 on CUDA, where
    the script turns TF32 on) or fp32."""
    if variant.endswith("bf16"):
        return "bf16"
    return "tf32" if device.type == "cuda" else "fp32"


def reference_peak(peaks: list[Peak], precision: str, device: torch.device) -> Peak | None:
    """The peak a measured step is compared with: on the CPU the matmul peak measured in the
    run (the first of ``peaks``), whatever the precision; on CUDA the first datasheet peak of
    ``precision`` (or of any precision), else ``None``.

    Example:
        >>> peaks = [parse_peak("h200-tf32"), parse_peak("h200-bf16")]
        >>> reference_peak(peaks, "bf16", torch.device("cuda")).label
        'h200-bf16'
    """
    if device.type == "cpu":
        return peaks[0] if peaks else None
    matching = [peak for peak in peaks if peak.precision in (precision, "any")]
    return matching[0] if matching else None


def layer_table(args: argparse.Namespace) -> None:
    """Print the Glow-layer configurations, their FLOPs and their epoch floors."""
    sizes = [(0, 8), (1, 8)] if args.quick else [(0, 512), (0, 256), (1, 512)]
    depth = 1 if args.quick else 32
    print(
        f"\n### The Glow layer's epoch floor on a GTX 1080 Ti ({GTX_1080_TI_FP32_TFLOPS} TFLOP/s "
        f"fp32), {args.images} images\n"
    )
    print(
        "| squeeze | width | depth | GFLOP/image/step | epoch floor (s) | "
        f"peak for {PAPER_SECONDS:g} s |"
    )
    print("|---:|---:|---:|---:|---:|---|")
    for squeeze, width in sizes:
        flops = step_flops(squeeze, width, depth)
        floor = epoch_floor(flops, args.images, GTX_1080_TI_FP32_TFLOPS)
        needed = floor / PAPER_SECONDS
        shown = f"{needed:.0%}" + (" (impossible)" if needed > 1 else "")
        print(f"| {squeeze} | {width} | {depth} | {flops / 1e9:.2f} | {floor:.0f} | {shown} |")


def _seconds(value: float) -> str:
    return f"{value:.3g}" if value < 10 else f"{value:,.0f}"


def phase_tables(args: argparse.Namespace) -> None:
    """Count each phase's FLOPs; measure the CPU's matmul peak (and, with ``--measure``, the
    steps); print the floors and the distances."""
    device = torch.device(args.device)
    if device.type == "cuda":
        from pyro_vaeflow.acceleration import set_tf32

        set_tf32(True)  # as training on CUDA does by default
    torch.manual_seed(args.seed)
    rows, steps = [], {}
    for name in args.presets:
        preset = PRESETS[name]
        batch = 2 if args.quick else preset.batch_size
        vae = VAEFlow(preset.image_shape, **preset.model).to(device)
        x = torch.rand(batch, *preset.image_shape, device=device)
        for phase in args.phases:
            flops = count_flops(phase_loss(vae, phase, x))
            rows.append((preset, phase, batch, flops))
            if args.measure:
                for variant in args.variants:
                    model = accelerated(vae, variant)
                    steps[(name, phase, variant)] = training_step(model, preset, phase, x)
    peaks: dict = {}
    if device.type == "cpu":
        peaks = {f"matmul {n}": matmul(n) for n in args.sizes}
    times = measure({**peaks, **steps}, args.repeats, args.min_time, args.warmup)
    given: list[Peak] = list(args.peak_tflops)
    if peaks:
        rate = max(2 * int(k.split()[1]) ** 3 / statistics.median(times[k]) for k in peaks)
        given.insert(0, Peak("this CPU", "fp32", rate / 1e12))
        print(f"This CPU's fp32 matmul peak: {rate / 1e9:.1f} GFLOP/s (torch.mm of {args.sizes}).")
    print(f"Peaks: {'; '.join(f'{p.label}: {p.tflops:g} TFLOP/s' for p in given)}.")

    print("\n### FLOP floor of each phase's epoch (s/epoch at 100 % of the peak)\n")
    heads = [p.label for p in given]
    print(
        "| preset | phase | batch | images/epoch | GFLOP/step | TFLOP/epoch | "
        + " | ".join(f"floor at {h}" for h in heads)
        + " | paper (GTX 1080 Ti) |"
    )
    print("|---|---|---:|---:|---:|---:|" + "---:|" * len(heads) + "---:|")
    floors = {}
    for preset, phase, batch, flops in rows:
        images = epoch_images(preset)
        per_image = flops / batch
        floors[(preset.name, phase)] = {p: epoch_floor(per_image, images, p.tflops) for p in given}
        paper = PAPER_EPOCH_SECONDS.get((preset.name, phase))
        print(
            f"| {preset.name} | {phase} | {batch} | {images:,} | {flops / 1e9:.2f} "
            f"| {per_image * images / 1e12:.1f} | "
            + " | ".join(_seconds(floors[(preset.name, phase)][p]) for p in given)
            + f" | {'—' if paper is None else f'{paper:g}'} |"
        )
    if not args.measure:
        return

    print(f"\n### Measured training steps against the floor, on {device.type}\n")
    print(
        "| preset | phase | variant | s/step | images/s | s/epoch | floor (s/epoch) | peak "
        "| measured / floor | share of peak | paper s/epoch | paper / measured |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    batches = {(preset.name, phase): batch for preset, phase, batch, _ in rows}
    for (name, phase, variant), _ in steps.items():
        seconds = statistics.median(times[(name, phase, variant)])
        batch = batches[(name, phase)]
        epoch = seconds * epoch_images(PRESETS[name]) / batch
        chosen = reference_peak(given, variant_precision(variant, device), device)
        paper = PAPER_EPOCH_SECONDS.get((name, phase))
        speed_up = "—"
        if paper is not None:
            speed_up = f"{paper / epoch:.2f}x"
            if device.type == "cuda":
                verdict = "met" if paper / epoch >= GPU_TARGET else "MISSED"
                speed_up += f" (≥ {GPU_TARGET:g}x {verdict})"
        if chosen is None:
            floor_cells = "— | — | — | —"
        else:
            floor = floors[(name, phase)][chosen]
            floor_cells = (
                f"{_seconds(floor)} | {chosen.label} | {epoch / floor:.2f}x | {floor / epoch:.0%}"
            )
        print(
            f"| {name} | {phase} | {variant} | {seconds:.4f} | {batch / seconds:,.0f} "
            f"| {_seconds(epoch)} | {floor_cells} | {'—' if paper is None else f'{paper:g}'} "
            f"| {speed_up} |"
        )


def main(args: argparse.Namespace) -> None:
    """Print the tables of ``--tables``, as Markdown."""
    if args.quick:
        args.presets, args.sizes = ["cpu"], [64, 128]
        args.repeats, args.min_time, args.warmup = 1, 0.0, 0
    with reported_machine():
        print("(The FLOP counts do not depend on the machine; the peaks and times do.)")
        if "layers" in args.tables:
            layer_table(args)
        if "phases" in args.tables:
            phase_tables(args)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--tables",
        nargs="+",
        choices=["layers", "phases"],
        default=["layers", "phases"],
        help="the Glow layer's widths, and/or each preset's phases",
    )
    p.add_argument("--images", type=int, default=50000, help="images per epoch (layer table)")
    p.add_argument(
        "--presets",
        nargs="+",
        choices=sorted(PRESETS),
        default=["cpu", "cpu-long", "paper-cifar10"],
        help="the presets of the phase table (VAEFlow only)",
    )
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    p.add_argument(
        "--peak-tflops",
        nargs="*",
        type=parse_peak,
        default=[parse_peak(name) for name in DATASHEET_TFLOPS],
        metavar="PEAK",
        help=f"datasheet peaks for the floors on paper: names ({', '.join(DATASHEET_TFLOPS)}) "
        "or TFLOP/s; the first of a variant's precision is its reference on CUDA",
    )
    p.add_argument("--sizes", nargs="+", type=int, default=[1024, 2048, 3072], help="matmul sizes")
    p.add_argument("--measure", action="store_true", help="also time the training steps")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=["eager"],
        help="how the measured steps run (pyro_vaeflow.acceleration.accelerate)",
    )
    add_common_options(
        p,
        quick="the cpu preset at batch 2, small matmuls, one repeat (smoke test)",
        repeats=5,
        warmup=1,
        min_time=1.0,
        seed=0,
        device="cpu",
    )
    return p


if __name__ == "__main__":
    main(parser().parse_args())
