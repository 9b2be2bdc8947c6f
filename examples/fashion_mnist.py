"""The main job: train VAE+Glow on Fashion-MNIST, evaluate it, draw the figures.

Phase 1 trains the VAE and its flow prior, phase 2 only the Glow layer; then the test ELBO and
the importance-sampled likelihood (bits/dim), FID, and the figures (samples at three Glow
temperatures, sharpening, interpolation, training curves) go to the run directory.

    python examples/fashion_mnist.py --preset cpu --run-dir runs/fashion_mnist
    python examples/fashion_mnist.py --preset cpu --run-dir runs/fashion_mnist --resume
    python examples/fashion_mnist.py --preset cpu --compile   # the networks compiled
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pyro_vaeflow.acceleration import PRECISIONS, Acceleration
from pyro_vaeflow.presets import PRESETS, get_preset, override
from pyro_vaeflow.run import evaluate, make_figures, summary_table, train

SMOKE = {
    "train_images": 256,
    "elbo_images": 64,
    "is_images": 4,
    "is_samples": 8,
    "fid_samples": 10,
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--run-dir", type=Path, help="default: runs/fashion_mnist")
    parser.add_argument("--data-dir", type=Path, help="default: the Debian package's files")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resume", action="store_true", help="continue a stopped run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fid", action="store_true", help="skip FID")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--compile", action="store_true", help="compile the networks")
    parser.add_argument(
        "--precision", choices=sorted(PRECISIONS), default="fp32", help="the networks' arithmetic"
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run in a temporary folder")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    preset = get_preset(args.preset)
    if args.smoke:  # one epoch of each phase, on a few images
        preset = override(preset, epochs=dict.fromkeys(preset.epochs, 1), **SMOKE)
    run_dir = args.run_dir or (
        Path(tempfile.mkdtemp(prefix="vaeflow-smoke-"))
        if args.smoke
        else Path("runs/fashion_mnist")
    )
    began = time.perf_counter()
    vae, history = train(
        preset,
        run_dir,
        data_dir=args.data_dir,
        device=args.device,
        resume=args.resume,
        seed=args.seed,
        progress=not args.quiet,
        acceleration=Acceleration(compile=args.compile, precision=args.precision),
    )
    metrics = evaluate(
        vae,
        preset,
        run_dir,
        data_dir=args.data_dir,
        fid=not args.no_fid,
        seed=args.seed,
        progress=not args.quiet,
    )
    make_figures(vae, history, run_dir, seed=args.seed)
    minutes = (time.perf_counter() - began) / 60
    print(f"\n{preset.name} preset on {preset.dataset}, run directory {run_dir}\n")
    print(summary_table(metrics, history))
    print(f"| total minutes (training and evaluation) | {minutes:.1f} |")
    return metrics


if __name__ == "__main__":
    main(parse_args())
