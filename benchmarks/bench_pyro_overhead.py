r"""Pyro's overhead: a VAEFlow SVI step against the same step written in plain PyTorch.

The model is ``VAEFlow((1, 28, 28), **PRESETS["cpu"].model)``, trained in phase ``"joint"``
(everything, with the Glow layer) or ``"vae"`` (the Glow layer off, as in phase 1), on one
batch of real Fashion-MNIST training images, dequantised. Both sides start from the same
weights (two copies of one model) and minimise the negative ELBO with one sample of
:math:`z` per image,

.. math:: \mathcal{L} = \sum_n \log q(z_n \mid x_n) - \log p(x_n \mid z_n) - \log p(z_n),
          \qquad z_n = \mu_\phi(x_n) + \sigma_\phi(x_n)\, \varepsilon_n,

then take one Adam step:

- Pyro, two ways: ``SVI(vae.model, vae.guide, optim, Trace_ELBO()).step(x)`` in a fresh
  param-store scope, with ``optim`` Pyro's own ``pyro.optim.Adam`` (one ``torch.optim.Adam``
  per parameter tensor) or ``MultiTensorAdam`` (one multi-tensor Adam over all of them, what
  ``fit`` trains with); ``--svi guarded`` uses the training loop's ``GuardedSVI`` with its
  ``Trace_ELBO(num_particles=1, max_plate_nesting=1)``, without gradient clipping;
- plain PyTorch: the encoder's reparameterised :math:`z`, ``vae.likelihood(z).log_prob(x)``,
  ``vae.prior().log_prob(z)``, ``torch.distributions.Normal(loc, scale).log_prob(z)``,
  ``loss.backward()`` and one ``torch.optim.Adam(foreach=True).step()`` over the same
  parameters (the multi-tensor Adam, as ``MultiTensorAdam``'s).

First, the losses are computed from the same random seed (the same :math:`z`), and must agree to
1e-4 relative. An overhead is the median over repeats of a Pyro step's time over the plain
step's, minus 1; the three steps of a mode are timed interleaved, each on its own copy of one
model (the Pyro steps each in the param-store scope of its copy: entering one is part of their
time).

Run ``python benchmarks/bench_pyro_overhead.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import Tensor

from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.presets import PRESETS
from pyro_vaeflow.training import GuardedSVI, MultiTensorAdam
from pyro_vaeflow.training import phase as training_phase

from timing import add_common_options, fashion_mnist, measure, median_ratio, reported_machine

TARGET = 0.05  # the target: at most 5% overhead


def plain_loss(vae: VAEFlow, x: Tensor) -> Tensor:
    """The negative ELBO of the batch, summed over the images, written with torch alone."""
    loc, scale = vae.encoder(x)
    z = loc + torch.randn_like(loc) * scale
    log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    log_p = vae.likelihood(z).log_prob(x) + vae.prior().log_prob(z)
    return (log_q - log_p).sum()


def plain_step(vae: VAEFlow, x: Tensor, lr: float) -> Callable[[], float]:
    """One training step in plain PyTorch: the loss, its gradients, one Adam step."""
    trainable = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr, foreach=True)

    def run() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = plain_loss(vae, x)
        loss.backward()
        optimizer.step()
        return loss.item()

    return run


OPTIMISERS = {
    "pyro.optim.Adam": lambda lr: pyro.optim.Adam({"lr": lr}),
    "MultiTensorAdam": lambda lr: MultiTensorAdam(lr=lr),
}


def pyro_svi(vae: VAEFlow, optim, kind: str) -> SVI:
    """Pyro's SVI with ``Trace_ELBO``, or the training loop's ``GuardedSVI`` (``"guarded"``)."""
    if kind == "guarded":
        elbo = Trace_ELBO(num_particles=1, max_plate_nesting=1)  # as fit builds it
        return GuardedSVI(vae.model, vae.guide, optim, elbo)
    return SVI(vae.model, vae.guide, optim, Trace_ELBO())


def step_in_scope(svi: SVI, scope: dict, x: Tensor) -> float:
    """One SVI step in the param store ``scope``."""
    with pyro.get_param_store().scope(scope):
        return svi.step(x)


def check_losses(svi: SVI, vae: VAEFlow, x: Tensor, seed: int) -> tuple[float, float]:
    """Pyro's and the plain negative ELBO from the same seed; raises unless they agree."""
    with torch.no_grad():
        torch.manual_seed(seed)
        pyro_loss = float(svi.evaluate_loss(x))
        torch.manual_seed(seed)
        plain = plain_loss(vae, x).item()
    if abs(pyro_loss - plain) > 1e-4 * abs(plain):
        raise AssertionError(f"Pyro's loss {pyro_loss} differs from the plain loss {plain}")
    return pyro_loss, plain


def main(args: argparse.Namespace) -> None:
    """Print the machine, the loss check, then Pyro's and the plain step times, as Markdown."""
    preset = PRESETS["cpu"]
    batch = preset.batch_size
    if args.quick:
        batch, args.repeats, args.min_time, args.warmup = 8, 1, 0.0, 0
    with reported_machine():
        x = fashion_mnist(batch, "train", args.seed).to(args.device)
        side = "fit's GuardedSVI" if args.svi == "guarded" else "Pyro's SVI"
        print(
            f"VAEFlow((1, 28, 28), **PRESETS['cpu'].model), batch {batch} of Fashion-MNIST, "
            f"Adam lr {preset.lr}; Pyro side: {side} with Trace_ELBO; "
            f"median of {args.repeats} interleaved repeats.\n",
            flush=True,
        )
        rows = []
        for mode in args.modes:
            torch.manual_seed(args.seed)
            vae = VAEFlow((1, 28, 28), **preset.model).to(args.device)
            steps = {}
            with ExitStack() as stack:
                twin = copy.deepcopy(vae)
                stack.enter_context(training_phase(twin, mode))
                for name, make in OPTIMISERS.items():
                    copy_ = copy.deepcopy(vae)
                    stack.enter_context(training_phase(copy_, mode))
                    svi = pyro_svi(copy_, make(preset.lr), args.svi)
                    with pyro.get_param_store().scope() as scope:  # a param store per copy
                        pyro_loss, plain = check_losses(svi, twin, x, args.seed)
                    print(
                        f"Loss check ({mode}, {name}): Pyro {pyro_loss:.6g}, plain {plain:.6g}",
                        end="",
                    )
                    print(
                        f", relative difference {abs(pyro_loss - plain) / abs(plain):.1e}",
                        flush=True,
                    )
                    steps[name] = partial(step_in_scope, svi, scope, x)
                steps["plain"] = plain_step(twin, x, preset.lr)
                times = measure(steps, args.repeats, args.min_time, args.warmup)
            rows.append((mode, times))
        print(f"\n### Pyro overhead: a VAEFlow training step ({side}) against plain PyTorch\n")
        names = list(OPTIMISERS)
        print(
            "| mode | plain PyTorch (ms/step) | "
            + " | ".join(f"{side} + {name} (ms/step) | overhead" for name in names)
            + " | target |"
        )
        print("|---|---:|" + "---:|---:|" * len(names) + "---|")
        for mode, times in rows:
            overheads = {name: median_ratio(times[name], times["plain"]) - 1 for name in names}
            cells = " | ".join(
                f"{1e3 * statistics.median(times[name]):.1f} | {100 * overheads[name]:+.1f}%"
                for name in names
            )
            ours = overheads["MultiTensorAdam"]
            verdict = "met" if ours <= TARGET else "MISSED"
            label = f"{mode} ({'Glow on' if mode == 'joint' else 'Glow off'})"
            print(
                f"| {label} | {1e3 * statistics.median(times['plain']):.1f} | {cells} "
                f"| ≤ {100 * TARGET:.0f}% with MultiTensorAdam: {verdict} |"
            )


def parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`main`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", nargs="+", choices=["joint", "vae"], default=["joint", "vae"])
    p.add_argument(
        "--svi", choices=["plain", "guarded"], default="plain", help="Pyro's SVI or GuardedSVI"
    )
    add_common_options(
        p,
        quick="batch 8, one repeat (smoke test)",
        repeats=15,
        warmup=3,
        min_time=1.0,
        seed=0,
        device="cpu",
    )
    return p


if __name__ == "__main__":
    main(parser().parse_args())
