r"""Our multi-scale Glow against normflows' ``MultiscaleFlow`` Glow, in training images/s.

Both flows have the same configuration: :math:`L = 2` levels of :math:`K = 8` steps, each step
actnorm → 1x1 convolution → affine coupling with a conditioner of width 128, on 1×28×28
Fashion-MNIST images, batch 64.

- Ours: ``pyro_vaeflow.models.Glow((1, 28, 28), levels=2, depth=8, hidden_channels=128,
  coupling="affine")``.
- normflows: ``nf.MultiscaleFlow`` built as in normflows' Glow example: per level ``K``
  ``nf.flows.GlowBlock(channels, 128, split_mode="channel", scale=True)`` then
  ``nf.flows.Squeeze()``, ``nf.flows.Merge()`` between the levels and one
  ``nf.distributions.DiagGaussian`` base per level, without classes. normflows lists its levels
  top first (latent → data), so read data → latent both models run: squeeze to 4×14×14,
  ``K`` steps, split off 2×14×14, squeeze to 8×7×7, ``K`` steps; the latents are 2×14×14 and
  8×7×7 in both, and every convolution of the two has the same shape.

What still differs (none of it changes the size of a convolution; the parameter counts are
printed):

- the coupling's scale: normflows' Glow ``sigmoid(h + 2)`` against our
  ``exp(3 tanh(h / 3))``, and which output channels are the scale and which the shift;
- the conditioner is the same 3x3 → ReLU → 1x1 → ReLU → 3x3 (zero-initialised last layer) in
  both, with the same weights' shapes; normflows runs it as ``Conv2d``\ s in ``nn.Sequential``
  (its ReLU is a ``LeakyReLU(0)``), ours, on the CPU, as matrix products over the pixels
  (:class:`~pyro_vaeflow.transforms.GlowConditioner`);
- the 1x1 convolution: both LU-parametrised; normflows rebuilds :math:`W` and applies it with
  ``conv2d``, ours with one ``bmm``;
- the priors: our factored-out half has a conditional prior (a zero-initialised 3x3
  convolution of the kept half, as in openai/glow) and our top a per-position learned
  Gaussian; normflows' ``MultiscaleFlow`` has unconditional bases, here learned per position
  (``DiagGaussian``, the same as our top);
- the input: ours maps :math:`x - \tfrac12`, normflows :math:`x` (its example feeds images in
  [0, 1]); both run on the same tensor, and actnorm's data-dependent initialisation (on the
  same first batch, in both) takes up the shift.

One training step is: :math:`-\tfrac1B \sum_n \log p(x_n)`, data → latent with the log
determinant, backward, one ``torch.optim.Adam`` step (learning rate 1e-3) over every parameter
-- the same loop for both, so the flows are compared, not the training code. A third row times
our Glow through Pyro as ``fit`` trains it, ``SVI(glow.model, glow.guide,
MultiTensorAdam(lr=1e-3), Trace_ELBO()).step(x)``. Each row trains its own copy from the same
first batch; the batch is the first 64 Fashion-MNIST training images, dequantised, the same at
every step (the cost does not depend on the values).

``--compile`` adds the same rows compiled, timed in the same loop as the eager ones: normflows'
whole ``log_prob`` through ``torch.compile`` (its own code has no compile option), ours by
``pyro_vaeflow.acceleration.accelerate(glow, compile=True)``, which compiles the networks that
carry the FLOPs (the conditioners) and leaves the flows' bookkeeping eager, as training does.
Each compiled row trains its own copy of the eager model, after actnorm's initialisation; the
compilation happens in the untimed warm-up calls (at least one with ``--compile``), and a
compiled row's speed-up is against normflows compiled. The FLOPs are counted on the eager
steps.

Before timing, the script prints both models' log-likelihoods of the batch (which also
initialises actnorm) and stops unless they are finite. The steps are timed interleaved; the
speed-up is the median over the repeats of normflows' step time over ours. The issue's target
is at least 1.5x. ``--profile`` prints where each step's time goes (``torch.profiler``).

Run ``python benchmarks/bench_normflows.py`` (``--quick`` for a smoke test; ``--device cuda`` on
a GPU, where a step's ``loss.item()`` waits for the GPU, so the step times are complete).
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import warnings
from collections.abc import Callable

import normflows as nf
import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import Tensor, nn

from pyro_vaeflow.models import Glow
from pyro_vaeflow.training import MultiTensorAdam

from timing import (
    add_common_options,
    count_flops,
    fashion_mnist,
    measure,
    median_ratio,
    reported_machine,
)

TARGET = 1.5  # the target: ours at least 1.5x faster
IMAGE_SHAPE = (1, 28, 28)


def normflows_glow(
    image_shape: tuple[int, int, int], levels: int, depth: int, hidden_channels: int
) -> nf.MultiscaleFlow:
    """normflows' multi-scale Glow, as its Glow example builds it (top level first)."""
    channels, height, width = image_shape
    bases, merges, flows = [], [], []
    with warnings.catch_warnings():
        # normflows' Invertible1x1Conv calls the deprecated torch.lu.
        warnings.simplefilter("ignore", UserWarning)
        for i in range(levels):
            level = [
                nf.flows.GlowBlock(
                    channels * 2 ** (levels + 1 - i),
                    hidden_channels,
                    split_mode="channel",
                    scale=True,
                )
                for _ in range(depth)
            ]
            flows.append([*level, nf.flows.Squeeze()])
            if i > 0:
                merges.append(nf.flows.Merge())
                scale = 2 ** (levels - i)
                latent = (channels * scale, height // scale, width // scale)
            else:
                scale = 2**levels
                latent = (channels * 2 * scale, height // scale, width // scale)
            bases.append(nf.distributions.DiagGaussian(latent))
    return nf.MultiscaleFlow(bases, flows, merges, class_cond=False)


def torch_step(module: nn.Module, log_prob: Callable[[Tensor], Tensor], x: Tensor, lr: float):
    """One training step: the mean negative log-likelihood, backward, one Adam step."""
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)

    def run() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = -log_prob(x).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    return run


def svi_step(glow: Glow, x: Tensor, lr: float) -> Callable[[], float]:
    """One step of Pyro's SVI with ``Trace_ELBO`` on our Glow (its ELBO is the exact log p)."""
    svi = SVI(glow.model, glow.guide, MultiTensorAdam(lr=lr), Trace_ELBO())
    return lambda: svi.step(x)


def profile(steps: dict[str, Callable[[], object]], rows: int) -> None:
    """Print the operators that take the most time in two calls of each step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name, step in steps.items():
        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(2):
                step()
        table = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total",
            row_limit=rows,
            max_name_column_width=30,
            max_shapes_column_width=60,
        )
        print(f"\n#### Profile: {name} (two steps)\n\n```text\n{table}```")


def main(args: argparse.Namespace) -> None:
    """Print the machine, the log-likelihood check, then the throughput table, as Markdown."""
    if args.quick:
        args.batch, args.depth, args.hidden = 2, 1, 8
        args.repeats, args.min_time, args.warmup = 1, 0.0, 0
    with reported_machine():
        print(
            f"Glow at L={args.levels}, K={args.depth}, hidden {args.hidden}, affine coupling, "
            f"batch {args.batch} of Fashion-MNIST 1×28×28, torch.optim.Adam lr {args.lr}, "
            f"on {args.device}; "
            f"median of {args.repeats} interleaved repeats.\n",
            flush=True,
        )
        x = fashion_mnist(args.batch, "train", args.seed).to(args.device)
        torch.manual_seed(args.seed)
        theirs = normflows_glow(IMAGE_SHAPE, args.levels, args.depth, args.hidden).to(args.device)
        ours = Glow(
            IMAGE_SHAPE,
            levels=args.levels,
            depth=args.depth,
            hidden_channels=args.hidden,
            coupling="affine",
        ).to(args.device)
        with torch.no_grad():  # the first call initialises actnorm, in both
            log_p = {
                "normflows": theirs.log_prob(x, None).mean().item(),
                "ours": ours.log_prob(x).mean().item(),
            }
        dims = math.prod(IMAGE_SHAPE)
        for name, value in log_p.items():
            if not math.isfinite(value):
                raise AssertionError(f"{name}'s log-likelihood is not finite: {value}")
            print(f"Initial mean log p(x) ({name}): {value:.1f} nats ({value / dims:.3f} per dim)")
        ours_svi = copy.deepcopy(ours)
        sizes = {
            "normflows": sum(p.numel() for p in theirs.parameters()),
            "ours": sum(p.numel() for p in ours.parameters()),
        }
        print(f"Parameters: normflows {sizes['normflows']:,}, ours {sizes['ours']:,}", flush=True)
        modes = ["eager", "compiled"] if args.compile else ["eager"]
        with pyro.get_param_store().scope():
            steps = {}
            for mode in modes:
                nf_model, our_model, svi_model = theirs, ours, ours_svi
                if mode == "compiled":  # copies of the initialised models, compiled
                    from pyro_vaeflow.acceleration import accelerate

                    nf_model, our_model, svi_model = (
                        copy.deepcopy(model) for model in (theirs, ours, ours_svi)
                    )
                    nf_log_prob = torch.compile(lambda x, m=nf_model: m.log_prob(x, None))
                    accelerate(our_model, compile=True)
                    accelerate(svi_model, compile=True)
                else:
                    nf_log_prob = lambda x, m=nf_model: m.log_prob(x, None)  # noqa: E731
                steps[("normflows", mode)] = torch_step(nf_model, nf_log_prob, x, args.lr)
                steps[("ours", mode)] = torch_step(our_model, our_model.log_prob, x, args.lr)
                if not args.skip_svi:
                    steps[("ours, SVI", mode)] = svi_step(svi_model, x, args.lr)
            warmup = max(args.warmup, 1) if args.compile else args.warmup
            times = measure(steps, args.repeats, args.min_time, warmup)
            flops = {name: count_flops(step) for name, step in steps.items() if name[1] == "eager"}
            if args.profile:
                profile({" ".join(name): step for name, step in steps.items()}, args.profile_rows)
        labels = {
            "normflows": "normflows `MultiscaleFlow` (torch Adam)",
            "ours": "ours `Glow` (torch Adam)",
            "ours, SVI": "ours `Glow` (Pyro SVI, Trace_ELBO, MultiTensorAdam)",
        }
        compiled_by = {
            "normflows": "`torch.compile(log_prob)`",
            "ours": "`accelerate(compile=True)`",
            "ours, SVI": "`accelerate(compile=True)`",
        }
        print(f"\n### Multi-scale Glow training step at L={args.levels}, K={args.depth}, ", end="")
        print(f"hidden {args.hidden}, affine, batch {args.batch}\n")
        print(
            "| implementation | mode | parameters | GFLOP/step | s/step | images/s | speed-up "
            "| target |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---|")
        for name, mode in steps:
            seconds = statistics.median(times[(name, mode)])
            if name == "normflows":
                speed_up, verdict = "1.00x", "—"
            else:
                ratio = median_ratio(times[("normflows", mode)], times[(name, mode)])
                speed_up = f"{ratio:.2f}x"
                verdict = f"≥ {TARGET}x {'met' if ratio >= TARGET else 'MISSED'}"
            shown = "eager" if mode == "eager" else f"compiled, {compiled_by[name]}"
            size = sizes["normflows" if name == "normflows" else "ours"]
            print(
                f"| {labels[name]} | {shown} | {size:,} | {flops[(name, 'eager')] / 1e9:.2f} "
                f"| {seconds:.3f} | {args.batch / seconds:,.0f} | {speed_up} | {verdict} |"
            )
        if args.compile:
            print("\nCompiled against eager (median of per-repeat ratios, > 1: faster compiled):")
            for name in labels:
                if (name, "compiled") in times:
                    ratio = median_ratio(times[(name, "eager")], times[(name, "compiled")])
                    print(f"- {labels[name]}: {ratio:.2f}x")


def parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`main`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", type=int, default=2)
    p.add_argument("--depth", type=int, default=8, help="steps K per level")
    p.add_argument("--hidden", type=int, default=128, help="conditioner width")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--skip-svi", action="store_true", help="leave out the Pyro SVI rows")
    p.add_argument(
        "--compile", action="store_true", help="also time every row compiled, side by side"
    )
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table per step")
    p.add_argument("--profile-rows", type=int, default=12)
    add_common_options(
        p,
        quick="tiny flows and batch (smoke test)",
        repeats=9,
        warmup=2,
        min_time=1.0,
        seed=0,
        device="cpu",
    )
    return p


if __name__ == "__main__":
    main(parser().parse_args())
