r"""A whole run: train both phases from a preset, evaluate, draw the figures, summarise.

This is what ``pyro-vaeflow train``/``evaluate`` and ``examples/fashion_mnist.py`` call. A run
directory holds ``config.json``, the phase checkpoints (``vae.ckpt``, ``glow.ckpt``), the final
``model.pt``, ``metrics.jsonl`` (one line per epoch), ``metrics.json`` (the evaluation) and
``figures/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyro
import torch
from torch import nn
from tqdm.auto import tqdm

from pyro_vaeflow.checkpoint import load_checkpoint
from pyro_vaeflow.data import DynamicallyBinarized, binarize, dequantize, load_images, quantize
from pyro_vaeflow.infer import bits_per_dim, elbo, log_likelihood
from pyro_vaeflow.models import VAEFlow, build_model, sample_options
from pyro_vaeflow.presets import Preset
from pyro_vaeflow.training import fit, to_model

__all__ = ["evaluate", "fid_scores", "make_figures", "schedule", "summary_table", "train"]


#: What a resumed run must share with the run it continues; epochs, the time budget and the
#: evaluation settings may change.
_TRAINING_FIELDS = (
    "dataset",
    "image_shape",
    "model",
    "architecture",
    "joint",
    "binarize",
    "batch_size",
    "lr",
    "lr_halve_every",
    "clip_norm",
    "train_images",
)


def _check_config(run_dir: Path, preset: Preset, resume: bool) -> None:
    config = run_dir / "config.json"
    wanted = json.loads(json.dumps(preset.to_dict()))
    if config.exists():
        found = json.loads(config.read_text())
        changed = sorted(k for k in _TRAINING_FIELDS if found.get(k) != wanted[k])
        if resume and changed:
            raise ValueError(
                f"{run_dir} holds a run of another configuration (differs in {changed}); "
                "resume it with the same settings or use a new run directory"
            )
        if not resume and any(run_dir.glob("*.ckpt")):
            raise FileExistsError(
                f"{run_dir} already holds a run; pass resume=True (--resume) to continue it, "
                "or choose another run directory"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(wanted, indent=2) + "\n")


def schedule(preset: Preset, model: nn.Module) -> list[tuple[str, int]]:
    """The training phases of ``model`` under ``preset``, in order, with their epochs.

    Example:
        >>> from pyro_vaeflow.presets import get_preset
        >>> from pyro_vaeflow.models import VAEFlow, build_model, sample_options
        >>> schedule(get_preset("cpu"), VAEFlow((1, 28, 28), 2, glow_depth=1))
        [('vae', 6), ('glow', 4)]
    """
    if preset.architecture == "vaeflow":
        if preset.joint:
            return [("joint", preset.vae_epochs + preset.glow_epochs)]
        phases = [("vae", preset.vae_epochs)]
        if getattr(model, "glow", None) is not None and preset.glow_epochs > 0:
            phases.append(("glow", preset.glow_epochs))
        return phases
    if preset.architecture == "two-stage":
        return [("vae", preset.vae_epochs), ("second", preset.glow_epochs)]
    return [("all", preset.vae_epochs)]


def train(
    preset: Preset,
    run_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> tuple[nn.Module, list[dict]]:
    """Train the preset's model, phase after phase (see :func:`schedule`).

    For the paper's model: phase 1 (VAE and prior) and then phase 2 (the Glow layer), or one
    joint phase; for a two-stage VAE its two stages; for a single-phase model its one phase.
    Each phase checkpoints after every epoch; ``resume=True`` continues a stopped run exactly
    (once a phase has begun, the phases before it are not touched again), and may extend the
    epochs or change the time budget, but not the model or the optimiser settings. With a
    ``time_budget`` (the seconds of the training epochs, counted across resumes, so that a
    resumed run stops where an uninterrupted one would), each phase gets the share of what is
    left that its epochs are of the epochs left. The final model is saved as
    ``<run_dir>/model.pt``.

    Returns:
        The trained model and the history of all phases.
    """
    run_dir = Path(run_dir)
    _check_config(run_dir, preset, resume)
    pixels = load_images(preset.dataset, "train", data_dir)
    if tuple(pixels.shape[1:]) != preset.image_shape:
        raise ValueError(
            f"{preset.dataset} images are {tuple(pixels.shape[1:])}, but the preset expects "
            f"{preset.image_shape}"
        )
    pixels = pixels[: preset.train_images]
    torch.manual_seed(seed)
    model = build_model(preset.architecture, preset.image_shape, **preset.model).to(device)
    data = (
        DynamicallyBinarized(pixels, torch.Generator().manual_seed(seed))
        if preset.binarize
        else pixels
    )
    options = {
        "n_bits": _n_bits(model),
        "batch_size": preset.batch_size,
        "lr": preset.lr,
        "lr_halve_every": preset.lr_halve_every,
        "warmup_steps": preset.warmup_steps,
        "clip_norm": preset.clip_norm,
        "run_dir": run_dir,
        "resume": resume,
        "seed": seed,
        "progress": progress,
    }
    phases = schedule(preset, model)
    history: list[dict] = []
    for index, (name, epochs) in enumerate(phases):
        checkpoint = run_dir / f"{name}.ckpt"
        later = [later_name for later_name, _ in phases[index + 1 :]]
        if resume and any((run_dir / f"{n}.ckpt").exists() for n in later):
            # this phase is over: its weights are in a later phase's checkpoint
            history += load_checkpoint(checkpoint, kind="training")["history"]
            continue
        budget = None
        if preset.time_budget is not None:  # the epochs' seconds count, also across resumes
            done = resume and checkpoint.exists()
            spent = _seconds(
                load_checkpoint(checkpoint, kind="training")["history"] if done else []
            )
            left = max(preset.time_budget - _seconds(history), 0.0)
            budget = left * epochs / max(sum(e for _, e in phases[index:]), 1) - spent
        history += fit(model, data, name, epochs, time_budget=budget, **options)
    model.save(run_dir / "model.pt")
    return model, history


def _n_bits(model: nn.Module) -> int:
    """Bits per pixel of what ``model`` observes (1 for binary pixels; 8 by default)."""
    return getattr(model, "n_bits", 8)


def _seconds(history: list[dict]) -> float:
    return sum(row["seconds"] for row in history)


def _test_images(preset: Preset, data_dir, seed: int) -> torch.Tensor:
    pixels = load_images(preset.dataset, "test", data_dir)
    generator = torch.Generator().manual_seed(seed)
    return (
        binarize(pixels, generator) if preset.binarize else dequantize(pixels, generator=generator)
    )


@contextmanager
def _evaluating(model: nn.Module, glow_enabled: bool = True) -> Iterator[None]:
    """Eval mode, a VAEFlow's Glow layer on or off, a private Pyro param store; all restored."""
    training, enabled = model.training, getattr(model, "glow_enabled", None)
    model.eval()
    if enabled is not None:
        model.glow_enabled = glow_enabled
    try:
        with pyro.get_param_store().scope():
            yield
    finally:
        model.train(training)
        if enabled is not None:
            model.glow_enabled = enabled


def _per_datum(function, vae: nn.Module, images: torch.Tensor, batch_size: int, **kwargs):
    return torch.cat(
        [
            function(
                vae.model, vae.guide, to_model(images[i : i + batch_size], vae), **kwargs
            ).cpu()
            for i in range(0, len(images), batch_size)
        ]
    )


def _importance(vae: nn.Module, images: torch.Tensor, samples: int, progress: bool) -> dict:
    log_px, ess = [], []
    batches = range(0, len(images), 25)
    for i in tqdm(batches, desc="importance sampling", disable=not progress, leave=False):
        result = log_likelihood(
            vae.model,
            vae.guide,
            to_model(images[i : i + 25], vae),
            num_samples=samples,
            chunk_size=min(samples, 100),
            return_diagnostics=True,
            progress=False,
        )
        log_px.append(result.log_px.cpu())
        ess.append(result.ess.cpu())
    return {
        "test_is_bpd": float(bits_per_dim(torch.cat(log_px).mean(), vae.num_dims, _n_bits(vae))),
        "test_is_images": len(images),
        "test_is_samples": samples,
        "test_is_mean_ess": float(torch.cat(ess).mean()),
    }


def _samplers(model: nn.Module, n: int, temperature: float, vae_means: bool = True) -> dict:
    """Name → ``draw(count)``, the next ``count`` of ``n`` samples, for each FID to compute.

    A ``VAEFlow`` (or ``TwoStageVAE``) draws ``n`` latents once: ``"fid"`` scores the Glow
    samples at ``temperature`` and ``"fid_vae_mean"`` the decoder means of the same latents
    (without a Glow layer, ``"fid"`` scores the decoder means; ``vae_means=False`` leaves
    ``"fid_vae_mean"`` out). Other models are scored on
    their ``sample`` method (given ``temperature`` if it takes one).
    """
    if isinstance(model, VAEFlow):
        z = model.sample_latents(n)
        position = {"fid": 0, "fid_vae_mean": 0}
        with_glow = _samples_at_temperature(model)

        def latent_sampler(name):
            def draw(count):
                batch = z[position[name] : position[name] + count]
                position[name] += count
                if name == "fid" and with_glow:
                    return model.decode(batch, temperature)
                return model.decoder_mean(batch)

            return draw

        names = ["fid", "fid_vae_mean"] if with_glow and vae_means else ["fid"]
        return {name: latent_sampler(name) for name in names}
    options = sample_options(model, temperature=temperature, progress=False)
    return {"fid": lambda count: model.sample(count, **options)}


def _samples_at_temperature(model: nn.Module) -> bool:
    """Whether :func:`_samplers` draws ``model``'s ``"fid"`` samples at a temperature."""
    if isinstance(model, VAEFlow):
        return model.glow is not None and model.glow_enabled
    return "temperature" in sample_options(model, temperature=1.0)


def fid_scores(
    model: nn.Module,
    preset: Preset,
    *,
    data_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    vae_means: bool = True,
    progress: bool = True,
) -> dict:
    """FID of ``preset.fid_samples`` samples against as many test images, in eval mode.

    ``fid`` scores the samples at ``preset.temperature``, recorded as ``fid_temperature``, where
    the model samples at a temperature (a ``VAEFlow`` with its Glow layer, or a ``Glow``); a
    ``VAEFlow`` also gets ``fid_vae_mean``, the decoder means of the same latents (see
    :func:`evaluate`) unless ``vae_means`` is false. The
    reference statistics of the test images are cached in ``cache_dir``.
    """
    from pyro_vaeflow.metrics import fid, inception_network, reference_statistics

    pixels = load_images(preset.dataset, "test", data_dir)
    network = inception_network(weights, device=next(model.parameters()).device)
    n = preset.fid_samples
    reference = reference_statistics(
        f"{preset.dataset}-test",
        pixels,
        network,
        n_images=n,
        cache_dir=cache_dir,
        progress=progress,
    )
    torch.manual_seed(seed)
    metrics: dict = {"fid_samples": n}
    if _samples_at_temperature(model):
        metrics["fid_temperature"] = preset.temperature
    with _evaluating(model):
        for name, draw in _samplers(model, n, preset.temperature, vae_means).items():

            def eight_bit(count, draw=draw):
                return quantize(draw(count).clamp(0.0, 1.0 - 1e-6))  # 8-bit, like the test set

            metrics[name] = fid(eight_bit, reference, network, n_samples=n, progress=progress)
    return metrics


def evaluate(
    model: nn.Module,
    preset: Preset,
    run_dir: str | os.PathLike | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    fid: bool = True,
    fid_weights: str | os.PathLike | None = None,
    fid_cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    r"""Test likelihoods and FID of a trained model, as the preset says.

    The same code scores every architecture, through its Pyro ``model`` and ``guide``:

    * ``test_elbo_bpd``: the test ELBO in bits/dim, :math:`n - \mathrm{ELBO}/(D \ln 2)` for
      :math:`n`-bit pixels (8, or 1 for binarised ones), on
      ``elbo_images`` test images (all by default); for a ``VAEFlow`` with a Glow layer also
      ``test_elbo_bpd_without_glow``, the same bound with the Glow layer switched off (the
      phase-1 model, since phase 2 trains only the Glow layer);
    * ``test_is_bpd``: the importance-sampled bits/dim, with ``is_samples`` samples per image on
      the first ``is_images`` test images, with its mean effective sample size (a model without
      latent variables, such as the standalone Glow, gets its exact likelihood);
    * ``fid``: FID of ``fid_samples`` samples against as many test images (reference statistics
      cached). For a ``VAEFlow``, the samples are at the preset's Glow temperature and
      ``fid_vae_mean`` scores the VAE's means :math:`g_\mu(z)` for the same :math:`z`, to
      measure what the Glow layer adds (without a Glow layer, ``fid`` scores the means).

    With a ``run_dir``, the results go to ``<run_dir>/metrics.json`` after each of the three
    stages (ELBO, importance sampling, FID), marked ``"partial": true`` until the last. An
    evaluation that was stopped continues from there: a partial ``metrics.json`` whose
    ``"evaluation"`` entry (a hash of the weights, the seed and the preset's sample sizes) is this
    evaluation's keeps its finished stages. Each stage draws from ``seed`` afresh, so a
    continued evaluation gives what an uninterrupted one gives; ``evaluation_seconds`` adds up
    the time of every call.
    """
    started = time.perf_counter()
    images = _test_images(preset, data_dir, seed)
    path = None if run_dir is None else Path(run_dir) / "metrics.json"
    metrics = {"preset": preset.name, "dataset": preset.dataset}
    if path is not None:
        metrics["evaluation"] = _evaluation_settings(model, preset, seed)
        metrics = _unfinished(path, metrics)
    spent = metrics.pop("evaluation_seconds", 0.0)
    elbo_set = images[: preset.elbo_images]
    stages = {
        "test_elbo_bpd": lambda: _elbo_metrics(model, elbo_set),
        "test_is_bpd": lambda: _importance(
            model, images[: preset.is_images], preset.is_samples, progress
        ),
    }
    if fid:
        options = {"weights": fid_weights, "cache_dir": fid_cache_dir, "progress": progress}
        stages["fid"] = lambda: fid_scores(model, preset, data_dir=data_dir, seed=seed, **options)
    kept = [key for key in stages if key in metrics]
    if kept and progress:
        tqdm.write(f"evaluate: continuing a stopped evaluation; kept {', '.join(kept)} ({path})")
    for key, stage in stages.items():
        if key not in metrics:
            torch.manual_seed(seed)
            with _evaluating(model):
                metrics.update(stage())
            metrics["evaluation_seconds"] = spent + time.perf_counter() - started
            _write(path, {**metrics, "partial": True})
    metrics["evaluation_seconds"] = spent + time.perf_counter() - started
    _write(path, metrics)
    return metrics


def _elbo_metrics(model: nn.Module, images: torch.Tensor) -> dict:
    """The test ELBO of ``images`` in bits/dim (for a ``VAEFlow``, also without the Glow layer)."""
    nats = _per_datum(elbo, model, images, 500)
    metrics = {
        "test_elbo_bpd": float(bits_per_dim(nats.mean(), model.num_dims, _n_bits(model))),
        "test_elbo_images": len(images),
    }
    if isinstance(model, VAEFlow) and model.glow is not None:
        with _evaluating(model, glow_enabled=False):
            plain = _per_datum(elbo, model, images, 500)
        metrics["test_elbo_bpd_without_glow"] = float(bits_per_dim(plain.mean(), model.num_dims))
    return metrics


def _evaluation_settings(model: nn.Module, preset: Preset, seed: int) -> dict:
    """What an evaluation's numbers depend on: the weights, the seed and the sample sizes."""
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    sizes = ("elbo_images", "is_images", "is_samples", "binarize", "fid_samples", "temperature")
    settings = {"model_sha1": digest.hexdigest(), "seed": seed}
    settings.update({key: getattr(preset, key) for key in sizes})
    return json.loads(json.dumps(settings))  # as it reads back from metrics.json


def _unfinished(path: Path, metrics: dict) -> dict:
    """``metrics``, or the finished stages of a stopped evaluation with the same settings."""
    if not path.exists():
        return metrics
    try:
        found = json.loads(path.read_text())
    except ValueError:  # not JSON (a file cut short, say): nothing to keep
        return metrics
    if not isinstance(found, dict) or not found.pop("partial", False):
        return metrics
    same = all(found.get(key) == value for key, value in metrics.items())
    return found if same else metrics


def _write(path: Path | None, metrics: dict) -> None:
    """Write ``metrics`` to ``path`` (if any) as JSON, atomically: a stop leaves the old file or
    the new one, never half of one."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(metrics, indent=2) + "\n")
    temporary.replace(path)


def make_figures(
    model: nn.Module, history: list[dict], run_dir: str | os.PathLike, seed: int = 0
) -> list[Path]:
    """Draw the run's figures into ``<run_dir>/figures/``.

    For a ``VAEFlow``: ``samples.png`` (Glow temperatures 1.0, 0.7 and 0.5, the same
    :math:`z` in each panel), ``sharpening.png`` (the VAE mean next to Glow samples from the
    same :math:`z`, the paper's Fig. 4; only with a Glow layer) and ``interpolation.png``
    (Fig. 5). For other models, ``samples.png`` is a grid of their samples. Every run gets
    ``training_curves.png``.
    """
    from pyro_vaeflow import plotting

    folder = Path(run_dir) / "figures"
    if isinstance(model, VAEFlow):
        figures = {"samples": plotting.plot_samples(model, seed=seed)}
        if model.glow is not None:
            figures["sharpening"] = plotting.plot_sharpening(model, seed=seed)
        figures["interpolation"] = plotting.plot_interpolation(model, seed=seed)
    else:
        figures = {"samples": plotting.plot_sample_grid(model, seed=seed)}
    figures["training_curves"] = plotting.plot_training_curves(history)
    return [
        plotting.save_figure(figure, folder / f"{name}.png") for name, figure in figures.items()
    ]


_ROWS = (
    ("test_elbo_bpd", "test ELBO (bits/dim, lower is better)", "{:.3f}"),
    ("test_elbo_bpd_without_glow", "test ELBO without the Glow layer (bits/dim)", "{:.3f}"),
    ("test_is_bpd", "importance-sampled test NLL (bits/dim)", "{:.3f}"),
    ("test_is_mean_ess", "mean effective sample size", "{:.1f}"),
    ("fid", "FID of Glow samples", "{:.2f}"),
    ("fid_vae_mean", "FID of the VAE means", "{:.2f}"),
)


def summary_table(metrics: dict, history: list[dict] | None = None) -> str:
    """A Markdown table of the metrics (and the training time per phase, given the history).

    Example:
        >>> print(summary_table({"test_elbo_bpd": 4.5}))
        | metric | value |
        |---|---|
        | test ELBO (bits/dim, lower is better) | 4.500 |
    """
    lines = ["| metric | value |", "|---|---|"]
    for key, label, form in _ROWS:
        if metrics.get(key) is not None:
            suffix = ""
            if key == "test_is_bpd":
                suffix = f" (K={metrics['test_is_samples']}, {metrics['test_is_images']} images)"
            if key.startswith("fid"):
                suffix = (
                    f" ({metrics['fid_samples']} samples"
                    + (
                        f", T={metrics['fid_temperature']}"
                        if "fid_temperature" in metrics and key == "fid"
                        else ""
                    )
                    + ")"
                )
            lines.append(f"| {label}{suffix} | {form.format(metrics[key])} |")
    for phase in ("vae", "glow"):
        rows = [row for row in history or [] if row["phase"] == phase]
        if rows:
            minutes = sum(row["seconds"] for row in rows) / 60
            lines.append(f"| phase {phase}: epochs, minutes | {len(rows)}, {minutes:.1f} |")
    if "evaluation_seconds" in metrics:
        lines.append(f"| evaluation minutes | {metrics['evaluation_seconds'] / 60:.1f} |")
    return "\n".join(lines)
