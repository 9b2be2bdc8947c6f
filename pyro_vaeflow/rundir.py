r"""A run directory: every path and file format of one training run, in one place.

.. code-block:: text

    <run_dir>/
      run.lock          held by the process that trains or evaluates (names its PID and host)
      config.json       the preset, as plain data (Preset.to_dict / Preset.from_dict)
      <phase>.ckpt      one training checkpoint per phase (model, optimiser, RNG, history),
                        after each epoch and in the middle of one (a stop, --checkpoint-every)
      <phase>.ckpt.prev the checkpoint before it, kept until the new one is verified
      <phase>.ckpt.sha256  the SHA-256 of both, recorded when they were written
      model.pt          the trained model (ImageModel.save / load_model)
      metrics.jsonl     one JSON line per logged step ("kind": "step") and per epoch
      metrics.json      the evaluation
      figures/          the figures, as PNG
      samples.png       the grid of ``pyro-vaeflow sample`` (by default)
      tensorboard/      the same scalars as metrics.jsonl, when tensorboard is installed

Every file is written atomically (:func:`~pyro_vaeflow.files.atomic_write`), except
``metrics.jsonl``, which only ever gets whole lines appended
(:func:`~pyro_vaeflow.files.append_line`); a line cut short by a stop is skipped when the log is
read back. A write that fails (a full disk) leaves the previous file intact and raises a
:class:`~pyro_vaeflow.files.WriteError` naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType

from pyro_vaeflow.checkpoint import load_good_checkpoint, previous_path, save_checkpoint
from pyro_vaeflow.files import append_line, write_json
from pyro_vaeflow.lock import hold_run_lock

__all__ = ["MetricsLog", "RunDir"]


class MetricsLog:
    """Appends rows to ``metrics.jsonl`` and, when tensorboard is installed, to TensorBoard.

    Use it as a context manager: the TensorBoard writer is closed on exit. Without a path
    (training outside a run directory) it writes nothing.

    Args:
        path: the ``metrics.jsonl`` file, or ``None``.
        tensorboard: the TensorBoard folder, or ``None``.
    """

    _EPOCH_SCALARS = ("train_bpd", "val_bpd", "lr", "skipped", "seconds")

    def __init__(self, path: Path | None, tensorboard: Path | None = None) -> None:
        self.path, self.tensorboard = path, tensorboard
        self._writer = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(
        self, kind: type | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write(self, row: dict) -> None:
        """Append one row (a step row has ``"kind": "step"``; an epoch row has ``"epoch"``)."""
        if self.path is None:
            return
        append_line(self.path, json.dumps(row).encode())
        writer = self._summary_writer()
        if writer is None:
            return
        if row.get("kind") == "step":
            writer.add_scalar(f"{row['phase']}/step_train_bpd", row["train_bpd"], row["step"])
            return
        for key in self._EPOCH_SCALARS:
            if row.get(key) is not None:
                writer.add_scalar(f"{row['phase']}/{key}", row[key], row["epoch"])
        writer.flush()  # an epoch's scalars survive a kill

    def _summary_writer(self):
        if self._writer is None and self.tensorboard is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self.tensorboard = None
                return None
            self._writer = SummaryWriter(str(self.tensorboard))
        return self._writer


class RunDir:
    """The folder of one run and the formats of its files (see the module's docstring).

    Args:
        path: the folder (it need not exist yet).

    Example:
        >>> import tempfile
        >>> run = RunDir(tempfile.mkdtemp())
        >>> with run.metrics_log() as log:
        ...     log.write({"phase": "vae", "epoch": 1, "train_bpd": 5.0})
        >>> run.history(), run.checkpoint_path("vae").name
        ([{'phase': 'vae', 'epoch': 1, 'train_bpd': 5.0}], 'vae.ckpt')
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # -- paths -----------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        """``config.json``."""
        return self.path / "config.json"

    @property
    def model_path(self) -> Path:
        """``model.pt``."""
        return self.path / "model.pt"

    @property
    def log_path(self) -> Path:
        """``metrics.jsonl``."""
        return self.path / "metrics.jsonl"

    @property
    def metrics_path(self) -> Path:
        """``metrics.json``."""
        return self.path / "metrics.json"

    @property
    def figures_dir(self) -> Path:
        """``figures/``."""
        return self.path / "figures"

    @property
    def sample_grid_path(self) -> Path:
        """``samples.png``, where ``pyro-vaeflow sample`` writes its grid by default."""
        return self.path / "samples.png"

    def checkpoint_path(self, phase: str) -> Path:
        """The checkpoint of phase ``phase``: ``<phase>.ckpt``."""
        return self.path / f"{phase}.ckpt"

    def figure_path(self, name: str) -> Path:
        """The figure ``name``: ``figures/<name>.png``."""
        return self.figures_dir / f"{name}.png"

    def lock(self):
        """A context manager that holds the run's lock (:mod:`pyro_vaeflow.lock`): one writer
        per run directory; another process gets a :class:`~pyro_vaeflow.lock.RunLockedError`
        naming the holder."""
        return hold_run_lock(self.path)

    # -- config.json -----------------------------------------------------------------------------

    def read_config(self) -> dict:
        """The run's ``config.json``; a clear error if there is none."""
        if not self.config_path.is_file():
            raise FileNotFoundError(
                f"{self.config_path} not found: is {self.path} a pyro-vaeflow run directory?"
            )
        try:
            return json.loads(self.config_path.read_text())
        except ValueError as error:
            raise ValueError(f"{self.config_path} is not valid JSON ({error})") from None

    def write_config(self, config: dict) -> None:
        """Write ``config.json`` (creating the folder)."""
        write_json(self.config_path, config)

    # -- checkpoints -----------------------------------------------------------------------------

    def has_checkpoints(self) -> bool:
        """Whether any phase has a checkpoint here (a run has begun)."""
        return any(self.path.glob("*.ckpt")) or any(self.path.glob("*.ckpt.prev"))

    def has_checkpoint(self, phase: str) -> bool:
        """Whether phase ``phase`` has a checkpoint here (or a previous one)."""
        path = self.checkpoint_path(phase)
        return path.is_file() or previous_path(path).is_file()

    def save_checkpoint(self, phase: str, payload: dict) -> Path:
        """Write the training checkpoint of ``phase`` atomically; it must read back before it
        replaces the previous one, which is kept (:func:`~pyro_vaeflow.checkpoint.save_checkpoint`
        with ``keep_previous``)."""
        return save_checkpoint(
            {"kind": "training", "phase": phase, **payload},
            self.checkpoint_path(phase),
            keep_previous=True,
        )

    def load_checkpoint(self, phase: str) -> dict:
        """The training checkpoint of ``phase``, or the previous one (with a warning naming the
        bad file) when the newest is truncated or corrupt; a clear error if neither is good."""
        payload = load_good_checkpoint(self.checkpoint_path(phase), kind="training")
        if payload.get("phase") != phase:
            raise ValueError(
                f"{self.checkpoint_path(phase)} is a {payload.get('phase')!r} checkpoint, "
                f"not {phase!r}"
            )
        return payload

    # -- metrics.jsonl ---------------------------------------------------------------------------

    def metrics_log(self) -> MetricsLog:
        """A :class:`MetricsLog` appending to this run's ``metrics.jsonl`` and TensorBoard."""
        return MetricsLog(self.log_path, self.path / "tensorboard")

    def _rows(self) -> list[dict]:
        if not self.log_path.is_file():
            return []
        rows = []
        for line in self.log_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut short by a stop
                continue
        return [row for row in rows if isinstance(row, dict)]

    def history(self) -> list[dict]:
        """The epoch rows, in order; an epoch logged twice (by a resumed run) counts once, with
        its last values."""
        latest: dict[tuple, dict] = {}
        for row in self._rows():
            if row.get("kind", "epoch") == "epoch":
                latest[(row["phase"], row["epoch"])] = row
        return list(latest.values())

    def steps(self) -> list[dict]:
        """The step rows (``"kind": "step"``), in order, each step once (its last values)."""
        latest: dict[tuple, dict] = {}
        for row in self._rows():
            if row.get("kind") == "step":
                latest[(row["phase"], row["step"])] = row
        return list(latest.values())

    # -- metrics.json ----------------------------------------------------------------------------

    def read_metrics(self) -> dict | None:
        """The evaluation in ``metrics.json``, ``None`` if there is none; a ``ValueError``
        naming the file if it is not a JSON object (it is left as it is)."""
        if not self.metrics_path.is_file():
            return None
        try:
            found = json.loads(self.metrics_path.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{self.metrics_path} is not valid JSON ({error}); move it aside to evaluate again"
            ) from None
        if not isinstance(found, dict):
            raise ValueError(
                f"{self.metrics_path} holds a {type(found).__name__}, not an evaluation (a JSON "
                "object); move it aside to evaluate again"
            )
        return found

    def write_metrics(self, metrics: dict) -> None:
        """Write ``metrics.json`` atomically."""
        write_json(self.metrics_path, metrics)
