r"""Train a preset's model into a run directory, phase after phase."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from pyro_vaeflow.acceleration import (
    Acceleration,
    accelerate,
    load_compile_cache,
    save_compile_cache,
)
from pyro_vaeflow.data import DynamicallyBinarized, binarize, load_images
from pyro_vaeflow.distributed import barrier, is_main
from pyro_vaeflow.models import ImageModel, build_model
from pyro_vaeflow.presets import Preset
from pyro_vaeflow.rundir import RunDir
from pyro_vaeflow.training import FitConfig, fit, phases_of

__all__ = ["COMPILE_CACHE", "schedule", "train"]

#: The file of a run's compiled kernels (:func:`~pyro_vaeflow.acceleration.save_compile_cache`).
COMPILE_CACHE = "compile-cache.bin"

#: What a resumed run must share with the run it continues; the epochs, the time budget and
#: the evaluation settings may change.
_TRAINING_FIELDS = (
    "dataset",
    "image_shape",
    "model",
    "architecture",
    "binarize",
    "batch_size",
    "lr",
    "lr_halve_every",
    "clip_norm",
    "train_images",
    "val_images",
)


def _prepare(run: RunDir, preset: Preset, resume: bool) -> None:
    """Refuse a run directory that holds another run (or any run, without ``resume``), then
    write the preset to ``config.json``."""
    wanted = _as_json(preset)
    if run.config_path.exists():
        found = _as_json(Preset.from_dict(run.read_config(), source=run.config_path))
        changed = sorted(k for k in _TRAINING_FIELDS if found[k] != wanted[k])
        if list(found["epochs"]) != list(wanted["epochs"]):
            changed.append("the phases")
        if resume and changed:
            raise ValueError(
                f"{run.path} holds a run of another configuration (differs in {changed}); "
                "resume it with the same settings or use a new run directory"
            )
        if not resume and run.has_checkpoints():
            raise FileExistsError(
                f"{run.path} already holds a run; pass resume=True (--resume) to continue it, "
                "or choose another run directory"
            )
    if is_main():  # every rank has checked the same files; one writes
        run.write_config(wanted)
    barrier()


def _as_json(preset: Preset) -> dict:
    """The preset as it reads back from ``config.json`` (tuples as lists)."""
    return json.loads(json.dumps(preset.to_dict()))


def schedule(preset: Preset, model: nn.Module) -> list[tuple[str, int]]:
    """The phases of ``preset.epochs`` that ``model`` trains, in order, with their epochs.

    A phase with 0 epochs, or whose parts the model lacks (a ``"glow"`` phase of a
    ``VAEFlow`` without a Glow layer), is left out; a phase the model does not declare is an
    error.

    Example:
        >>> from pyro_vaeflow.presets import get_preset
        >>> from pyro_vaeflow.models import VAEFlow
        >>> schedule(get_preset("cpu"), VAEFlow((1, 28, 28), 2, glow_depth=1))
        [('vae', 6), ('glow', 4)]
        >>> schedule(get_preset("cpu"), VAEFlow((1, 28, 28), 2, glow_depth=0))
        [('vae', 6)]
    """
    declared = phases_of(model)
    unknown = [name for name in preset.epochs if name not in declared]
    if unknown:
        raise ValueError(
            f"preset {preset.name!r} gives epochs for the phases {unknown}, which a "
            f"{type(model).__name__} does not have; it has {list(declared)}"
        )
    return [
        (name, epochs)
        for name, epochs in preset.epochs.items()
        if epochs > 0 and (not declared[name].trains or declared[name].parts(model))
    ]


def train(
    preset: Preset,
    run_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    checkpoint_every: float | None = None,
    acceleration: Acceleration | None = None,
) -> tuple[ImageModel, list[dict]]:
    """Train the preset's model, phase after phase (see :func:`schedule`).

    For the paper's model: phase 1 (VAE and prior) and then phase 2 (the Glow layer), or one
    joint phase; for a two-stage VAE its two stages; for a single-phase model its one phase;
    for a model of your own (:func:`~pyro_vaeflow.models.register_architecture`) the phases it
    declares. Under a :mod:`torch.distributed` process group (``torchrun``) every rank calls it,
    trains on its share of each global batch, and rank 0 writes the files. Each phase
    checkpoints after every epoch; ``resume=True`` continues a stopped
    run exactly (once a phase has begun, the phases before it are not touched again), and may
    change the epochs or the time budget, but not the model or the optimiser settings. With a
    ``time_budget`` (the seconds of the training epochs, counted across resumes, so that a
    resumed run stops where an uninterrupted one would), each phase gets the share of what is
    left that its epochs are of the epochs left. The final model is saved as
    ``<run_dir>/model.pt``.

    The run's lock (:mod:`pyro_vaeflow.lock`) is held throughout: a second process training or
    evaluating into ``run_dir`` gets a :class:`~pyro_vaeflow.lock.RunLockedError` naming this
    one. A SIGTERM or Ctrl-C finishes the current step, writes a mid-epoch checkpoint and
    raises :class:`~pyro_vaeflow.interrupt.Interrupted`; ``checkpoint_every`` (minutes) also
    writes one during long epochs. ``resume=True`` continues from either exactly.

    ``acceleration`` (:class:`~pyro_vaeflow.acceleration.Acceleration`; default: eager float32,
    TF32 on CUDA) may compile the networks and run them in bf16. It does not change the model's
    weights or files, so a run may resume with other settings. Compiled kernels are kept in
    ``<run_dir>/compile-cache.bin`` after each phase and at a stop, and loaded by a resumed run.
    TF32 is set back after the call, and the model returned computes in float32 (its
    networks stay compiled), so that it is evaluated as FID's protocol says.

    Returns:
        The trained model and the history of all phases.
    """
    run = RunDir(run_dir)
    with run.lock():
        config = FitConfig(seed=seed, progress=progress, checkpoint_every=checkpoint_every)
        acceleration = acceleration or Acceleration()
        with acceleration.tf32_on(device):
            return _train(preset, run, data_dir, device, resume, config, acceleration)


def _train(
    preset: Preset,
    run: RunDir,
    data_dir,
    device,
    resume: bool,
    config: FitConfig,
    acceleration: Acceleration,
) -> tuple[ImageModel, list[dict]]:
    seed = config.seed
    pixels = load_images(preset.dataset, "train", data_dir)
    if tuple(pixels.shape[1:]) != preset.image_shape:
        raise ValueError(
            f"{preset.dataset} images are {tuple(pixels.shape[1:])}, but the preset expects "
            f"{preset.image_shape}"
        )
    pixels, val_data = _split(pixels[: preset.train_images], preset, seed)
    torch.manual_seed(seed)
    model = build_model(preset.architecture, preset.image_shape, **preset.model).to(device)
    acceleration.apply(model)
    generator = torch.Generator().manual_seed(seed)
    data = DynamicallyBinarized(pixels, generator) if preset.binarize else pixels
    config = config.replace(
        batch_size=preset.batch_size,
        lr=preset.lr,
        lr_halve_every=preset.lr_halve_every,
        warmup_steps=preset.warmup_steps,
        clip_norm=preset.clip_norm,
    )
    phases = schedule(preset, model)  # the preset is checked before the run directory is used
    _prepare(run, preset, resume)
    history: list[dict] = []
    cache = run.path / COMPILE_CACHE
    if acceleration.compile and resume:
        load_compile_cache(cache)
    for index, (name, epochs) in enumerate(phases):
        if resume and any(run.has_checkpoint(later) for later, _ in phases[index + 1 :]):
            history += _finished(run, name)["history"]  # its weights are in a later one
            continue
        budget = _phase_budget(preset, run, phases, index, history, resume)
        phase_config = config.replace(epochs=epochs, time_budget=budget)
        try:
            history += fit(
                model,
                data,
                name,
                config=phase_config,
                val_data=val_data,
                run_dir=run,
                resume=resume,
            )
        finally:
            if acceleration.compile and is_main():
                _keep_compile_cache(cache)
    if is_main():
        model.save(run.model_path)
    barrier()
    return accelerate(model, precision="fp32"), history  # evaluated as FID's protocol says


def _keep_compile_cache(path: Path) -> None:
    # The kernels compiled so far, for a resumed run; a full disk only costs a compile later.
    try:
        save_compile_cache(path)
    except Exception as error:  # never hides the exception or the stop being raised
        warnings.warn(f"{path}: compile cache not written ({error!r})", stacklevel=2)


def _finished(run: RunDir, phase: str) -> dict:
    """The checkpoint of a phase that a later phase of the run has followed."""
    if not run.has_checkpoint(phase):
        raise ValueError(
            f"{run.path} holds a checkpoint of a later phase but none of phase {phase!r}, so "
            f"it cannot be resumed (a checkpoint of that phase written under another name by "
            f"an older version can be renamed to {run.checkpoint_path(phase).name})"
        )
    return run.load_checkpoint(phase)


def _split(pixels: torch.Tensor, preset: Preset, seed: int):
    """The training pixels and the validation set: the last ``preset.val_images`` of them
    (binarised once, for a binarised preset), or ``None``."""
    if not preset.val_images:
        return pixels, None
    if preset.val_images >= len(pixels):
        raise ValueError(
            f"val_images={preset.val_images} leaves no training images of {len(pixels)}"
        )
    held_out = pixels[-preset.val_images :]
    if preset.binarize:
        held_out = binarize(held_out, torch.Generator().manual_seed(seed))
    return pixels[: -preset.val_images], held_out


def _phase_budget(
    preset: Preset,
    run: RunDir,
    phases: list[tuple[str, int]],
    index: int,
    history: list[dict],
    resume: bool,
) -> float | None:
    """The seconds phase ``index`` may still train: its share by epochs of what is left of the
    preset's budget, less what it spent before a stop."""
    if preset.time_budget is None:
        return None
    name, epochs = phases[index]
    done = resume and run.has_checkpoint(name)
    spent = _seconds(run.load_checkpoint(name)["history"] if done else [])
    left = max(preset.time_budget - _seconds(history), 0.0)
    return left * epochs / max(sum(e for _, e in phases[index:]), 1) - spent


def _seconds(history: list[dict]) -> float:
    return sum(row["seconds"] for row in history)
