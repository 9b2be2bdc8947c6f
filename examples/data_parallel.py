r"""Your own SVI loop on many processes: ``DataParallelSVI`` and the global batch's shards.

A small VAE with a ``FlowDecoder`` likelihood, written as an ordinary Pyro model and guide, is
trained with the same loop in one process or under ``torchrun``. Every process draws the same
global batch of images and trains on its share of it (``distributed.shard``);
``DataParallelSVI`` (Pyro's ``Trace_ELBO`` of the model and guide, driven by
``DistributedDataParallel``) makes each step follow the gradient of the global batch, and rank 0
prints.

Usage::

    python examples/data_parallel.py --steps 200
    torchrun --standalone --nproc_per_node 2 examples/data_parallel.py --steps 200
    python examples/data_parallel.py --smoke   # a few steps of a tiny model
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO
from torch import Tensor, nn

from pyro_vaeflow.data import dequantize, load_images
from pyro_vaeflow.distributed import is_main, process_group, rank_seed, shard, world_size
from pyro_vaeflow.distributions import FlowDecoder
from pyro_vaeflow.infer import bits_per_dim
from pyro_vaeflow.training import DataParallelSVI, MultiTensorAdam
from pyro_vaeflow.transforms import glow

IMAGE_SHAPE = (1, 28, 28)


class SmallFlowVAE(nn.Module):
    """An MLP VAE whose Gaussian decoder is pushed through a small additive Glow flow."""

    def __init__(self, latent_dim: int, hidden_dim: int, glow_depth: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Flatten(-3),
            nn.Linear(784, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, 2 * latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 2 * 784)
        )
        self.flow = glow(1, glow_depth, hidden_channels=16, squeeze=1, init="identity")

    def model(self, x: Tensor) -> None:
        pyro.module("decoder", self.decoder)
        pyro.module("flow", self.flow)
        with pyro.plate("data", len(x)):  # this rank's share of the global batch
            zeros = x.new_zeros(len(x), self.latent_dim)
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            loc, pre_scale = self.decoder(z).reshape(-1, 2, *IMAGE_SHAPE).unbind(1)
            pyro.sample("x", FlowDecoder(loc, F.softplus(pre_scale) + 1e-3, self.flow), obs=x)

    def guide(self, x: Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            loc, pre_scale = self.encoder(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, F.softplus(pre_scale) + 1e-3).to_event(1))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="SVI steps")
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch")
    parser.add_argument("--images", type=int, default=10000, help="training images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a few steps of a tiny model")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> float:
    steps, images = (3, 256) if args.smoke else (args.steps, args.images)
    with process_group(args.device) as device:  # joins torchrun's group, if any
        if args.batch_size % world_size():
            raise SystemExit(f"--batch-size must divide by the {world_size()} processes")
        pixels = load_images("fashion-mnist", "train")[:images]
        torch.manual_seed(args.seed)  # DDP starts every rank from rank 0's weights anyway
        vae = SmallFlowVAE(4 if args.smoke else 16, 32 if args.smoke else 256, 2).to(device)
        optim = MultiTensorAdam(lr=1e-3)
        svi = DataParallelSVI(vae.model, vae.guide, optim, Trace_ELBO(), parameters=vae)
        order = torch.Generator().manual_seed(args.seed)  # the same batches on every rank
        torch.manual_seed(rank_seed(args.seed))  # but each rank its own noise
        for step in range(steps):
            index = torch.randint(len(pixels), (args.batch_size,), generator=order)
            x = dequantize(shard(pixels[index])).to(device)
            loss = svi.step(x)  # the global batch's negative ELBO
            bpd = float(bits_per_dim(-loss / args.batch_size, 784))
            if is_main() and (step % 50 == 0 or step == steps - 1):
                print(f"step {step}: {bpd:.3f} bits/dim (global batch of {args.batch_size})")
    return bpd


if __name__ == "__main__":
    main(parse_args())
