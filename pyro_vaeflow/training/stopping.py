r"""When a phase stops early: no better validation score for a while, or the time is spent."""

from __future__ import annotations

import copy
import math
import time

from torch import nn

__all__ = ["EarlyStopping", "TimeBudget"]


class EarlyStopping:
    """Stop after ``patience`` epochs without a lower validation bits/dim; keep the best weights.

    Args:
        patience: epochs without improvement before stopping (``None``: never stop, keep
            nothing).

    Example:
        >>> stopping, model = EarlyStopping(patience=2), torch.nn.Linear(1, 1)
        >>> [stopping.update(bpd, model) for bpd in (5.0, 4.0, 4.5, 4.2)]
        [False, False, False, True]
        >>> stopping.best_bpd
        4.0
    """

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.best_bpd = math.inf
        self.best_weights: dict | None = None
        self.stale = 0

    def update(self, val_bpd: float | None, model: nn.Module) -> bool:
        """Record an epoch's validation bits/dim; whether training should stop now."""
        if self.patience is None:
            return False
        if val_bpd < self.best_bpd:
            self.best_bpd, self.stale = val_bpd, 0
            self.best_weights = copy.deepcopy(model.state_dict())
            return False
        self.stale += 1
        return self.stale >= self.patience

    def restore_best(self, model: nn.Module) -> None:
        """Load the best weights seen into ``model`` (nothing if none were kept)."""
        if self.best_weights is not None:
            model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict:
        """The state a checkpoint keeps (the format of earlier checkpoints' ``"best"``)."""
        return {"bpd": self.best_bpd, "weights": self.best_weights, "stale": self.stale}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's :meth:`state_dict`."""
        self.best_bpd, self.best_weights = state["bpd"], state["weights"]
        self.stale = state["stale"]


class TimeBudget:
    """A wall-clock budget in seconds for one call, started when it is made.

    An epoch is not started once the budget is spent, or when it would take the call past the
    budget if it lasted as long as the last epoch.

    Example:
        >>> TimeBudget(None).allows_epoch([]), TimeBudget(0.0).allows_epoch([])
        (True, False)
        >>> TimeBudget(3600.0).allows_epoch([{"seconds": 7200.0}])
        False
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.began = time.perf_counter()

    def allows_epoch(self, history: list[dict]) -> bool:
        """Whether another epoch fits, given the epochs so far (their ``"seconds"``)."""
        if self.seconds is None:
            return True
        elapsed = time.perf_counter() - self.began
        last = history[-1]["seconds"] if history else 0.0
        return elapsed < self.seconds and not (history and elapsed + last > self.seconds)
