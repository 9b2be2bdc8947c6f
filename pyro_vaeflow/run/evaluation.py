r"""Evaluate a trained model as its preset says: test ELBO, importance-sampled bits/dim, FID."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Literal

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from pyro_vaeflow.data import binarize, dequantize, load_images, quantize
from pyro_vaeflow.distributed import (
    barrier,
    gather_cat,
    gather_to_main,
    is_main,
    on_main,
    rank_seed,
    shard,
    shard_bounds,
)
from pyro_vaeflow.infer import bits_per_dim, elbo, log_likelihood
from pyro_vaeflow.interrupt import Interrupted, check_stop
from pyro_vaeflow.models import ImageModel, switched_off
from pyro_vaeflow.presets import Preset
from pyro_vaeflow.rundir import RunDir
from pyro_vaeflow.training import to_model

__all__ = ["evaluate", "fid_scores"]


def _test_images(preset: Preset, data_dir, seed: int) -> torch.Tensor:
    pixels = load_images(preset.dataset, "test", data_dir)
    generator = torch.Generator().manual_seed(seed)
    return (
        binarize(pixels, generator) if preset.binarize else dequantize(pixels, generator=generator)
    )


@contextmanager
def _evaluating(model: ImageModel, switches: tuple[str, ...] = ()) -> Iterator[None]:
    """Eval mode, some switches off and a private Pyro param store; all restored."""
    training = model.training
    model.eval()
    try:
        with switched_off(model, switches), pyro.get_param_store().scope():
            yield
    finally:
        model.train(training)


def _per_datum(function, model: ImageModel, images: torch.Tensor, batch_size: int, **kwargs):
    """``function``'s value for each image, each rank computing its share (all gathered)."""
    images = shard(images)
    values = [
        function(
            model.model, model.guide, to_model(images[i : i + batch_size], model), **kwargs
        ).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return gather_cat(_cat(values))


def _cat(values: list[torch.Tensor]) -> torch.Tensor:
    """The values one after the other (none: an empty tensor, a rank with no share)."""
    return torch.cat(values) if values else torch.empty(0)


def _elbo_metrics(model: ImageModel, images: torch.Tensor) -> dict:
    """The test ELBO of ``images`` in bits/dim, and that of each of the model's variants."""
    nats = _per_datum(elbo, model, images, 500)
    metrics = {
        "test_elbo_bpd": float(bits_per_dim(nats.mean(), model.num_dims, model.n_bits)),
        "test_elbo_images": len(images),
    }
    for name, variant in model.elbo_variants().items():
        with _evaluating(model, variant.switches_off):
            nats = _per_datum(elbo, model, images, 500)
        bpd = bits_per_dim(nats.mean(), model.num_dims, model.n_bits)
        metrics[f"test_elbo_bpd_{name}"] = float(bpd)
    return metrics


def _on_cpu(model: ImageModel) -> bool:
    return next(model.parameters()).device.type == "cpu"


def _importance(model: ImageModel, images: torch.Tensor, samples: int, progress: bool) -> dict:
    count, images = len(images), shard(images)  # each rank samples its share of the images
    log_px, ess = [], []
    batches = range(0, len(images), 25)
    for i in tqdm(batches, desc="importance sampling", disable=not progress, leave=False):
        check_stop(f"importance sampling of {i} images")  # a SIGTERM ends it here
        result = log_likelihood(
            model.model,
            model.guide,
            to_model(images[i : i + 25], model),
            num_samples=samples,
            # The default chunk was the fastest measured on a CPU; a GPU takes bigger ones.
            chunk_size=None if _on_cpu(model) else min(samples, 100),
            return_diagnostics=True,
            progress=False,
        )
        log_px.append(result.log_px.cpu())
        ess.append(result.ess.cpu())
    log_px = gather_cat(_cat(log_px)).mean()
    return {
        "test_is_bpd": float(bits_per_dim(log_px, model.num_dims, model.n_bits)),
        "test_is_images": count,
        "test_is_samples": samples,
        "test_is_mean_ess": float(gather_cat(_cat(ess)).mean()),
    }


def fid_scores(
    model: ImageModel,
    preset: Preset,
    *,
    data_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    vae_means: bool = True,
    precision: Literal["fp32", "bf16"] = "fp32",
    progress: bool = True,
) -> dict:
    """FID of ``preset.fid_samples`` samples against as many test images, in eval mode.

    The samples are the model's :meth:`~pyro_vaeflow.models.ImageModel.fid_samplers`:
    ``fid`` scores its samples, recorded with ``fid_temperature`` (``preset.temperature``)
    where they depend on it; a ``VAEFlow`` also gets ``fid_vae_mean``, the decoder means of the
    same latents, unless ``vae_means`` is false (it asks the model for its main sampler only).
    The reference statistics of the test images are cached in ``cache_dir``. Under a process
    group each rank draws its share of the samples and computes their Inception features;
    rank 0 gathers them, computes the statistics and the distance, and every rank returns it.

    The Inception network is :func:`~pyro_vaeflow.metrics.inception_network` with its batch
    norms folded; ``precision="bf16"`` runs it in bfloat16, a fast approximation on hardware
    with bf16 arithmetic, not FID's protocol: its scores are recorded with
    ``fid_precision: "bf16"`` and its reference statistics are cached apart.
    """
    from pyro_vaeflow.metrics import (
        activations,
        frechet_distance,
        inception_network,
        moments,
        reference_statistics,
    )

    device = next(model.parameters()).device
    network = inception_network(weights, device=device, precision=precision)
    n, reference = preset.fid_samples, None
    if is_main():  # the reference statistics, computed once and cached, are rank 0's to use
        pixels = load_images(preset.dataset, "test", data_dir)
        name = f"{preset.dataset}-test"
        reference = reference_statistics(name, pixels, network, n, cache_dir, progress=progress)
    torch.manual_seed(rank_seed(seed))
    start, end = shard_bounds(n)  # each rank draws its share of the samples
    metrics: dict = {"fid_samples": n}
    if precision != "fp32":
        metrics["fid_precision"] = precision
    with _evaluating(model):
        samplers = model.fid_samplers(end - start, preset.temperature, main_only=not vae_means)
        if samplers["fid"].uses_temperature:
            metrics["fid_temperature"] = preset.temperature
        for name, sampler in samplers.items():

            def eight_bit(count, draw=sampler.draw):
                return quantize(draw(count).clamp(0.0, 1.0 - 1e-6))  # 8-bit, like the test set

            share = end - start
            mine = activations(eight_bit, network, share, progress=progress) if share else None
            features = gather_to_main(mine)

            def distance(features=features) -> float:
                stats = moments(np.concatenate([f for f in features if f is not None]))
                return frechet_distance(stats, reference)

            metrics[name] = on_main(distance)  # rank 0's, or its error, on every rank
    return metrics


def evaluate(
    model: ImageModel,
    preset: Preset,
    run_dir: str | os.PathLike | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    fid: bool = True,
    fid_weights: str | os.PathLike | None = None,
    fid_cache_dir: str | os.PathLike | None = None,
    fid_precision: Literal["fp32", "bf16"] = "fp32",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    r"""Test likelihoods and FID of a trained model, as the preset says.

    The same code scores every architecture, through its Pyro ``model`` and ``guide`` and
    what it declares (:class:`~pyro_vaeflow.models.ImageModel`):

    * ``test_elbo_bpd``: the test ELBO in bits/dim, :math:`n - \mathrm{ELBO}/(D \ln 2)` for
      the model's :math:`n`-bit pixels, on ``elbo_images`` test images (all by default); and
      ``test_elbo_bpd_<name>`` for each of the model's ELBO variants
      (:meth:`~pyro_vaeflow.models.ImageModel.elbo_variants`; for a ``VAEFlow``,
      ``without_glow``: the phase-1 model);
    * ``test_is_bpd``: the importance-sampled bits/dim, with ``is_samples`` samples per image on
      the first ``is_images`` test images, with its mean effective sample size (a model without
      latent variables, such as the standalone Glow, gets its exact likelihood);
    * ``fid`` (and the model's other samplers, such as ``fid_vae_mean``): FID of
      ``fid_samples`` samples against as many test images (see :func:`fid_scores`, whose
      ``precision`` is ``fid_precision``: ``"bf16"`` is a fast approximation, not the protocol).

    ``labels`` names each of the model's own metrics for the summary table. With a
    ``run_dir``, the results go to ``<run_dir>/metrics.json`` after each of the three stages
    (ELBO, importance sampling, FID), marked ``"partial": true`` until the last. An evaluation
    that was stopped continues from there: a partial ``metrics.json`` whose ``"evaluation"``
    entry (a hash of the weights, the seed and the preset's sample sizes) is this evaluation's
    keeps its finished stages. Each stage draws from ``seed`` afresh, so a continued evaluation
    gives what an uninterrupted one gives; ``evaluation_seconds`` adds up the time of every
    call. The run's lock (:mod:`pyro_vaeflow.lock`) is held meanwhile, and inside a
    :class:`~pyro_vaeflow.interrupt.GracefulStop` a SIGTERM or Ctrl-C ends the evaluation
    within one batch with :class:`~pyro_vaeflow.interrupt.Interrupted`, its finished stages
    kept.

    Under a :mod:`torch.distributed` process group every rank calls it: each computes the ELBO
    and the importance-sampled likelihood of its share of the test images and draws its share of
    the FID samples, the values are gathered in image order, and rank 0 writes the file. The
    result is a one-process evaluation of the same images, but for the Monte-Carlo noise, which
    each rank draws from its own stream (exactly the same for a model without latents, such as
    the standalone Glow).
    """
    run = None if run_dir is None else RunDir(run_dir)
    with nullcontext() if run is None else run.lock():
        return _evaluate(
            model,
            preset,
            run,
            data_dir,
            fid,
            fid_weights,
            fid_cache_dir,
            fid_precision,
            seed,
            progress,
        )


def _evaluate(
    model: ImageModel,
    preset: Preset,
    run: RunDir | None,
    data_dir,
    fid: bool,
    fid_weights,
    fid_cache_dir,
    fid_precision: Literal["fp32", "bf16"],
    seed: int,
    progress: bool,
) -> dict:
    started, progress = time.perf_counter(), progress and is_main()
    images = _test_images(preset, data_dir, seed)
    metrics = {"preset": preset.name, "dataset": preset.dataset, "labels": _labels(model, preset)}
    if run is not None:
        metrics["evaluation"] = _evaluation_settings(model, preset, seed)
        metrics = _unfinished(run, metrics)
    spent = metrics.pop("evaluation_seconds", 0.0)
    stages = {
        "test_elbo_bpd": lambda: _elbo_metrics(model, images[: preset.elbo_images]),
        "test_is_bpd": lambda: _importance(
            model, images[: preset.is_images], preset.is_samples, progress
        ),
    }
    if fid:
        options = {"weights": fid_weights, "cache_dir": fid_cache_dir, "progress": progress}
        options["precision"] = fid_precision
        stages["fid"] = lambda: fid_scores(model, preset, data_dir=data_dir, seed=seed, **options)
    kept = [key for key in stages if key in metrics]
    if kept and progress:
        tqdm.write(f"evaluate: continuing a stopped evaluation; kept {', '.join(kept)} ({run})")
    for key, stage in stages.items():
        if key in metrics:
            continue
        torch.manual_seed(rank_seed(seed))
        try:
            with _evaluating(model):
                metrics.update(stage())
        except Interrupted as stop:
            done = [name for name in stages if name in metrics] or ["no stage"]
            where = "nothing" if run is None else f"{run.metrics_path}"
            raise Interrupted(
                stop.signum, f"{where} (finished: {', '.join(done)}; {key} begins again)"
            ) from None
        metrics["evaluation_seconds"] = spent + time.perf_counter() - started
        if run is not None and is_main():
            run.write_metrics({**metrics, "partial": True})
    metrics["evaluation_seconds"] = spent + time.perf_counter() - started
    if run is not None and is_main():
        run.write_metrics(metrics)
    barrier()
    return metrics


def _labels(model: ImageModel, preset: Preset) -> dict:
    """The summary-table rows of the metrics the model declares."""
    labels = {
        f"test_elbo_bpd_{name}": variant.label for name, variant in model.elbo_variants().items()
    }
    device = next(model.parameters()).device
    with _evaluating(model), torch.random.fork_rng([device] if device.type == "cuda" else []):
        samplers = model.fid_samplers(1, preset.temperature)  # to read their labels
    labels.update({name: sampler.label for name, sampler in samplers.items()})
    return labels


def _evaluation_settings(model: ImageModel, preset: Preset, seed: int) -> dict:
    """What an evaluation's numbers depend on: the weights, the seed and the sample sizes."""
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    sizes = ("elbo_images", "is_images", "is_samples", "binarize", "fid_samples", "temperature")
    settings = {"model_sha1": digest.hexdigest(), "seed": seed}
    settings.update({key: getattr(preset, key) for key in sizes})
    return json.loads(json.dumps(settings))  # as it reads back from metrics.json


def _unfinished(run: RunDir, metrics: dict) -> dict:
    """``metrics``, or the finished stages of a stopped evaluation with the same settings."""
    found = run.read_metrics()
    if found is None or not found.pop("partial", False):
        return metrics
    same = all(found.get(key) == value for key, value in metrics.items())
    return found if same else metrics
