r"""One epoch of a phase, step by step, and what can stop it in the middle: a mid-epoch
checkpoint every few minutes, or a graceful stop (:mod:`pyro_vaeflow.interrupt`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from torch import Tensor, nn
from tqdm.auto import tqdm

from pyro_vaeflow.distributed import all_max, world_size
from pyro_vaeflow.interrupt import Interrupted, stop_requested
from pyro_vaeflow.rundir import MetricsLog
from pyro_vaeflow.training.batches import Batches, to_model
from pyro_vaeflow.training.config import FitConfig
from pyro_vaeflow.training.guarded_svi import GuardedSVI
from pyro_vaeflow.training.schedule import LearningRateSchedule

__all__ = ["EpochProgress", "StepControl", "StepLog", "run_epoch"]


class StepLog:
    """Writes the mean loss of every ``every`` steps of a phase, across epoch boundaries (the
    steps with a non-finite loss left out); its running sums are part of a checkpoint."""

    def __init__(self, log: MetricsLog, phase: str, every: int, to_bpd) -> None:
        self.log, self.phase, self.every, self.to_bpd = log, phase, every, to_bpd
        self.total, self.count = 0.0, 0

    def add(self, step: int, epoch: int, loss: float, images: int, lr: float) -> None:
        """Record step ``step`` (counted from 1 over the phase) of epoch ``epoch``."""
        if math.isfinite(loss):
            self.total, self.count = self.total + loss, self.count + images
        if step % self.every == 0 and self.count:
            bpd = self.to_bpd(self.total, self.count)
            row = {"kind": "step", "phase": self.phase, "epoch": epoch, "step": step}
            self.log.write({**row, "train_bpd": bpd, "lr": lr})
            self.total, self.count = 0.0, 0


@dataclass
class EpochProgress:
    """How far an epoch has come: the steps done and their sums, and the shuffling generator's
    state at the epoch's start (which fixes its order). A mid-epoch checkpoint holds one.

    Example:
        >>> import torch
        >>> progress = EpochProgress(shuffle=torch.Generator().get_state(), step=3)
        >>> EpochProgress.from_dict(progress.to_dict()).step
        3
    """

    shuffle: Tensor
    step: int = 0
    total: float = 0.0
    count: int = 0
    skipped: int = 0
    seconds: float = 0.0
    consecutive_skipped: int = 0

    def to_dict(self) -> dict:
        """Plain data, for a checkpoint file."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EpochProgress:
        """Read :meth:`to_dict`'s data back."""
        return cls(**data)


class StepControl:
    """Decides after each step whether to write a mid-epoch checkpoint and whether to stop.

    A checkpoint is due every ``every_minutes`` (``None``: never) and before a stop asked for
    by a signal. Under a process group the ranks decide together (one small all-reduce per
    step), so that they all write, and stop, after the same step.

    Example:
        >>> StepControl(None).after_step()
        (False, None)
    """

    def __init__(self, every_minutes: float | None) -> None:
        self.every = None if every_minutes is None else 60.0 * every_minutes
        self.last = time.monotonic()

    def after_step(self) -> tuple[bool, int | None]:
        """``(checkpoint now, the signal that asked for a stop or None)``."""
        stop = stop_requested() or 0
        due = self.every is not None and time.monotonic() - self.last >= self.every
        if world_size() > 1:
            stop, due = all_max([stop, int(due)])
        return bool(due or stop), stop or None

    def written(self) -> None:
        """A checkpoint was just written: the clock starts again."""
        self.last = time.monotonic()


def run_epoch(
    svi: GuardedSVI,
    model: nn.Module,
    batches: Batches,
    schedule: LearningRateSchedule,
    epoch: int,
    config: FitConfig,
    steps: StepLog,
    progress: EpochProgress,
    control: StepControl,
    keep: Callable[[EpochProgress], str],
) -> dict:
    """One pass over the data from ``progress`` on; its row of the history.

    After each step ``control`` may ask for a mid-epoch checkpoint, which ``keep(progress)``
    writes (returning a description of it); after a stop was asked for, it raises
    :class:`~pyro_vaeflow.interrupt.Interrupted` once the checkpoint is written.
    """
    began, first = time.perf_counter() - progress.seconds, epoch * len(batches)
    svi.consecutive_skipped = progress.consecutive_skipped
    label = f"{steps.phase} {epoch + 1}/{config.epochs}"
    bar = tqdm(
        batches.iterate(progress.step),
        desc=label,
        total=len(batches),
        initial=progress.step,
        disable=not config.progress,
        leave=False,
    )
    for step, x in enumerate(bar, start=progress.step):
        lr = schedule.at(epoch, step)
        svi.optim.set_lr(lr)
        loss = svi.step(to_model(x, model))  # the global batch's, on every rank
        images = batches.global_size(step)
        if math.isfinite(loss):
            progress.total, progress.count = progress.total + loss, progress.count + images
            bar.set_postfix(bpd=f"{steps.to_bpd(loss, images):.3f}")
        else:
            progress.skipped += 1
        steps.add(first + step + 1, epoch + 1, loss, images, lr)
        progress.step, progress.consecutive_skipped = step + 1, svi.consecutive_skipped
        checkpoint, stop = control.after_step()
        if checkpoint and progress.step < len(batches):  # the epoch's end writes its own
            progress.seconds = time.perf_counter() - began
            kept = keep(progress)
            control.written()
            if stop is not None:
                bar.close()
                raise Interrupted(stop, kept)
    return {
        "phase": steps.phase,
        "epoch": epoch + 1,
        "lr": schedule.epoch_rate(epoch),
        "train_bpd": steps.to_bpd(progress.total, progress.count) if progress.count else math.nan,
        "skipped": progress.skipped,
        "seconds": time.perf_counter() - began,
        "step": first + len(batches),
    }
