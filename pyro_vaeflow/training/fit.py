r"""``fit``: one training phase of a model with SVI and ``Trace_ELBO``."""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from functools import partial

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from pyro_vaeflow.data import train_val_split
from pyro_vaeflow.distributed import all_sum, barrier, broadcast, is_main, rank_seed, world_size
from pyro_vaeflow.interrupt import GracefulStop, Interrupted
from pyro_vaeflow.models import Phase
from pyro_vaeflow.rundir import MetricsLog, RunDir
from pyro_vaeflow.training.batches import Batches, to_model
from pyro_vaeflow.training.checkpoint import PhaseCheckpoint
from pyro_vaeflow.training.config import FitConfig
from pyro_vaeflow.training.epoch import EpochProgress, StepControl, StepLog, run_epoch
from pyro_vaeflow.training.optim import MultiTensorAdam
from pyro_vaeflow.training.parallel import DataParallelSVI
from pyro_vaeflow.training.phases import phase as training_phase
from pyro_vaeflow.training.phases import resolve_phase
from pyro_vaeflow.training.schedule import LearningRateSchedule
from pyro_vaeflow.training.stopping import EarlyStopping, TimeBudget

__all__ = ["fit", "loss_to_bits_per_dim"]


def loss_to_bits_per_dim(loss: float, batch: int, num_dims: int, n_bits: int = 8) -> float:
    r"""A summed negative ELBO (nats) of ``batch`` images as bits/dim of the pixels.

    .. math:: \text{bits/dim} = n_\text{bits} + \frac{\mathcal{L}}{B\,D \ln 2}

    Example:
        >>> round(loss_to_bits_per_dim(0.0, 1, 784), 2)
        8.0
    """
    return n_bits + loss / (batch * num_dims * math.log(2))


def fit(
    model: nn.Module,
    data: Tensor | Dataset,
    phase: str = "all",
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    *,
    config: FitConfig | None = None,
    val_data: Tensor | Dataset | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    **options,
) -> list[dict]:
    r"""Train one phase of ``model`` with ``SVI(model.model, model.guide, Adam, Trace_ELBO())``.

    Each step maximises the ELBO of a mini-batch (:math:`-\mathcal{L}`, reported in bits/dim).
    The phase is one the model declares (``model.phases``, see
    :class:`~pyro_vaeflow.models.Phase`): the parts it trains get gradients and every other
    part stays bit-identical. A ``VAEFlow`` has ``"vae"``, ``"glow"``, ``"prior"`` (with early
    stopping on a validation split) and ``"joint"``; a ``TwoStageVAE`` ``"first"`` and
    ``"second"``; every other model, and any ``nn.Module`` with ``model``/``guide`` methods
    and ``num_dims``, ``"all"``.

    The options are a :class:`~pyro_vaeflow.training.FitConfig`; ``epochs``, ``batch_size``,
    ``lr`` and any other field of it may also be given as keyword arguments, which override
    ``config``. The Adam is :class:`~pyro_vaeflow.training.MultiTensorAdam`: Pyro's updates and
    per-parameter clipping, with one torch optimiser for all the parameters.

    Training runs in a fresh Pyro param-store scope, so parameters of other models registered
    under the same names cannot be optimised by mistake. A step with a non-finite loss or
    gradient is skipped and counted (:class:`~pyro_vaeflow.training.GuardedSVI`). Under a
    :mod:`torch.distributed` process group (``torchrun``, or the user's own
    ``init_process_group``) it trains data-parallel
    (:class:`~pyro_vaeflow.training.DataParallelSVI`): ``batch_size`` is the global batch,
    each rank trains on its share of it with its own noise, and rank 0 writes the files. With
    ``run_dir`` (a path or a :class:`~pyro_vaeflow.rundir.RunDir`), the phase's checkpoint
    (model, optimiser, epoch, RNG states, history) is written atomically after each epoch,
    ``metrics.jsonl`` and TensorBoard get the mean loss of every ``log_every`` steps and each
    epoch's row, and ``resume=True`` continues exactly where a previous call stopped (a phase
    that stopped early by ``patience`` is finished; one stopped by ``time_budget`` continues).

    Args:
        model: the model, with ``model``/``guide`` methods and ``num_dims``.
        data: ``uint8`` pixels ``[N, C, H, W]``, floats in [0, 1], or a ``Dataset``.
        phase: the name of one of the model's phases.
        epochs: overrides ``config.epochs``.
        batch_size: overrides ``config.batch_size``.
        lr: overrides ``config.lr``.
        config: the options (default :class:`~pyro_vaeflow.training.FitConfig()`).
        val_data: validation data; a phase with early stopping splits ``config.val_fraction``
            off ``data`` when none is given.
        run_dir: where checkpoints and metrics go (none: nothing is written).
        resume: continue from the phase's checkpoint in ``run_dir`` if there is one.
        **options: other fields of :class:`~pyro_vaeflow.training.FitConfig`.

    Returns:
        One dict per epoch: ``phase, epoch, lr, train_bpd, skipped, seconds, step, val_bpd``.

    Example:
        >>> from pyro_vaeflow.models import VAEFlow
        >>> vae = VAEFlow((1, 8, 8), 2, depth=1, base_channels=2, fc_dim=8, prior_layers=1,
        ...               prior_hidden_dims=(8,), glow_depth=1, glow_hidden_channels=4)
        >>> pixels = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
        >>> history = fit(vae, pixels, "vae", epochs=2, batch_size=8, progress=False)
        >>> [row["epoch"] for row in history], math.isfinite(history[-1]["train_bpd"])
        ([1, 2], True)
    """
    given = {"epochs": epochs, "batch_size": batch_size, "lr": lr}
    config = (config or FitConfig()).replace(
        **{k: v for k, v in given.items() if v is not None}, **options
    )
    config = _for_this_process(model, config)
    spec = resolve_phase(model, phase)
    data, val_batches, stopping = _validation(spec, data, val_data, config)
    run = None if run_dir is None else RunDir(run_dir)
    pyro.set_rng_seed(rank_seed(config.seed))
    shuffle = torch.Generator().manual_seed(config.seed)
    data_generator = getattr(data, "generator", None)
    if not isinstance(data_generator, torch.Generator):
        data_generator = None
    device = next(model.parameters()).device
    batches = Batches(
        data, config.batch_size, config.n_bits, generator=shuffle, shard=True, device=device
    )
    optim = MultiTensorAdam(lr=config.lr, clip_norm=config.clip_norm or None)
    schedule = LearningRateSchedule(
        config.lr, config.lr_halve_every, config.warmup_steps, len(batches)
    )
    saved = None
    if resume and run is not None and run.has_checkpoint(phase):
        saved = PhaseCheckpoint.from_payload(run.load_checkpoint(phase))
        saved.restore(model, optim, shuffle, stopping, config.seed, data_generator)
    history, start = (saved.history, saved.epoch) if saved else ([], 0)
    end = start if saved and saved.early_stopped else config.epochs
    unfinished = saved.position if saved else None
    # One particle needs no particle plate (the same draws, without the extra batch dimension).
    particles = config.num_particles
    elbo = Trace_ELBO(particles, vectorize_particles=particles > 1, max_plate_nesting=1)
    budget = TimeBudget(config.time_budget)
    log = run.metrics_log() if run is not None and is_main() else MetricsLog(None)
    steps = StepLog(log, phase, config.log_every, partial(_to_bpd, model.num_dims, config.n_bits))
    steps.total, steps.count = saved.step_log if saved else (0.0, 0)
    control = StepControl(config.checkpoint_every if run is not None else None)
    signals = GracefulStop() if run is not None else nullcontext()
    with pyro.get_param_store().scope(), training_phase(model, phase), log, signals:
        svi = DataParallelSVI(
            model.model, model.guide, optim, elbo, model, config.max_consecutive_skipped
        )

        def keep(epoch: int, early_stopped: bool = False, position: dict | None = None) -> str:
            """Write the phase's checkpoint (every rank gathers; rank 0 writes)."""
            if run is None:
                return "nothing (no run directory)"
            state = PhaseCheckpoint.capture(
                model,
                optim,
                shuffle,
                stopping,
                history,
                epoch,
                early_stopped,
                data_generator=data_generator,
                step_log=(steps.total, steps.count),
                position=position,
            )
            if is_main():
                run.save_checkpoint(phase, state.to_payload())
            barrier()
            where = (
                f"epoch {epoch}"
                if position is None
                else (f"epoch {epoch + 1}, step {position['step']} of {len(batches)}")
            )
            return f"{run.checkpoint_path(phase)} ({phase} {where})"

        for epoch in range(start, end):
            if unfinished is None:
                if not broadcast(budget.allows_epoch(history)):  # rank 0's clock decides
                    _say(config, f"{phase}: stopping after epoch {epoch}, the time budget is spent")
                    break
                progress = EpochProgress(shuffle=shuffle.get_state())
            else:
                progress = EpochProgress.from_dict(unfinished)
                unfinished = None
                _say(config, f"{phase}: continuing epoch {epoch + 1} at step {progress.step}")

            def keep_unfinished(progress: EpochProgress, epoch: int = epoch) -> str:
                return keep(epoch, position=progress.to_dict())

            row = run_epoch(
                svi,
                model,
                batches,
                schedule,
                epoch,
                config,
                steps,
                progress,
                control,
                keep_unfinished,
            )
            began = time.perf_counter()
            row["val_bpd"] = _bits_per_dim(model, val_batches, config.seed)
            row["seconds"] += time.perf_counter() - began  # what the time budget counts
            history.append(row)
            stop = stopping.update(row["val_bpd"], model)
            kept = keep(epoch + 1, stop)
            control.written()
            log.write(row)
            _say(config, _describe(row))
            _, signum = control.after_step()
            if signum is not None:
                raise Interrupted(signum, kept)
            if stop:
                break
    stopping.restore_best(model)
    return history


def _for_this_process(model: nn.Module, config: FitConfig) -> FitConfig:
    """The model's bit depth where the config gives none; under a process group, a check that
    the global batch divides into the ranks' shares, and progress shown by rank 0 only."""
    if config.n_bits is None:  # the bit depth the model declares
        config = config.replace(n_bits=getattr(model, "n_bits", 8))
    if config.batch_size % world_size():
        raise ValueError(
            f"batch_size {config.batch_size} is the global batch and must divide into the "
            f"{world_size()} processes' shares"
        )
    return config.replace(progress=config.progress and is_main())


def _validation(
    spec: Phase, data: Tensor | Dataset, val_data: Tensor | Dataset | None, config: FitConfig
) -> tuple[Tensor | Dataset, Batches | None, EarlyStopping]:
    """The training data, the validation batches (a split of ``data`` for a phase with early
    stopping, when none are given) and the early stopping of the phase."""
    if spec.patience is not None and val_data is None:
        data, val_data = train_val_split(data, config.val_fraction, config.seed)
    stopping = EarlyStopping(spec.patience if config.patience is None else config.patience)
    if stopping.patience is not None and val_data is None:
        raise ValueError("early stopping (patience) needs val_data")
    if val_data is None:
        return data, None, stopping
    val_batches = Batches(
        val_data,
        config.batch_size,
        config.n_bits,
        shuffle=False,
        noise_seed=rank_seed(config.seed),
        shard=True,
        drop_short_last=False,  # every validation image counts
    )
    return data, val_batches, stopping


@torch.no_grad()
def _bits_per_dim(model: nn.Module, batches: Batches | None, seed: int) -> float | None:
    """The ELBO of the validation batches in bits/dim (``None`` without any), with the same
    noise at every call and without touching the training's random stream."""
    if batches is None:
        return None
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(rank_seed(seed))
        elbo, total, count = Trace_ELBO(), 0.0, 0
        for x in batches:  # this rank's shares, summed over the ranks below
            if len(x):
                total += elbo.loss(model.model, model.guide, to_model(x, model))
                count += len(x)
    return loss_to_bits_per_dim(all_sum(total), all_sum(count), model.num_dims, batches.n_bits)


def _to_bpd(num_dims: int, n_bits: int, loss: float, images: int) -> float:
    return loss_to_bits_per_dim(loss, images, num_dims, n_bits)


def _say(config: FitConfig, text: str) -> None:
    if config.progress:
        tqdm.write(text)


def _describe(row: dict) -> str:
    text = f"{row['phase']} epoch {row['epoch']}: train {row['train_bpd']:.4f} bits/dim"
    if row["val_bpd"] is not None:
        text += f", validation {row['val_bpd']:.4f}"
    if row["skipped"]:
        text += f", {row['skipped']} non-finite steps skipped"
    return text + f" ({row['seconds']:.1f} s)"
