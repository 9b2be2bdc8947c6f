r"""The learning rate of each step: a linear warm-up, then halving every few epochs."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LearningRateSchedule"]


@dataclass(frozen=True)
class LearningRateSchedule:
    r"""The learning rate of a phase's steps.

    .. math:: \eta(e, s) = \eta_0 \cdot 2^{-\lfloor e / h \rfloor}
              \cdot \min\!\left(1, \frac{e S + s + 1}{W}\right)

    for step :math:`s` of epoch :math:`e` (both from 0), :math:`S` steps per epoch, halving
    every :math:`h` epochs (none when ``halve_every`` is ``None``) and :math:`W` warm-up steps.

    Attributes:
        lr: the base rate :math:`\eta_0`.
        halve_every: :math:`h`.
        warmup_steps: :math:`W` (0: none).
        steps_per_epoch: :math:`S`.

    Example:
        >>> schedule = LearningRateSchedule(1e-3, halve_every=2, warmup_steps=4,
        ...                                 steps_per_epoch=10)
        >>> schedule.at(0, 0), schedule.at(0, 3), schedule.at(2, 0)
        (0.00025, 0.001, 0.0005)
    """

    lr: float
    halve_every: int | None = None
    warmup_steps: int = 0
    steps_per_epoch: int = 1

    def epoch_rate(self, epoch: int) -> float:
        """The rate of epoch ``epoch`` after the warm-up."""
        return self.lr * 0.5 ** (epoch // self.halve_every) if self.halve_every else self.lr

    def at(self, epoch: int, step: int) -> float:
        """The rate of step ``step`` of epoch ``epoch``."""
        done = epoch * self.steps_per_epoch + step  # steps of this phase before this one
        return self.epoch_rate(epoch) * min(1.0, (done + 1) / max(self.warmup_steps, 1))
