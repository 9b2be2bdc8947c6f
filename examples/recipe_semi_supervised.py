r"""Recipe: a semi-supervised VAE with an enumerated label and a flow-decoder likelihood.

As in Pyro's semi-supervised VAE tutorial, the model generates a class label :math:`y` and a
style :math:`z`, then the image from both, here through a Glow flow (``FlowDecoder``):

.. math:: y \sim \mathrm{Cat}(1/10), \quad z \sim \mathcal{N}(0, I), \quad
          x \mid y, z \sim f_\#\,\mathcal{N}(g_\mu(y, z), g_\sigma^2).

The label is observed for some images and enumerated in the model for the others
(``infer={"enumerate": "parallel"}``), so the guide :math:`q(z \mid x)` samples only
:math:`z`, and ``TraceEnum_ELBO`` sums :math:`y` out exactly. The per-datum queries of
``pyro_vaeflow.infer`` sum it out the same way for each image,

.. math:: \log w_n = \log \sum_y p(x_n, y, z_n) - \log q(z_n \mid x_n),

and the posterior over the label, :math:`p(y \mid x) \propto \mathbb{E}_q[p(x, y, z) / q(z)]`,
classifies test images.

Usage::

    python examples/recipe_semi_supervised.py           # 600 steps, 1000 of 4096 labelled
    python examples/recipe_semi_supervised.py --smoke   # tiny sizes, a few steps
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, TraceEnum_ELBO
from torch import Tensor, nn

from pyro_vaeflow.data import dequantize, load_images, load_labels
from pyro_vaeflow.distributions import FlowDecoder
from pyro_vaeflow.infer import bits_per_dim, elbo, log_likelihood
from pyro_vaeflow.training import MultiTensorAdam
from pyro_vaeflow.transforms import glow

CLASSES = 10


class SemiSupervisedVAE(nn.Module):
    """p(y) p(z) p(x | y, z) with a flow decoder; q(z | x) a diagonal Gaussian."""

    def __init__(self, latent_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Flatten(-3), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim + CLASSES, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 784),
            nn.Unflatten(-1, (1, 28, 28)),
        )
        self.log_scale = nn.Parameter(torch.full((1, 28, 28), -1.0))
        self.glow = glow(1, depth=depth, hidden_channels=hidden, squeeze=1)

    def model(self, x: Tensor, y: Tensor | None = None) -> None:
        pyro.module("ss_vae", self)
        with pyro.plate("data", x.shape[0]):
            prior = dist.Categorical(logits=torch.zeros(CLASSES))
            y = pyro.sample("y", prior, obs=y, infer={"enumerate": "parallel"})
            z = pyro.sample("z", dist.Normal(torch.zeros(self.latent_dim), 1.0).to_event(1))
            label = F.one_hot(y, CLASSES).to(z.dtype)  # [10, 1, 10] when enumerated
            batch = torch.broadcast_shapes(z.shape[:-1], label.shape[:-1])
            code = torch.cat([z.expand(*batch, -1), label.expand(*batch, -1)], -1)
            loc = torch.sigmoid(self.decoder(code))
            pyro.sample("x", FlowDecoder(loc, self.log_scale.exp(), self.glow), obs=x)

    def guide(self, x: Tensor, y: Tensor | None = None) -> None:
        pyro.module("ss_vae", self)
        with pyro.plate("data", x.shape[0]):
            loc, pre_scale = self.encoder(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, F.softplus(pre_scale) + 1e-3).to_event(1))


def classify(vae: SemiSupervisedVAE, x: Tensor, num_samples: int) -> Tensor:
    """The most probable label of each image: the argmax over y of an importance-sampled
    log p(x, y) (the label observed, the style z sampled from the guide)."""
    scores = [
        log_likelihood(
            vae.model,
            vae.guide,
            x,
            torch.full((len(x),), label),
            num_samples=num_samples,
            progress=False,
        )
        for label in range(CLASSES)
    ]
    return torch.stack(scores, -1).argmax(-1)


def main(args: argparse.Namespace) -> dict:
    pyro.set_rng_seed(args.seed)
    hidden, depth = (8, 1) if args.smoke else (args.hidden, args.depth)
    images, labelled = (32, 16) if args.smoke else (args.images, args.labelled)
    steps, samples = (4, 4) if args.smoke else (args.steps, args.num_samples)
    x = dequantize(load_images("fashion-mnist", "train")[:images])
    y = load_labels("fashion-mnist", "train")[:labelled].long()
    test_x = dequantize(load_images("fashion-mnist", "test")[: 16 if args.smoke else 256])
    test_y = load_labels("fashion-mnist", "test")[: len(test_x)].long()
    vae = SemiSupervisedVAE(args.latent_dim, hidden, depth)
    svi = SVI(vae.model, vae.guide, MultiTensorAdam(lr=1e-3), TraceEnum_ELBO(max_plate_nesting=1))
    batch = 8 if args.smoke else args.batch_size
    for step in range(steps):  # a labelled batch, then an unlabelled one
        start = step * batch % labelled
        supervised = svi.step(x[start : start + batch], y[start : start + batch])
        start = labelled + step * batch % (images - labelled)
        unsupervised = svi.step(x[start : start + batch])
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            print(
                f"step {step:4d}  loss per image: labelled {supervised / batch:8.1f}, "
                f"unlabelled {unsupervised / batch:8.1f}",
                flush=True,
            )
    bound = elbo(vae.model, vae.guide, test_x, num_particles=4)  # y summed out per image
    log_px = log_likelihood(vae.model, vae.guide, test_x, num_samples=samples, progress=False)
    accuracy = (classify(vae, test_x, samples) == test_y).float().mean()
    print(
        f"test ELBO {bits_per_dim(bound, 784).mean():.3f} bits/dim, log p(x) "
        f"{bits_per_dim(log_px, 784).mean():.3f} bits/dim; label accuracy {accuracy:.1%}"
    )
    return {"elbo": bound, "log_px": log_px, "accuracy": float(accuracy)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--labelled", type=int, default=1000, help="images with a label")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2, help="Glow steps")
    parser.add_argument("--num-samples", type=int, default=32, help="importance samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few steps")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
