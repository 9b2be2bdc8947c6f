"""Train VLAE or AGAVE (PixelCNN decoders) on Fashion-MNIST; report bits/dim; draw samples.

VLAE (``--model vlae``): an autoregressive-flow prior and a PixelCNN decoder with a small local
window, on dynamically binarised images (``--likelihood bernoulli``, the paper's setting) or on
8-bit images (``--likelihood logistic``). AGAVE (``--model agave``): an auxiliary factorised VAE
decoder guiding a PixelCNN, on 8-bit images. The test ELBO and the importance-sampled
log-likelihood are reported in bits/dim of the observed pixels (1-bit or 8-bit), and a grid of
samples (for AGAVE, next to the auxiliary decoder's means for the same latents) is written to
the run directory. PixelCNN sampling is sequential: one network pass per pixel.

    python examples/autoregressive.py --model vlae --run-dir runs/vlae
    python examples/autoregressive.py --model agave --epochs 5 --run-dir runs/agave
    python examples/autoregressive.py --model agave --smoke   # seconds
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import pyro
import torch
from matplotlib.figure import Figure

from pyro_vaeflow.data import DynamicallyBinarized, binarize, dequantize, load_images
from pyro_vaeflow.infer import bits_per_dim, elbo, log_likelihood
from pyro_vaeflow.models import AGAVE, VLAE
from pyro_vaeflow.plotting import image_grid, save_figure
from pyro_vaeflow.training import fit
from pyro_vaeflow.training.batches import to_model

SMOKE = {
    "train_images": 256,
    "epochs": 1,
    "batch_size": 32,
    "test_images": 16,
    "is_images": 4,
    "is_samples": 8,
    "samples": 4,
}
SMOKE_SIZES = {"latent_dim": 4, "base_channels": 4, "fc_dim": 16, "pixelcnn_channels": 8}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["vlae", "agave"], default="vlae")
    parser.add_argument(
        "--likelihood",
        choices=["bernoulli", "logistic"],
        default="bernoulli",
        help="VLAE's pixels: dynamically binarised (bernoulli) or 8-bit (logistic)",
    )
    parser.add_argument("--window", type=int, default=3, help="VLAE's PixelCNN window radius")
    parser.add_argument("--free-bits", type=float, default=0.0, help="VLAE: nats per latent dim")
    parser.add_argument("--aux-levels", type=int, help="AGAVE: colour levels of the aux image")
    parser.add_argument("--aux-downsample", type=int, default=1, help="AGAVE: aux resolution")
    parser.add_argument("--aux-weight", type=float, default=1.0, help="AGAVE: weight of aux term")
    parser.add_argument("--kl-weight", type=float, default=2.0, help="AGAVE: the paper's λ")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-images", type=int, help="use the first N training images")
    parser.add_argument("--test-images", type=int, default=1000, help="test images, ELBO")
    parser.add_argument("--is-images", type=int, default=100, help="test images, IS")
    parser.add_argument("--is-samples", type=int, default=100, help="importance samples K")
    parser.add_argument("--samples", type=int, default=16, help="images in the sample grid")
    parser.add_argument("--time-budget", type=float, help="training seconds")
    parser.add_argument("--run-dir", type=Path, help="default: runs/<model>")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--smoke", action="store_true", help="a tiny run in a temporary folder")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> VLAE | AGAVE:
    """The model the options ask for (tiny sizes under ``--smoke``)."""
    sizes = SMOKE_SIZES if args.smoke else {}
    if args.model == "vlae":
        return VLAE(
            (1, 28, 28),
            likelihood=args.likelihood,
            window=args.window,
            free_bits=args.free_bits,
            **({**sizes, "cond_channels": 2, "prior_hidden_dims": (8,)} if args.smoke else {}),
        )
    return AGAVE(
        (1, 28, 28),
        aux_levels=args.aux_levels,
        aux_downsample=args.aux_downsample,
        aux_weight=args.aux_weight,
        kl_weight=args.kl_weight,
        **({**sizes, "cond_channels": 4, "pixelcnn_layers": 2} if args.smoke else {}),
    )


def _test_images(model, pixels: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if model.n_bits == 1:
        return binarize(pixels, generator)
    return dequantize(pixels, model.n_bits, generator)


def evaluate(model, x: torch.Tensor, is_images: int, is_samples: int, progress: bool) -> dict:
    """Test ELBO and importance-sampled log-likelihood, in bits/dim of the observed pixels."""
    model.eval()
    with pyro.get_param_store().scope(), torch.no_grad():
        bounds = torch.cat(
            [
                elbo(model.model, model.guide, to_model(x[i : i + 100], model))
                for i in range(0, len(x), 100)
            ]
        )
        subset = x[:is_images]
        log_px = torch.cat(
            [
                log_likelihood(
                    model.model,
                    model.guide,
                    to_model(subset[i : i + 10], model),
                    num_samples=is_samples,
                    chunk_size=min(is_samples, 50),
                    progress=progress,
                )
                for i in range(0, len(subset), 10)
            ]
        )
    model.train()
    n_bits = model.n_bits
    return {
        "test_elbo_bpd": float(bits_per_dim(bounds.mean(), model.num_dims, n_bits)),
        "test_is_bpd": float(bits_per_dim(log_px.mean(), model.num_dims, n_bits)),
        "test_images": len(x),
        "is_images": len(log_px),
        "is_samples": is_samples,
        "n_bits": n_bits,
    }


def sample_figure(model, n: int, seed: int, progress: bool) -> Figure:
    """Samples (and, for AGAVE, the auxiliary means of the same latents) as a figure."""
    torch.manual_seed(seed)
    model.eval()
    nrow = max(1, int(math.sqrt(n)))
    with torch.no_grad():
        if isinstance(model, AGAVE):
            z = torch.randn(n, model.latent_dim)
            panels = [
                ("auxiliary decoder ŷ(z)", model.decode_aux(z)),
                ("PixelCNN samples x ~ p(x | ŷ(z))", model.decode(z, progress)),
            ]
        else:
            panels = [("VLAE samples", model.sample(n, progress))]
    model.train()
    fig = Figure(figsize=(3.2 * len(panels), 3.4), layout="constrained")
    for index, (title, images) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        ax.imshow(image_grid(images, nrow=nrow).permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
    return fig


def main(args: argparse.Namespace) -> dict:
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    run_dir = args.run_dir or (
        Path(tempfile.mkdtemp(prefix=f"{args.model}-smoke-"))
        if args.smoke
        else Path(f"runs/{args.model}")
    )
    progress = not args.quiet and not args.smoke
    torch.manual_seed(args.seed)
    model = build(args).to(args.device)
    train = load_images("fashion-mnist", "train")
    if args.train_images:
        train = train[: args.train_images]
    data = DynamicallyBinarized(train) if model.n_bits == 1 else train
    began = time.perf_counter()
    history = fit(
        model,
        data,
        "all",
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        n_bits=model.n_bits,
        run_dir=run_dir,
        resume=True,
        seed=args.seed,
        progress=progress,
        time_budget=args.time_budget,
    )
    model.save(run_dir / "model.pt")
    test = load_images("fashion-mnist", "test")[: args.test_images]
    metrics = evaluate(
        model, _test_images(model, test, args.seed), args.is_images, args.is_samples, progress
    )
    began_sampling = time.perf_counter()
    figure = sample_figure(model, args.samples, args.seed, progress)
    metrics["sampling_seconds"] = time.perf_counter() - began_sampling
    metrics["samples_figure"] = str(save_figure(figure, run_dir / "samples.png"))
    metrics["seconds_per_epoch"] = sum(row["seconds"] for row in history) / max(len(history), 1)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    minutes = (time.perf_counter() - began) / 60
    pixels = "binarised" if model.n_bits == 1 else f"{model.n_bits}-bit"
    print(f"\n{args.model.upper()} on Fashion-MNIST ({pixels} pixels), run directory {run_dir}\n")
    rows = [
        (f"test ELBO, bits/dim ({metrics['test_images']} images)", metrics["test_elbo_bpd"]),
        (
            f"test log p(x), importance-sampled, bits/dim ({metrics['is_images']} images, "
            f"K={metrics['is_samples']})",
            metrics["test_is_bpd"],
        ),
    ]
    print("| metric | value |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value:.4f} |")
    print(f"| seconds per epoch | {metrics['seconds_per_epoch']:.1f} |")
    seconds = metrics["sampling_seconds"]
    print(f"| sampling {args.samples} images (sequential), seconds | {seconds:.1f} |")
    print(f"| total minutes | {minutes:.1f} |")
    print(f"\nSamples: {metrics['samples_figure']}")
    return metrics


if __name__ == "__main__":
    main(parse_args())
