r"""The options of one training phase, as one typed object."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from pyro_vaeflow.validation import check_int, check_number

__all__ = ["FitConfig"]


@dataclass(frozen=True)
class FitConfig:
    """How :func:`~pyro_vaeflow.training.fit` trains one phase.

    Attributes:
        epochs: the total number of epochs of the phase (including resumed ones).
        batch_size: images per step.
        lr: Adam's learning rate.
        lr_halve_every: halve the learning rate every this many epochs (the paper: 250;
            ``None`` or 0: never).
        warmup_steps: raise the learning rate linearly from 0 over the first this many steps
            of the phase. Adam's first steps move every parameter by about ``lr``, which can
            wreck a fresh identity Glow layer over a VAE with tiny decoder scales (measured on
            Fashion-MNIST: 5.2 → 301 bits/dim in one step at lr 1e-3 without warm-up).
        clip_norm: clip each parameter's gradient norm (as Pyro's ``clip_args``; ``None`` or 0:
            no clipping).
        num_particles: ELBO particles per datum.
        val_fraction: the share of the data held out when a validation set is needed (early
            stopping) but not given.
        patience: stop after this many epochs without a better validation bits/dim and restore
            the best weights (``None``: the phase's declared default, e.g. 5 for a
            ``VAEFlow``'s ``"prior"``, none for most).
        max_consecutive_skipped: steps with a non-finite loss or gradient in a row before
            training stops with an error.
        n_bits: bits per pixel of the dequantisation and of bits/dim (``None``: the model's
            declared ``n_bits``, 8 if it declares none).
        seed: seeds Pyro/torch and the shuffling (ignored when resuming).
        progress: show a tqdm bar with the loss in bits/dim.
        time_budget: wall-clock seconds for this call: an epoch is not started once the budget
            is spent, or when the last epoch's duration would take the call past it (``None``
            or ``inf``: no limit).
        log_every: log the mean training loss of every this many steps (to ``metrics.jsonl``
            and TensorBoard, when training into a run directory).
        checkpoint_every: when training into a run directory, also write a checkpoint in the
            middle of an epoch every this many minutes (``None``: only after each epoch, and
            when a SIGTERM or Ctrl-C stops the run); a resume from it continues the epoch
            exactly where it stopped.

    Example:
        >>> FitConfig(epochs=2, batch_size=64).lr
        0.001
        >>> FitConfig(batch_size=0)
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be an integer >= 1, got 0
    """

    epochs: int = 1
    batch_size: int = 128
    lr: float = 1e-3
    lr_halve_every: int | None = None
    warmup_steps: int = 0
    clip_norm: float | None = None
    num_particles: int = 1
    val_fraction: float = 0.1
    patience: int | None = None
    max_consecutive_skipped: int = 20
    n_bits: int | None = None
    seed: int = 0
    progress: bool = True
    time_budget: float | None = None
    log_every: int = 10
    checkpoint_every: float | None = None

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 0)
        check_int("batch_size", self.batch_size)
        check_number("lr", self.lr, 0.0, strict=True)
        if self.lr_halve_every is not None:
            check_int("lr_halve_every", self.lr_halve_every, 0)
        check_int("warmup_steps", self.warmup_steps, 0)
        if self.clip_norm is not None:
            check_number("clip_norm", self.clip_norm, 0.0)
        check_int("num_particles", self.num_particles)
        if not 0.0 < check_number("val_fraction", self.val_fraction) < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction!r}")
        if self.patience is not None:
            check_int("patience", self.patience, 0)
        check_int("max_consecutive_skipped", self.max_consecutive_skipped)
        if self.n_bits is not None:
            check_int("n_bits", self.n_bits, high=8)
        check_int("seed", self.seed, 0)
        if self.time_budget is not None and self.time_budget != math.inf:
            check_number("time_budget", self.time_budget)
        check_int("log_every", self.log_every)
        if self.checkpoint_every is not None:
            check_number("checkpoint_every", self.checkpoint_every, 0.0, strict=True)

    def replace(self, **options) -> FitConfig:
        """A copy with some options changed; an unknown option is a ``TypeError`` that lists
        the known ones.

        Example:
            >>> FitConfig().replace(epochs=3).epochs
            3
        """
        known = {field.name for field in dataclasses.fields(self)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown training options {unknown}; the options are {sorted(known)}")
        return dataclasses.replace(self, **options)
