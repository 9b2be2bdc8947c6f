r"""A phase's checkpoint: everything an exact resume needs."""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from torch import nn

from pyro_vaeflow.distributed import gather_objects, rank, rank_seed, world_size
from pyro_vaeflow.training.optim import MultiTensorAdam
from pyro_vaeflow.training.stopping import EarlyStopping

__all__ = ["PhaseCheckpoint", "rng_state", "set_rng_state"]


def rng_state(device: torch.device) -> dict:
    """The states of torch's global generators (the CPU's and, on CUDA, ``device``'s)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class PhaseCheckpoint:
    """The state of a phase after an epoch, or in the middle of one: the model, the optimiser,
    the random generators, the history, the early-stopping record, the running sums of the
    step log and, in the middle of an epoch, how far it has come (``position``, an
    :class:`~pyro_vaeflow.training.epoch.EpochProgress` as plain data).

    :meth:`capture` takes it from the live objects, :meth:`restore` puts it back, and
    :meth:`to_payload`/:meth:`from_payload` convert it to and from the plain data a checkpoint
    file holds (see :meth:`~pyro_vaeflow.rundir.RunDir.save_checkpoint`).

    Example:
        >>> model, shuffle = torch.nn.Linear(2, 1), torch.Generator().manual_seed(0)
        >>> optim, stopping = MultiTensorAdam(lr=0.1), EarlyStopping(None)
        >>> saved = PhaseCheckpoint.capture(model, optim, shuffle, stopping, [], 3, False)
        >>> PhaseCheckpoint.from_payload(saved.to_payload()).epoch
        3
    """

    model: dict
    optimizer: dict
    rng: dict
    best: dict
    history: list[dict]
    epoch: int
    early_stopped: bool
    architecture: str | None = None
    config: dict | None = None
    step_log: tuple[float, int] = (0.0, 0)
    position: dict | None = None

    @classmethod
    def capture(
        cls,
        model: nn.Module,
        optim: MultiTensorAdam,
        shuffle: torch.Generator,
        stopping: EarlyStopping,
        history: list[dict],
        epoch: int,
        early_stopped: bool,
        *,
        data_generator: torch.Generator | None = None,
        step_log: tuple[float, int] = (0.0, 0),
        position: dict | None = None,
    ) -> PhaseCheckpoint:
        """The state of a phase that has run ``epoch`` epochs (and ``position`` of the next
        one). Under a process group every rank calls it: the random generators' states of all
        the ranks are gathered. ``data_generator`` is the data's own generator, if it has one
        (a :class:`~pyro_vaeflow.data.DynamicallyBinarized` dataset's)."""
        device = next(model.parameters()).device
        rng = {**rng_state(device), "shuffle": shuffle.get_state()}
        if data_generator is not None:
            rng["data"] = data_generator.get_state()
        if world_size() > 1:
            rng["ranks"] = gather_objects(rng_state(device))
        return cls(
            model=model.state_dict(),
            optimizer=optim.get_state(),
            rng=rng,
            best=stopping.state_dict(),
            history=history,
            epoch=epoch,
            early_stopped=early_stopped,
            architecture=getattr(model, "architecture", None),
            config=getattr(model, "config", None),
            step_log=step_log,
            position=position,
        )

    def restore(
        self,
        model: nn.Module,
        optim: MultiTensorAdam,
        shuffle: torch.Generator,
        stopping: EarlyStopping,
        seed: int = 0,
        data_generator: torch.Generator | None = None,
    ) -> None:
        """Put the saved state back into the live objects (weights saved in an older layout
        are upgraded by the model class's ``upgrade_state_dict``).

        Each rank takes back its own random generator when the checkpoint was written by as
        many processes as there are now; with another number of processes every rank's stream
        is re-derived from ``seed`` and the epoch
        (:func:`~pyro_vaeflow.distributed.rank_seed`). The data order (``shuffle``, set to the
        unfinished epoch's start when there is one) and the data's own generator are the same
        either way."""
        upgrade = getattr(type(model), "upgrade_state_dict", lambda state: state)
        model.load_state_dict(upgrade(self.model))
        optim.set_state(self.optimizer)
        ranks = self.rng.get("ranks", [self.rng])
        if len(ranks) == world_size():
            set_rng_state(ranks[rank()], next(model.parameters()).device)
        else:
            pyro.set_rng_seed(rank_seed(seed, self.epoch))
        unfinished = self.position
        shuffle.set_state(self.rng["shuffle"] if unfinished is None else unfinished["shuffle"])
        if data_generator is not None and "data" in self.rng:
            data_generator.set_state(self.rng["data"])
        best = dict(self.best)
        if best["weights"] is not None:
            best["weights"] = upgrade(best["weights"])
        stopping.load_state_dict(best)

    def to_payload(self) -> dict:
        """The plain data of a checkpoint file."""
        payload = {
            "epoch": self.epoch,
            "early_stopped": self.early_stopped,
            "model": self.model,
            "optimizer": self.optimizer,
            "history": self.history,
            "best": self.best,
            "rng": self.rng,
            "step_log": list(self.step_log),
            "position": self.position,
        }
        if self.architecture is not None:  # so that load_model reads a training checkpoint
            payload.update(architecture=self.architecture, config=self.config)
        return payload

    @classmethod
    def from_payload(cls, payload: dict) -> PhaseCheckpoint:
        """Read :meth:`to_payload`'s data back (as written by any version of ``fit``)."""
        return cls(
            model=payload["model"],
            optimizer=payload["optimizer"],
            rng=payload["rng"],
            best=payload["best"],
            history=list(payload["history"]),
            epoch=int(payload["epoch"]),
            early_stopped=bool(payload["early_stopped"]),
            architecture=payload.get("architecture"),
            config=payload.get("config"),
            step_log=tuple(payload.get("step_log", (0.0, 0))),
            position=payload.get("position"),
        )
