r"""On paper: the ``paper-cifar10`` epoch on several GPUs, from one GPU's step and the
all-reduce volume.

Nothing here is timed. The inputs are a measured one-GPU step per phase (by default the H200
measurement of ``bench_vs_glow.py --paper-size --device cuda --timing-only`` in
``docs/benchmarks-history.md``: 59.3 s and 178.1 s per 60 000-image epoch at batch 64, with the
presets' Glow layer as it was before its squeeze) and an all-reduce bandwidth. The model is
built on the CPU to count, per phase, the parameters DDP reduces each step, :math:`P`; a ring
all-reduce over :math:`N` GPUs moves :math:`2 (N - 1) / N \cdot 4 P` bytes through each GPU,
so at a bus bandwidth :math:`B` it takes

.. math:: t_\text{reduce}(N) = \frac{2 (N - 1)}{N} \frac{4 P}{B},

and, with none of it overlapped with the backward pass (DDP overlaps it; this is the pessimistic
end), a step of a global batch of :math:`b` images takes

.. math:: t(N) = t_1 \frac{b / N}{b_1} + t_\text{reduce}(N)

if the GPU's time were proportional to its share of the batch (:math:`t_1`: the measured step
at batch :math:`b_1`). The GPU step measured here is launch-bound (its time hardly depends on
the batch), so for a fixed global batch the first term does not shrink in practice: the table
gives the fixed-batch epoch as a range between that proportional bound and no speed-up at all,
and the weak-scaling epoch (:math:`b_1` images per GPU, so :math:`N b_1` per step and
:math:`1/N` of the steps), where the compute term stays :math:`t_1`.

Run ``python benchmarks/scaling_model.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse

import torch

from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.presets import PRESETS
from pyro_vaeflow.training import phase

from timing import add_common_options

MEASURED = {"vae": 59.3, "glow": 178.1}
"""Seconds per 60 000-image epoch at batch 64 on one H200 (see the module's docstring)."""


def trained_parameters(quick: bool) -> dict[str, int]:
    """The parameters each phase of ``paper-cifar10``'s model trains (what DDP reduces)."""
    sizes = dict(PRESETS["paper-cifar10"].model)
    if quick:
        sizes.update(prior_layers=2, prior_hidden_dims=(16,), glow_depth=2, glow_hidden_channels=8)
        sizes.update(base_channels=4, fc_dim=16)
    torch.manual_seed(0)
    model = VAEFlow((3, 32, 32), **sizes)
    counts = {}
    for name in MEASURED:
        with phase(model, name):
            counts[name] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts


def main(args: argparse.Namespace) -> None:
    counts = trained_parameters(args.quick)
    epoch_images, batch = 50000, 64  # CIFAR-10's training set, the paper's batch
    print("Machine: none (arithmetic on a measured one-GPU step; see the script's docstring)")
    print(f"All-reduce bus bandwidth {args.bandwidth:g} GB/s; CIFAR-10 epoch of {epoch_images}")
    print(f"images, global batch {batch} (fixed) or {batch} per GPU (weak scaling)\n")
    print(
        "| phase | parameters reduced | GPUs | all-reduce per step | fixed-batch epoch (s) | "
        "weak-scaling epoch (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, params in counts.items():
        step = MEASURED[name] / (60000 / batch)  # the measured epoch had 60 000 images
        for gpus in (1, 2, 4, 8, 16):
            reduce = 2 * (gpus - 1) / gpus * 4 * params / (args.bandwidth * 1e9)
            steps = epoch_images / batch
            proportional = steps * (step / gpus + reduce)
            flat = steps * (step + reduce)
            weak = steps / gpus * (step + reduce)
            fixed = f"{proportional:.0f}–{flat:.0f}" if gpus > 1 else f"{flat:.0f}"
            print(
                f"| {name} | {params:,} | {gpus} | {1e3 * reduce:.2f} ms | {fixed} | {weak:.0f} |"
            )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--bandwidth",
        type=float,
        default=100.0,
        help="all-reduce bus bandwidth, GB/s (NVLink: hundreds; PCIe 4.0: about 20)",
    )
    add_common_options(p, quick="a tiny model (smoke test)")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
