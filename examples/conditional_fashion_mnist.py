r"""A class-conditional Glow on Fashion-MNIST: one flow, ten classes, samples of each.

The likelihood is ``FlowDecoder(loc, scale, flow, context=one_hot(y))``: a Gaussian base
:math:`\bar x \sim \mathcal{N}(\mu_y, \operatorname{diag}\sigma^2)`, with a learned mean image
per class and a learned per-pixel scale, pushed through a
:func:`~pyro_vaeflow.transforms.conditional_glow` whose coupling networks all see the one-hot
label :math:`y` as extra input channels:

.. math:: \bar x \sim \mathcal{N}(\mu_y, \operatorname{diag}\sigma^2), \qquad
          x = f_y(\bar x), \qquad
          \log p(x \mid y) = \log \mathcal{N}(f_y^{-1}(x); \mu_y, \sigma^2)
          + \log\left|\det \frac{\partial f_y^{-1}(x)}{\partial x}\right| .

One flow serves the ten classes: :math:`f_y` is ``flow.condition(one_hot(y))``. The model has
no latent variables, so SVI with ``Trace_ELBO`` and an empty guide maximises
:math:`\log p(x \mid y)` itself, on real Fashion-MNIST dequantised to :math:`[0, 1)` (nothing
is downloaded).

The script then draws each class at a reduced temperature (one row per class, the class names
as row labels) into a PNG, and prints the test bits/dim of :math:`p(x \mid y)`.

Usage::

    python examples/conditional_fashion_mnist.py            # a few minutes on 2 CPU cores
    python examples/conditional_fashion_mnist.py --steps 5000 --depth 16   # better samples
    python examples/conditional_fashion_mnist.py --smoke    # tiny sizes, a few seconds
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import Tensor, nn
from tqdm import tqdm

from pyro_vaeflow.data import dequantize, load_images, load_labels
from pyro_vaeflow.distributions import FlowDecoder
from pyro_vaeflow.infer import bits_per_dim
from pyro_vaeflow.plotting import image_grid, save_figure
from pyro_vaeflow.transforms import conditional_glow

IMAGE_SHAPE = (1, 28, 28)
NUM_DIMS = 28 * 28
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SMOKE = {
    "steps": 3,
    "batch_size": 8,
    "depth": 1,
    "hidden_channels": 8,
    "train_images": 64,
    "test_images": 16,
    "per_class": 2,
}


class ClassConditionalFlow(nn.Module):
    r""":math:`p(x \mid y)`: a Gaussian base with a mean per class, through a conditional Glow."""

    def __init__(self, depth: int, hidden_channels: int, coupling: str) -> None:
        super().__init__()
        # Two squeezes: the couplings work on 16 × 7 × 7, where a 3x3 convolution sees most of
        # the garment. init="data" sets each actnorm from the first training batch.
        self.flow = conditional_glow(
            1,
            len(CLASSES),
            depth=depth,
            hidden_channels=hidden_channels,
            coupling=coupling,
            squeeze=2,
        )
        self.class_loc = nn.Parameter(torch.zeros(len(CLASSES), *IMAGE_SHAPE))
        self.log_scale = nn.Parameter(torch.zeros(IMAGE_SHAPE))

    def likelihood(self, labels: Tensor, temperature: float = 1.0) -> FlowDecoder:
        """The distribution of one image per label, ``batch_shape == labels.shape``."""
        context = F.one_hot(labels, len(CLASSES)).to(self.log_scale.dtype)
        scale = self.log_scale.exp().expand(*labels.shape, *IMAGE_SHAPE)
        return FlowDecoder(
            self.class_loc[labels], scale, self.flow, context=context, temperature=temperature
        )

    def model(self, x: Tensor, labels: Tensor) -> None:
        pyro.module("class_conditional_flow", self)
        with pyro.plate("data", len(x)):
            pyro.sample("x", self.likelihood(labels), obs=x)

    def guide(self, x: Tensor, labels: Tensor) -> None:
        r"""No latent variables: the ELBO is :math:`\log p(x \mid y)` itself."""


def train(
    model: ClassConditionalFlow, pixels: Tensor, labels: Tensor, args: argparse.Namespace
) -> None:
    """SVI steps on random minibatches, each dequantised afresh."""
    svi = SVI(model.model, model.guide, Adam({"lr": args.lr}), Trace_ELBO())
    steps = tqdm(range(args.steps), desc="training", disable=args.quiet)
    for _ in steps:
        index = torch.randint(len(pixels), (args.batch_size,))
        loss = svi.step(dequantize(pixels[index]), labels[index]) / args.batch_size
        steps.set_postfix(bits_per_dim=f"{bits_per_dim(-loss, NUM_DIMS):.3f}")


@torch.no_grad()
def evaluate(model: ClassConditionalFlow, pixels: Tensor, labels: Tensor) -> float:
    r"""Bits/dim of :math:`p(x \mid y)` on dequantised test images (a seeded dequantisation)."""
    x = dequantize(pixels, generator=torch.Generator().manual_seed(0))
    log_px = torch.cat(
        [
            model.likelihood(labels[i : i + 500]).log_prob(x[i : i + 500])
            for i in range(0, len(x), 500)
        ]
    )
    return float(bits_per_dim(log_px.mean(), NUM_DIMS))


@torch.no_grad()
def class_samples(
    model: ClassConditionalFlow, per_class: int, temperature: float, seed: int
) -> tuple[Figure, Tensor]:
    """A figure with one row of ``per_class`` samples per class, and its image grid."""
    torch.manual_seed(seed)
    labels = torch.arange(len(CLASSES)).repeat_interleave(per_class)
    grid = image_grid(model.likelihood(labels, temperature).sample(), nrow=per_class)
    padding, height = 2, IMAGE_SHAPE[1]
    fig = Figure(figsize=(1.2 + 0.5 * per_class, 0.55 * len(CLASSES)), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_yticks(
        [padding + row * (height + padding) + height / 2 for row in range(len(CLASSES))],
        CLASSES,
    )
    ax.set_xticks([])
    ax.set_title(f"Samples of p(x | y) at T = {temperature}", fontsize=9)
    return fig, grid


def main(args: argparse.Namespace) -> dict:
    """Train the model, draw each class, and return the test bits/dim and the figure's path."""
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    out_dir = args.out_dir or (
        Path(tempfile.mkdtemp(prefix="conditional-smoke-"))
        if args.smoke
        else Path("runs/conditional_fashion_mnist")
    )
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    pixels, labels = load_images("fashion-mnist", "train"), load_labels("fashion-mnist", "train")
    if args.train_images:
        pixels, labels = pixels[: args.train_images], labels[: args.train_images]
    model = ClassConditionalFlow(args.depth, args.hidden_channels, args.coupling)
    print(f"training on {len(pixels)} labelled images for {args.steps} steps")
    train(model, pixels, labels, args)

    test = slice(0, args.test_images)
    test_pixels = load_images("fashion-mnist", "test")[test]
    bpd = evaluate(model, test_pixels, load_labels("fashion-mnist", "test")[test])
    print(f"test bits/dim of p(x | y): {bpd:.4f} ({len(test_pixels)} images)")

    fig, grid = class_samples(model, args.per_class, args.temperature, args.seed)
    path = save_figure(fig, out_dir / "samples_per_class.png")
    print(f"samples per class at T = {args.temperature}: {path}")
    return {"test_bpd": bpd, "figure": path, "grid_shape": tuple(grid.shape)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="SVI steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--depth", type=int, default=8, help="Glow steps")
    parser.add_argument("--hidden-channels", type=int, default=64, help="coupling width")
    parser.add_argument("--coupling", choices=["additive", "affine"], default="affine")
    parser.add_argument("--train-images", type=int, help="use the first N (default: all)")
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--per-class", type=int, default=10, help="samples drawn per class")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    parser.add_argument("--out-dir", type=Path, help="default: runs/conditional_fashion_mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes in a temporary folder")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
