r"""A whole run: train both phases from a preset, evaluate, draw the figures, summarise.

This is what ``pyro-vaeflow train``/``evaluate`` and ``examples/fashion_mnist.py`` call. A run
directory holds ``config.json``, the phase checkpoints (``vae.ckpt``, ``glow.ckpt``), the final
``model.pt``, ``metrics.jsonl`` (one line per epoch), ``metrics.json`` (the evaluation) and
``figures/``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from pyro_vaeflow.checkpoint import load_checkpoint
from pyro_vaeflow.data import dequantize, load_images, quantize
from pyro_vaeflow.infer import bits_per_dim, elbo, log_likelihood
from pyro_vaeflow.models import VAEFlow
from pyro_vaeflow.presets import Preset
from pyro_vaeflow.training import fit, to_model

__all__ = ["evaluate", "make_figures", "summary_table", "train"]


#: What a resumed run must share with the run it continues; epochs, the time budget and the
#: evaluation settings may change.
_TRAINING_FIELDS = (
    "dataset",
    "image_shape",
    "model",
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


def train(
    preset: Preset,
    run_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> tuple[VAEFlow, list[dict]]:
    """Train phase 1 (VAE and prior) and then phase 2 (the Glow layer) as the preset says.

    Each phase checkpoints after every epoch; ``resume=True`` continues a stopped run exactly
    (once phase 2 has begun, phase 1 is not touched again), and may extend the epochs or change
    the time budget, but not the model or the optimiser settings. With a ``time_budget``,
    phase 1 gets its share by epochs and phase 2 the rest. The final model is saved as
    ``<run_dir>/model.pt``.

    Returns:
        The trained model and the history of both phases.
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
    vae = VAEFlow(preset.image_shape, **preset.model).to(device)
    options = {
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
    began = time.perf_counter()
    budget = preset.time_budget
    share = preset.vae_epochs / max(preset.vae_epochs + preset.glow_epochs, 1)
    phase_two_started = resume and (run_dir / "glow.ckpt").exists()
    if phase_two_started:  # phase 1 is over: its weights are in the phase-2 checkpoint
        history = list(load_checkpoint(run_dir / "vae.ckpt", kind="training")["history"])
    else:
        history = fit(
            vae,
            pixels,
            "vae",
            preset.vae_epochs,
            time_budget=None if budget is None else budget * share,
            **options,
        )
    remaining = None if budget is None else max(budget - (time.perf_counter() - began), 0.0)
    if preset.glow_epochs > 0 and vae.glow is not None:
        history = history + fit(
            vae, pixels, "glow", preset.glow_epochs, time_budget=remaining, **options
        )
    vae.save(run_dir / "model.pt")
    return vae, history


def _test_images(preset: Preset, data_dir, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = load_images(preset.dataset, "test", data_dir)
    return pixels, dequantize(pixels, generator=torch.Generator().manual_seed(seed))


@contextmanager
def _evaluating(vae: VAEFlow, glow_enabled: bool = True) -> Iterator[None]:
    """Eval mode, the Glow layer on or off, and a private Pyro param store; all restored."""
    training, enabled = vae.training, vae.glow_enabled
    vae.eval()
    vae.glow_enabled = glow_enabled
    try:
        with pyro.get_param_store().scope():
            yield
    finally:
        vae.train(training)
        vae.glow_enabled = enabled


def _per_datum(function, vae: VAEFlow, images: torch.Tensor, batch_size: int, **kwargs):
    return torch.cat(
        [
            function(
                vae.model, vae.guide, to_model(images[i : i + batch_size], vae), **kwargs
            ).cpu()
            for i in range(0, len(images), batch_size)
        ]
    )


def _importance(vae: VAEFlow, images: torch.Tensor, samples: int, progress: bool) -> dict:
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
        "test_is_bpd": float(bits_per_dim(torch.cat(log_px).mean(), vae.num_dims)),
        "test_is_images": len(images),
        "test_is_samples": samples,
        "test_is_mean_ess": float(torch.cat(ess).mean()),
    }


def _fid(vae, pixels, preset, weights, cache_dir, seed, progress) -> dict:
    from pyro_vaeflow.metrics import fid, inception_network, reference_statistics

    network = inception_network(weights, device=next(vae.parameters()).device)
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
    z = vae.prior().expand([n]).sample()
    position = {"glow": 0, "mean": 0}

    def sampler(kind):
        def draw(count):
            start = position[kind]
            position[kind] += count
            batch = z[start : start + count]
            images = (
                vae.decode(batch, preset.temperature) if kind == "glow" else vae.decoder_mean(batch)
            )
            return quantize(images.clamp(0.0, 1.0 - 1e-6))  # 8-bit, like the test images

        return draw

    return {
        "fid": fid(sampler("glow"), reference, network, n_samples=n, progress=progress),
        "fid_vae_mean": fid(sampler("mean"), reference, network, n_samples=n, progress=progress),
        "fid_samples": n,
        "fid_temperature": preset.temperature,
    }


def evaluate(
    vae: VAEFlow,
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

    * ``test_elbo_bpd``: the test ELBO in bits/dim, :math:`8 - \mathrm{ELBO}/(D \ln 2)`, on
      ``elbo_images`` test images (all by default), and ``test_elbo_bpd_without_glow``, the same
      bound with the Glow layer switched off (the phase-1 model, since phase 2 trains only the
      Glow layer);
    * ``test_is_bpd``: the importance-sampled bits/dim, with ``is_samples`` samples per image on
      the first ``is_images`` test images, with its mean effective sample size;
    * ``fid``: FID of ``fid_samples`` samples at the preset's Glow temperature against as many
      test images (reference statistics cached), and ``fid_vae_mean`` of the VAE's means
      :math:`g_\mu(z)` for the same :math:`z`, to measure what the Glow layer adds.

    Results go to ``<run_dir>/metrics.json`` when ``run_dir`` is given.
    """
    started = time.perf_counter()
    pixels, images = _test_images(preset, data_dir, seed)
    metrics: dict = {"preset": preset.name, "dataset": preset.dataset}
    torch.manual_seed(seed)
    elbo_set = images[: preset.elbo_images]
    with _evaluating(vae):
        nats = _per_datum(elbo, vae, elbo_set, 500)
        metrics.update(_importance(vae, images[: preset.is_images], preset.is_samples, progress))
        if fid:
            metrics.update(_fid(vae, pixels, preset, fid_weights, fid_cache_dir, seed, progress))
    metrics["test_elbo_bpd"] = float(bits_per_dim(nats.mean(), vae.num_dims))
    metrics["test_elbo_images"] = len(elbo_set)
    if vae.glow is not None:
        with _evaluating(vae, glow_enabled=False):
            plain = _per_datum(elbo, vae, elbo_set, 500)
        metrics["test_elbo_bpd_without_glow"] = float(bits_per_dim(plain.mean(), vae.num_dims))
    metrics["evaluation_seconds"] = time.perf_counter() - started
    if run_dir is not None:
        path = Path(run_dir) / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def make_figures(
    vae: VAEFlow, history: list[dict], run_dir: str | os.PathLike, seed: int = 0
) -> list[Path]:
    """Draw the run's figures into ``<run_dir>/figures/``.

    ``samples.png`` (Glow temperatures 1.0, 0.7 and 0.5, the same :math:`z` in each panel),
    ``sharpening.png`` (the VAE mean next to Glow samples from the same :math:`z`, the paper's
    Fig. 4), ``interpolation.png`` (Fig. 5) and ``training_curves.png``.
    """
    from pyro_vaeflow import plotting

    folder = Path(run_dir) / "figures"
    figures = {
        "samples": plotting.plot_samples(vae, seed=seed),
        "sharpening": plotting.plot_sharpening(vae, seed=seed),
        "interpolation": plotting.plot_interpolation(vae, seed=seed),
        "training_curves": plotting.plot_training_curves(history),
    }
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
                    + (f", T={metrics['fid_temperature']}" if key == "fid" else "")
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
